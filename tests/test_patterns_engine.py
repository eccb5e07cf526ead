"""The allow-list loader refuses bad files loudly and the matcher does what the file says."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bot.ingest.loose import alerts_from_text
from bot.models import Alert, AlertKind, Category
from patterns import PatternError, PatternSet, cli, load_patterns
from patterns.engine import render

DATA = Path(__file__).parent / "data"
REQUIRED_IDS = {"restart_redis", "restart_service", "npm_install_missing", "pip_install_missing", "cleanup_disk"}


def alert(title: str, stacktrace: str = "", **fields: str) -> Alert:
    return Alert(source="generic", kind=AlertKind.ERROR, title=title, fingerprint="t", stacktrace=stacktrace,
                 **fields)  # type: ignore[arg-type]


def write(tmp_path: Path, body: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


GOOD = """
[settings]
unit = "redis-server"

[patterns.fix_it]
description = "restart it"
category = "infrastructure"
match = {any = ['''boom on port (?P<port>\\d+)''', '''kaboom''']}
exclude = ['''not really''']
action = ["systemctl", "restart", "{unit}"]
verify = ["redis-cli", "-p", "{port}", "ping"]

[patterns.fix_it.placeholders.port]
from = "port"
default = "6379"
validate = '^[0-9]{2,5}$'
"""


# -- the packaged default ------------------------------------------------------------------


def test_default_file_loads_and_ships_the_required_patterns() -> None:
    pset = load_patterns()
    assert {p.id for p in pset} >= REQUIRED_IDS
    assert PatternSet.check_file(None) == []
    for p in pset:
        assert p.has_action and p.category.value in {"infrastructure", "transient", "resource", "dependency"}
    retry = pset.get("retry_transient")
    assert retry is None or not retry.has_action


def test_default_actions_are_argv_lists_and_summary_reads_well() -> None:
    m = load_patterns().match(alert("Error: connect ECONNREFUSED 127.0.0.1:6379"))
    assert m is not None and m.runnable
    assert m.argv == [["systemctl", "restart", "redis-server"]]
    assert m.verify == ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"]
    assert m.summary() == "restart_redis — `systemctl restart redis-server` — 1 approval"


# -- refusals at load ----------------------------------------------------------------------


@pytest.mark.parametrize("category", ["code", "configuration", "database", "security"])
def test_action_on_a_non_actionable_category_is_refused_naming_the_pattern(tmp_path: Path, category: str) -> None:
    path = write(tmp_path, f"""
        [patterns.rotate_secret]
        description = "x"
        category = "{category}"
        match = ['boom']
        action = ["true"]
    """)
    with pytest.raises(PatternError) as info:
        load_patterns(path)
    (problem,) = info.value.problems
    assert "patterns.rotate_secret.action" in problem and "may not carry an action" in problem
    assert category in problem and str(path) in problem


def test_non_actionable_category_without_action_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [patterns.doc_only]
        description = "documented, never proposed"
        category = "security"
        match = ['boom']
    """)
    pset = load_patterns(path)
    assert len(pset) == 1 and pset.match(alert("boom")) is None


