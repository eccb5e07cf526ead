"""deploy/: the systemd unit, the polkit rule and sudoers file, the pm2 file, the Dockerfile, compose.

What can be checked here is checked with the real tools when they are installed (systemd-analyze,
visudo, node, a YAML parser) and skipped otherwise; the grants are compared with the commands the
shipped patterns actually run, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "remediator.service"
PATTERNS = tomllib.loads((REPO / "patterns" / "default.toml").read_text())
CONSOLE_SCRIPT = REPO / ".venv" / "bin" / "remediator"


def _need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.skip(f"{tool} is not installed here")
    return found


# -- what the shipped safe fixes run as a privileged user ------------------------------------------


def _restartable_units() -> set[str]:
    """Every unit a shipped pattern may restart with the default [settings]."""
    settings = PATTERNS["settings"]
    service = PATTERNS["patterns"]["restart_service"]["placeholders"]["service"]
    literal = {name for name in re.findall(r"[a-z0-9-]+(?=[|)])", service["validate"]) if name != "pm2-"}
    return literal | {settings["app_service"], settings["redis_unit"]}


def _disk_commands() -> list[list[str]]:
    """cleanup_disk's argvs with the default [settings] filled in."""
    settings = PATTERNS["settings"]
    return [[arg.format(**settings) for arg in argv] for argv in PATTERNS["patterns"]["cleanup_disk"]["action"]]


def _sudoers_commands() -> list[list[str]]:
    """The commands of deploy/remediator.sudoers as the argv they match (escapes removed)."""
    [rule] = [line for line in (DEPLOY / "remediator.sudoers").read_text().splitlines()
              if line and not line.startswith("#")]
    head, _, commands = rule.partition("NOPASSWD: ")
    assert head == "remediator ALL=(root) "
    return [re.sub(r"\\(.)", r"\1", command).split() for command in commands.split(", ")]


def test_sudoers_grants_exactly_the_shipped_commands():
    commands = _sudoers_commands()
    restarts = {argv[2] for argv in commands if argv[:2] == ["/usr/bin/systemctl", "restart"] and len(argv) == 3}
    assert restarts == _restartable_units()
    others = [argv for argv in commands if argv[0] != "/usr/bin/systemctl"]
    assert [[Path(argv[0]).name, *argv[1:]] for argv in others] == _disk_commands()
    assert len(commands) == len(restarts) + len(others)  # nothing else, e.g. no wildcard command