def test_check_file_lists_every_problem_at_once_with_where(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [patterns.a]
        description = "bad regex"
        category = "infrastructure"
        match = {any = ['(unclosed']}
        action = ["true"]

        [patterns.b]
        description = "unknown key"
        category = "infrastructure"
        match = ['x']
        acton = ["true"]

        [patterns.c]
        description = "undefined placeholder"
        category = "dependency"
        match = ['x']
        action = ["npm", "install", "{package}"]

        [patterns.d]
        description = "shell string"
        category = "resource"
        match = ['x']
        action = "rm -rf /tmp/cache && systemctl restart app"

        [patterns.e]
        description = "shell in disguise"
        category = "resource"
        match = ['x']
        action = [["sudo", "bash", "-c", "echo hi"]]

        [patterns.f]
        description = "placeholder from text chooses the program"
        category = "dependency"
        match = ['run (?P<prog>\\w+)']
        action = ["{prog}", "--version"]
        [patterns.f.placeholders.prog]
        from = "prog"
        validate = '^\\w+$'

        [patterns.g]
        description = "text value without validation, from a group that does not exist"
        category = "dependency"
        match = ['x']
        action = ["pip", "install", "{pkg}"]
        [patterns.g.placeholders.pkg]
        from = "nope"

        [patterns.h]
        category = "weather"
        match = ['x']
        timeout = -1
        approvals_required = true
    """)
    problems = PatternSet.check_file(path)
    text = "\n".join(problems)
    expected = [
        ("patterns.a.match.any[0]", "invalid regex"),
        ("patterns.b.acton", "unknown key"),
        ("patterns.c.action", "{package} is not defined"),
        ("patterns.d.action", "shell string is refused"),
        ("patterns.e.action[0]", "runs a shell"),
        ("patterns.f.action", "may not choose the program"),
        ("patterns.g.placeholders.pkg.from", "not a named group"),
        ("patterns.g.placeholders.pkg.validate", "required"),
        ("patterns.h.description", "required"),
        ("patterns.h.category", "'weather' is not one of 'infrastructure'"),
        ("patterns.h.timeout", "between"),
        ("patterns.h.approvals_required", "integer"),
    ]
    for where, what in expected:
        assert any(where in p and what in p for p in problems), f"missing {where}: {what}\n{text}"
    assert all(p.startswith(f"{path}: ") for p in problems)
    assert "did you mean 'action'" in text
    with pytest.raises(PatternError) as info:
        load_patterns(path)
    assert info.value.problems == problems


@pytest.mark.parametrize(
    "body, where",
    [
        ("this is = = not toml", "invalid TOML"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['x']\naction=[]\n", "patterns.x.action"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['x']\naction=[['a'], 'b']\n",
         "patterns.x.action"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['x']\naction=['sh', '-c', 'id']\n",
         "runs a shell"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['x']\naction=['echo', '{oops']\n",
         "unbalanced brace"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['x']\naction=['a']\nenv={LD_PRELOAD='x'}\n",
         "patterns.x.env.LD_PRELOAD"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['x']\naction=['a']\nmax_runs=2\n",
         "patterns.x.window"),
        ("[patterns.X]\ndescription='d'\ncategory='resource'\nmatch=['x']\n", "pattern id"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch={all=[]}\n", "at least one regex"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['x']\nverify=['true']\n", "needs an action"),
        ("[settings]\nsh='bash'\n[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['x']\naction=['{sh}']\n",
         "runs a shell"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['(?P<v>x)']\naction=['a', '{v}']\n"
         "[patterns.x.placeholders.v]\nfrom='v'\nvalidate='^[a-z]$'\ndefault='ZZ'\n",
         "patterns.x.placeholders.v.default: 'ZZ' does not match this placeholder's validate regex"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['(?P<v>x)']\naction=['a']\ncwd='{v}'\n"
         "[patterns.x.placeholders.v]\nfrom='v'\nvalidate='^[a-z]$'\n", "working directory"),
        ("unknown_top = 1\n", "unknown key"),
        # regexes that backtrack catastrophically, refused by the same check as the triage rules'
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['(a+)+b']\naction=['a']\n",
         "patterns.x.match.any[0]: nested quantifier"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['x']\nexclude=['(\\w*)*y']\naction=['a']\n",
         "patterns.x.exclude[0]: nested quantifier"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['(?P<v>x)']\naction=['a', '{v}']\n"
         "[patterns.x.placeholders.v]\nfrom='v'\nvalidate='^(?:[a-z]+)+$'\n", "v.validate: nested quantifier"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch={all=['(?:x|\\w+)*!']}\naction=['a']\n",
         "patterns.x.match.all[0]: alternatives that can match the same text"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['(ab|ab)*c']\naction=['a']\n",
         "patterns.x.match.any[0]: alternatives that can match the same text"),
        # unknown keys are named at every level, with the key that was probably meant
        ("[patterns.x]\ndescription='d'\ncategory='dependency'\nmatch=['(?P<v>x)']\naction=['a', '{v}']\n"
         "[patterns.x.placeholders.v]\nfrom='v'\nvalidat='^x$'\n",
         "patterns.x.placeholders.v.validat: unknown key (did you mean 'validate'?)"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch={any=['x'], inn=['title']}\n",
         "patterns.x.match.inn: unknown key (did you mean 'in'?)"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch={any=['x'], in=['body']}\n",
         "patterns.x.match.in[0]: 'body' is not one of 'title', 'message' or 'stacktrace'"),
        ("[settings]\nunit=['a']\n[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['x']\n",
         "settings.unit: must be a string (or a number)"),
        # grammars: a known name, and fixed values that obey it
        ("[patterns.x]\ndescription='d'\ncategory='dependency'\nmatch=['(?P<v>x)']\naction=['a', '{v}']\n"
         "[patterns.x.placeholders.v]\nfrom='v'\nvalidate='^.+$'\ngrammar='cargo-crate'\n",
         "patterns.x.placeholders.v.grammar"),
        ("[patterns.x]\ndescription='d'\ncategory='dependency'\nmatch=['(?P<v>x)']\naction=['pip', 'install', '{v}']\n"
         "[patterns.x.placeholders.v]\nfrom='v'\nvalidate='^.+$'\ngrammar='pypi-distribution'\n"
         "map={x='evil.zip'}\n", "patterns.x.placeholders.v.map.x"),
        ("[patterns.x]\ndescription='d'\ncategory='dependency'\nmatch=['(?P<v>x)']\naction=['npm', 'i', '{v}']\n"
         "[patterns.x.placeholders.v]\nfrom='v'\nvalidate='^.+$'\ngrammar='npm-package'\ndefault='evil.tgz'\n",
         "tarball"),
        # precheck: one argv, next to an action, no shell, and text may not choose its program
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['x']\nprecheck=['true']\n", "needs an action"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['x']\naction=['a']\nprecheck='test -d /x'\n",
         "patterns.x.precheck: a shell string is refused"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['x']\naction=['a']\nprecheck=['bash', '-c', 'x']\n",
         "patterns.x.precheck: runs a shell"),
        ("[patterns.x]\ndescription='d'\ncategory='resource'\nmatch=['(?P<v>x)']\naction=['a']\nprecheck=['{v}']\n"
         "[patterns.x.placeholders.v]\nfrom='v'\nvalidate='^[a-z]$'\n", "patterns.x.precheck: placeholder {v}"),
    ],
)
def test_each_kind_of_mistake_is_reported(tmp_path: Path, body: str, where: str) -> None:
    problems = PatternSet.check_file(write(tmp_path, body))
    assert problems and any(where in p for p in problems), problems


def test_problems_between_keys_of_one_pattern_are_all_reported(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [patterns.fix_code]
        description = "a code bug fixed by a command"
        category = "code"
        match = ['TypeError']
        action = ["python3", "-m", "{module}"]
        precheck = ["test", "-d", "{dir}"]
        verify = ["true"]
        max_runs = 2
    """)
    problems = [p.removeprefix(f"{path}: ") for p in PatternSet.check_file(path)]
    assert problems == [
        "patterns.fix_code.action: category 'code' may not carry an action (only dependency, infrastructure, "
        "resource, transient may): such errors need a human fix, not an automatic one",
        "patterns.fix_code.window: required with max_runs: the window in seconds",
        "patterns.fix_code.action: placeholder {module} is not defined: add [placeholders.module] to this "
        "pattern or a [settings] key 'module'",
        "patterns.fix_code.precheck: placeholder {dir} is not defined: add [placeholders.dir] to this pattern "
        "or a [settings] key 'dir'",
    ]


def test_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    problems = PatternSet.check_file(tmp_path / "absent.toml")
    assert len(problems) == 1 and "cannot read" in problems[0]


# -- matching ------------------------------------------------------------------------------


def test_any_all_exclude_and_captures(tmp_path: Path) -> None:
    pset = load_patterns(write(tmp_path, GOOD))
    m = pset.match(alert("boom on port 6380"))
    assert m is not None and m.values["port"] == "6380" and m.verify == ["redis-cli", "-p", "6380", "ping"]
    m = pset.match(alert("kaboom"))
    assert m is not None and m.values["port"] == "6379"  # default when the group did not capture
    assert pset.match(alert("kaboom", "not really")) is None  # exclude
    assert pset.match(alert("nothing here")) is None


def test_all_requires_every_regex_and_in_restricts_fields(tmp_path: Path) -> None:
    pset = load_patterns(write(tmp_path, """
        [patterns.both]
        description = "d"
        category = "transient"
        match = {all = ['alpha', 'beta'], in = ["title"]}
        action = ["true"]
    """))
    assert pset.match(alert("alpha beta")) is not None
    assert pset.match(alert("alpha")) is None
    assert pset.match(alert("alpha", stacktrace="beta")) is None  # stacktrace not searched


def test_conditions_and_categories(tmp_path: Path) -> None:
    pset = load_patterns(write(tmp_path, """
        [patterns.scoped]
        description = "d"
        category = "infrastructure"
        match = ['boom']
        projects = ["api"]
        environments = ["production"]
        categories = ["infrastructure", "transient"]
        action = ["true"]
    """))
    ok = alert("boom", project="api", environment="production")
    assert pset.match(ok) is not None
    assert pset.match(ok, Category.INFRASTRUCTURE) is not None
    assert pset.match(ok, "configuration") is None
    assert pset.match(alert("boom", project="web", environment="production")) is None
    assert pset.match(alert("boom", project="api")) is None  # unknown environment fails