def test_sudoers_file_is_valid_sudoers():
    visudo = shutil.which("visudo") or next((p for p in ("/usr/sbin/visudo", "/sbin/visudo") if Path(p).exists()), None)
    if visudo is None:
        pytest.skip("visudo is not installed here")
    result = subprocess.run([visudo, "-c", "-f", str(DEPLOY / "remediator.sudoers")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_polkit_rule_allows_restarting_exactly_the_shipped_units():
    rules = (DEPLOY / "remediator.rules").read_text()
    listed = set(re.findall(r'"([a-z0-9@_-]+)\.service"', rules))
    assert listed == _restartable_units()

    node = _need("node")
    # Run the rule the way polkit does, with a stand-in for polkit's API.
    script = """
        const fs = require("fs");
        let rule;
        const polkit = {Result: {YES: "yes", NOT_HANDLED: "not handled"}, addRule: (f) => { rule = f; }};
        new Function("polkit", fs.readFileSync(process.argv[1], "utf8"))(polkit);
        const ask = (id, user, verb, unit) =>
            rule({id, lookup: (k) => ({verb, unit})[k]}, {user}) || "not handled";
        const m = "org.freedesktop.systemd1.manage-units";
        console.log(JSON.stringify([
            ask(m, "remediator", "restart", "redis-server.service"),
            ask(m, "remediator", "restart", "pm2-root.service"),
            ask(m, "remediator", "stop", "redis-server.service"),
            ask(m, "remediator", "restart", "sshd.service"),
            ask(m, "alice", "restart", "redis-server.service"),
            ask("org.freedesktop.systemd1.manage-unit-files", "remediator", "restart", "redis-server.service"),
        ]));
    """
    out = subprocess.run([node, "-e", script, str(DEPLOY / "remediator.rules")],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert json.loads(out) == ["yes", "yes"] + ["not handled"] * 4


# -- systemd --------------------------------------------------------------------------------------------


def _unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_is_hardened_and_writes_only_its_database_directory():
    unit = _unit_settings(UNIT.read_text())
    database = Path(next(v.split("=", 1)[1] for v in unit["Environment"] if v.startswith("DATABASE_PATH=")))
    assert unit["ReadWritePaths"] == [str(database.parent)]
    assert unit["StateDirectory"] == [database.parent.name]  # created for the service user at start
    assert unit["User"] == ["remediator"] and unit["ProtectSystem"] == ["strict"]
    assert unit["NoNewPrivileges"] == ["yes"] and unit["CapabilityBoundingSet"] == [""]
    assert unit["Restart"] == ["on-failure"] and unit["RestartPreventExitStatus"] == ["2"]
    assert unit["EnvironmentFile"] == ["/etc/remediator/remediator.env"]
    assert int(unit["LimitNOFILE"][0]) >= 2 * 256  # room for WEBHOOK_MAX_CONNECTIONS at half the limit
    # SIGTERM to the bot alone, and enough time for its 20 s grace for fixes plus draining.
    assert unit["KillMode"] == ["mixed"] and int(unit["TimeoutStopSec"][0]) >= 45
    assert "MemoryDenyWriteExecute" not in unit  # node's JIT (the npm fix) would crash
    assert unit["ExecStart"] == [f"{unit['WorkingDirectory'][0]}/.venv/bin/remediator run"]


def _unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's console script (verify checks it exists)."""
    if not CONSOLE_SCRIPT.exists():
        pytest.skip("no .venv/bin/remediator here (run scripts/bootstrap)")
    unit = tmp_path / "remediator.service"
    unit.write_text(UNIT.read_text().replace("/opt/remediator/.venv/bin/remediator", str(CONSOLE_SCRIPT)))
    return unit


def test_systemd_analyze_verifies_the_unit_and_its_fixes_drop_in(tmp_path: Path):
    analyze = _need("systemd-analyze")
    unit = _unit_here(tmp_path)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

    dropins = tmp_path / "remediator.service.d"
    dropins.mkdir()
    shutil.copy(DEPLOY / "remediator-fixes.conf", dropins / "fixes.conf")
    env = {"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([analyze, "verify", "remediator.service"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_exposure_score(tmp_path: Path, capsys):
    analyze = _need("systemd-analyze")
    unit = _unit_here(tmp_path)
    result = subprocess.run([analyze, "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout + result.stderr)
    if found is None:
        pytest.skip(f"this systemd-analyze cannot score a unit file offline: {result.stderr.strip()[:200]}")
    with capsys.disabled():
        print(f"\nsystemd-analyze security: exposure {found.group(1)} (0 = locked down, 10 = unprotected)")
    assert float(found.group(1)) <= 2.0


# -- pm2 ----------------------------------------------------------------------------------------------


def test_pm2_ecosystem_runs_the_console_script_once(tmp_path: Path):
    node = _need("node")
    out = subprocess.run(
        [node, "-e", "console.log(JSON.stringify(require(process.argv[1])))", str(DEPLOY / "ecosystem.config.js")],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    [app] = json.loads(out)["apps"]
    assert app["cwd"] == str(REPO)  # so the repository's .env is read
    assert app["script"] == str(CONSOLE_SCRIPT) and app["args"] == "run"
    assert app["interpreter"] == "none"  # a Python console script: not to be run by node
    assert app["instances"] == 1 and app["exec_mode"] == "fork"
    assert app["stop_exit_codes"] == [2] and app["kill_timeout"] >= 45000


# -- Docker ---------------------------------------------------------------------------------------------


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in joined.splitlines() if line.strip()]


def _exec_form(arguments: str) -> list[str]:
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


def test_dockerfile_builds_from_files_that_exist_and_runs_the_console_script_as_non_root():
    steps = _instructions((DEPLOY / "Dockerfile").read_text())
    names = [name for name, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")

    copied: list[str] = []
    for name, arguments in steps:
        if name == "COPY":
            *sources, _target = shlex.split(arguments)
            copied += sources
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: no such file in the build context (the repository)"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {include.rstrip("*") for include in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", project["project"]["readme"]} <= set(copied)  # what `pip install .` needs
    assert any(name == "RUN" and re.search(r"\bpip install\b.* \.(\s|$)", arguments) for name, arguments in steps)

    user = [arguments for name, arguments in steps if name == "USER"]
    assert user and user[-1] not in ("root", "0") and names.index("USER") < names.index("ENTRYPOINT")
    env = " ".join(arguments for name, arguments in steps if name == "ENV")
    database = Path(re.search(r"DATABASE_PATH=(\S+)", env).group(1))
    volumes = [v for name, arguments in steps if name == "VOLUME" for v in _exec_form(arguments)]
    assert str(database.parent) in volumes

    entrypoint = _exec_form(dict(steps)["ENTRYPOINT"])
    command = _exec_form(dict(steps)["CMD"])
    assert entrypoint[0] in project["project"]["scripts"]  # installed on the PATH by `pip install .`
    assert command == ["run"]
    from bot.cli import build_parser

    assert build_parser().parse_args(command).command == "run"


# -- compose --------------------------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    """Parsed with PyYAML: in this interpreter, or a python3 on the PATH that has it; else skip."""
    try:
        import yaml
    except ImportError:
        for python in filter(None, (shutil.which("python3"), shutil.which("python"))):
            result = subprocess.run(
                [python, "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
                 str(path)], capture_output=True, text=True, timeout=30,
            )
            if result.returncode == 0:
                return json.loads(result.stdout)
        pytest.skip("no YAML parser here (PyYAML)")
    return yaml.safe_load(path.read_text())


def test_compose_runs_the_bot_next_to_glitchtip():
    compose = _load_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web", "worker", "remediator"} == set(services)
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on an unknown service {needed}"
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], f"{name}: undeclared volume {volume}"
    assert services["worker"]["command"] == "./bin/run-celery-with-beat.sh"
    assert services["migrate"]["command"] == "./bin/run-migrate.sh"

    bot = services["remediator"]
    build = DEPLOY / bot["build"]["context"]
    assert (build / bot["build"]["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
    assert (build / "pyproject.toml").exists()
    assert bot["env_file"] == ["../.env"]  # the repository's .env, as made during the setup
    env = bot["environment"]
    assert env["GLITCHTIP_URL"] == f"http://web:{services['web']['environment']['PORT']}"  # by service name
    assert [v.split(":")[1] for v in bot["volumes"]] == [str(Path(env["DATABASE_PATH"]).parent)]
    assert env["WEBHOOK_HOST"] == "0.0.0.0" and "ports" not in bot  # reachable on the network, not published
    assert int(bot["stop_grace_period"].rstrip("s")) >= 45


def test_the_console_script_exists_as_the_deploy_files_call_it():
    """Every deploy file starts `remediator run`: the console script pyproject.toml declares."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["remediator"] == "bot.cli:main"
    if not CONSOLE_SCRIPT.exists():
        pytest.skip("no .venv here")
    result = subprocess.run([str(CONSOLE_SCRIPT), "run", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "run" in result.stdout