def test_first_pattern_in_file_order_wins_and_disabled_or_actionless_are_skipped(tmp_path: Path) -> None:
    pset = load_patterns(write(tmp_path, """
        [patterns.off]
        description = "d"
        category = "resource"
        match = ['boom']
        enabled = false
        action = ["false"]

        [patterns.doc]
        description = "d"
        category = "transient"
        match = ['boom']

        [patterns.first]
        description = "d"
        category = "resource"
        match = ['boom']
        action = ["echo", "first"]

        [patterns.second]
        description = "d"
        category = "resource"
        match = ['boom']
        action = ["echo", "second"]
    """))
    m = pset.match(alert("boom"))
    assert m is not None and m.pattern.id == "first"


def test_placeholder_sources_map_and_settings_override(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [settings]
        app_dir = "/srv/app"

        [patterns.svc]
        description = "d"
        category = "infrastructure"
        match = ['down on (?P<port>\\d+)', 'host wedged']
        action = [["systemctl", "restart", "{service}"], ["logger", "{server}"]]
        cwd = "{app_dir}"
        env = {APP_DIR = "{app_dir}"}
        approvals_required = 2

        [patterns.svc.placeholders.service]
        from = "port"
        default = "pm2-app"
        validate = '^(?:postgresql|mongod|pm2-app)$'
        map = {"5432" = "postgresql", "27017" = "mongod"}

        [patterns.svc.placeholders.server]
        alert = "server"
        default = "unknown"
        validate = '^[a-z0-9-]+$'
    """)
    pset = load_patterns(path, settings={"app_dir": "/opt/app"}, hosts=["web-1"])
    m = pset.match(alert("down on 5432", server="web-1"))
    assert m is not None
    assert m.argv == [["systemctl", "restart", "postgresql"], ["logger", "web-1"]]
    assert m.cwd == "/opt/app" and m.env == {"APP_DIR": "/opt/app"}
    assert "2 approvals" in m.summary() and " then " in m.summary()
    m = pset.match(alert("host wedged"))
    assert m is not None and m.argv[0] == ["systemctl", "restart", "pm2-app"] and m.argv[1] == ["logger", "unknown"]
    # a port that is not in the map is the value itself, and fails validation: refused
    assert pset.match(alert("down on 5433")) is None
    refused = pset.evaluate(alert("down on 5433"))
    assert refused is not None and not refused.runnable and refused.argv == []
    assert "5433" in (refused.refused or "") and "refused" in refused.summary()


def test_the_default_file_passes_the_same_regex_check_as_the_triage_rules() -> None:
    from bot.regex_safety import regex_problem
    from bot.triage import RuleSet

    regexes = [rx for p in load_patterns() for rx in (*p.match_any, *p.match_all, *p.exclude)]
    regexes += [ph.validate for p in load_patterns() for ph in p.placeholders.values() if ph.validate is not None]
    regexes += [rx for r in RuleSet.load().rules for rx in (*r.match, *r.require, *r.exclude)]
    assert len(regexes) > 800
    assert [rx.pattern for rx in regexes if regex_problem(rx.pattern, rx.flags)] == []


def test_precheck_is_rendered_and_shown_in_the_summary() -> None:
    m = load_patterns(settings={"python": "/usr/bin/python3", "disk_min_free": "5"}).match(
        alert("OSError: [Errno 28] No space left on device"))
    assert m is not None and m.pattern.id == "cleanup_disk"
    assert m.precheck is not None and m.precheck[0] == "/usr/bin/python3" and m.precheck[-3:] == ["5", "/", "/var/log"]
    assert "only if its precheck passes" in m.summary()


def test_render_is_one_pass_and_keeps_literal_braces() -> None:
    assert render("{a}-{{b}}", {"a": "{b}", "b": "x"}) == "{b}-{b}"


def test_rate_limit_reason() -> None:
    p = load_patterns().get("restart_redis")
    assert p is not None and p.cooldown == 600 and p.max_runs == 3 and p.window == 3600
    assert p.rate_limit_reason([], now=10_000) is None
    assert "cooldown" in (p.rate_limit_reason([9_900], now=10_000) or "")
    assert p.rate_limit_reason([8_000], now=10_000) is None
    assert "max 3" in (p.rate_limit_reason([7_000, 8_000, 9_000], now=10_000) or "")
    assert p.recurrence_window == 900


# -- CLI -----------------------------------------------------------------------------------


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.check_command(None) == 0
    assert "OK: 5 pattern(s)" in capsys.readouterr().out
    bad = write(tmp_path, "[patterns.x]\ncategory='code'\nmatch=['(']\naction='reboot'\n")
    assert cli.check_command(bad) == 1
    out = capsys.readouterr().out
    assert "patterns.x.description" in out and "patterns.x.match.any[0]" in out and "shell string" in out


def test_test_command_json_on_corpus_glitchtip_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    webhook = (DATA / "glitchtip" / "issue_alert_v1.json").read_text()
    inputs = [webhook, "Error: Cannot find module 'express'\nRequire stack:\n- /srv/app/server.js",
              json.dumps({"title": "ModuleNotFoundError: No module named 'yaml'", "project": "api"})]
    assert cli.test_command(inputs, DATA / "corpus.jsonl", True, hosts=["web-1"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 3 + sum(1 for _ in (DATA / "corpus.jsonl").open())
    assert set(records[0]) == {"input", "pattern", "argv", "verify", "precheck", "refused"}
    assert records[0]["pattern"] == "restart_redis"  # the GlitchTip alert came from web-1, a FIX_HOSTS name
    assert records[1]["argv"] == [["npm", "install", "--no-save", "--no-audit", "--no-fund", "express"]]
    assert records[2]["argv"][0][-1] == "PyYAML"
    by_id = {r["id"]: r for r in records if "id" in r}
    assert by_id["node-dep-004"]["pattern"] is None and by_id["py-pg-001"]["pattern"] == "restart_service"


def test_test_command_text_output_and_glitchtip_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.test_command(["OSError: [Errno 28] No space left on device"], None, False) == 0
    out = capsys.readouterr().out
    assert "cleanup_disk" in out and "step 1: journalctl" in out
    [a] = alerts_from_text((DATA / "glitchtip" / "issue_alert_v1.json").read_text())
    assert (a.source, a.project, a.environment, a.server) == ("glitchtip", "ai-admin-worker", "production", "web-1")
    assert a.message == "processBookingQueue(worker/queue)"
    assert cli.test_command(None, None, False) == 2
