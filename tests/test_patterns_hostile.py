"""Hostile error text never reaches an argv: the placeholder is refused and nothing runs.

Error messages are partly written by whoever sends requests to the app, so anything in
them may be an attack: shell syntax, option injection, path traversal, newlines.
"""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.models import Alert, AlertKind
from patterns import PatternRunner, PatternSet, load_patterns
from patterns.engine import npm_package_refusal, pypi_distribution_refusal

HOSTILE = [
    "; rm -rf /",
    "x; rm -rf /",
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "express\ntouch /tmp/pwned",
    "express\r\n--registry=http://evil",
    "--registry=http://evil",
    "-e git+https://evil.example/x.git",
    "../../x",
    "./x",
    "/etc/passwd",
    "~/x",
    "express@http://evil",
    "a|b",
    "a&&b",
    "pkg>out",
    "name with space",
    "${IFS}x",
    "x\x00y",
    "git+ssh://evil/x",
    "psycopg2==2.9; touch /tmp/pwned",
]

SHELL_CHARS = set(";|&$`<>\n\r\x00 ")


def alert(title: str, stacktrace: str = "", **fields: str) -> Alert:
    return Alert(source="generic", kind=AlertKind.ERROR, title=title, fingerprint="h", stacktrace=stacktrace,
                 **fields)  # type: ignore[arg-type]


@pytest.fixture
def loose(tmp_path: Path) -> tuple[PatternSet, Path]:
    """A deliberately loose capture ('anything between quotes') behind a strict validation,
    and an action that would create a marker file if it ever ran."""
    marker = tmp_path / "marker"
    path = tmp_path / "loose.toml"
    path.write_text(textwrap.dedent("""
        [patterns.install_anything]
        description = "captures anything; only validation stands in the way"
        category = "dependency"
        match = {any = ['''Cannot find module '(?P<pkg>[^']*)' ''', '''host (?P<host>.*)$''']}
        action = ["{py}", "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", "{marker}", "{pkg}"]

        [patterns.install_anything.placeholders.pkg]
        from = "pkg"
        default = "ok"
        validate = '^(?:@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*$'

        [patterns.permissive]
        description = "a careless validation regex: the built-in floor still refuses"
        category = "dependency"
        match = ['''No module named '(?P<mod>[^']*)' ''']
        action = ["{py}", "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", "{marker}", "{mod}"]

        [patterns.permissive.placeholders.mod]
        from = "mod"
        validate = '(?s).+'

        [patterns.from_alert]
        description = "a value from an alert field"
        category = "infrastructure"
        match = ['^restart on server$']
        action = ["{py}", "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", "{marker}", "{srv}"]

        [patterns.from_alert.placeholders.srv]
        alert = "server"
        validate = '^[a-z0-9-]+$'
    """), encoding="utf-8")
    return load_patterns(path, settings={"py": sys.executable, "marker": str(marker)}), marker


@pytest.mark.parametrize("value", HOSTILE)
async def test_loose_capture_is_refused_and_nothing_runs(loose: tuple[PatternSet, Path], value: str) -> None:
    pset, marker = loose
    a = alert(f"Error: Cannot find module '{value}' ")
    assert pset.match(a) is None
    explained = pset.evaluate(a)
    assert explained is not None and not explained.runnable and explained.argv == []
    assert "{pkg} refused" in (explained.refused or "")
    result = await PatternRunner().run(explained)
    assert not result.ok and result.steps == []
    assert not marker.exists()


@pytest.mark.parametrize("value", HOSTILE)
async def test_builtin_floor_refuses_even_with_a_permissive_validate(loose: tuple[PatternSet, Path],
                                                                     value: str) -> None:
    pset, marker = loose
    a = alert(f"ModuleNotFoundError: No module named '{value}' ")
    assert pset.match(a) is None, value
    explained = pset.evaluate(a)
    assert explained is not None and explained.argv == [] and "{mod} refused" in (explained.refused or "")
    assert not marker.exists()


@pytest.mark.parametrize("value", ["web-1; rm -rf /", "$(id)", "--help", "web 1", "../web"])
async def test_hostile_alert_fields_are_refused(loose: tuple[PatternSet, Path], value: str) -> None:
    pset, marker = loose
    assert pset.match(alert("restart on server", server=value)) is None
    assert not marker.exists()


async def test_positive_control_a_clean_value_does_run(loose: tuple[PatternSet, Path]) -> None:
    """Proves the marker would appear if a hostile value got through."""
    pset, marker = loose
    m = pset.match(alert("Error: Cannot find module '@scope/clean-name' "))
    assert m is not None and m.values["pkg"] == "@scope/clean-name"
    result = await PatternRunner().run(m)
    assert result.ok and marker.read_text() == "@scope/clean-name"


@pytest.mark.parametrize("value", HOSTILE)
def test_default_patterns_never_put_hostile_text_in_argv(value: str) -> None:
    pset = load_patterns()
    texts = [
        f"Error: Cannot find module '{value}'",
        f"Error [ERR_MODULE_NOT_FOUND]: Cannot find package '{value}' imported from /srv/app/x.js",
        f"Error: Cannot find module '{value}'\nRequire stack:\n- /srv/app/node_modules/evil/index.js",
        f"ModuleNotFoundError: No module named '{value}'",
        f"ImportError: No module named {value}",
        f"Error 111 connecting to localhost:{value}. Connection refused.",
        f"connection to server at \"localhost\" (127.0.0.1), port {value} failed: Connection refused",
        f"OSError: [Errno 28] No space left on device: '{value}'",
    ]
    for text in texts:
        m = pset.match(alert(text))
        if m is None:
            continue
        for placeholder_value in m.values.values():
            assert not set(placeholder_value) & SHELL_CHARS, (text, m.values)
        for step in [*m.argv, *([m.verify] if m.verify else [])]:
            assert all(value not in arg for arg in step), (text, step)


def test_hostile_npm_and_pip_names_in_default_file_are_refused_or_ignored() -> None:
    pset = load_patterns()
    for text in ("Error: Cannot find module '--registry=http://evil'",
                 "Error: Cannot find module '../../x'",
                 "ModuleNotFoundError: No module named '-e git+https://evil/x'",
                 "ModuleNotFoundError: No module named 'x; rm -rf /'",
                 "ImportError: No module named x; rm -rf /",
                 "Error: Cannot find module '$(touch /tmp/x)'",
                 "Error: Cannot find module '`id`'"):
        assert pset.match(alert(text)) is None, text


# -- package names by the registries' own rules ---------------------------------------------

NPM_NOT_A_REGISTRY_NAME = [
    "evil.tgz", "evil.tar.gz", "evil.tar", "@scope/evil.tgz",  # npm installs these files from app_dir
    "Express", "EXPRESS",  # uppercase: not a valid new npm name
    ".hidden", "_private", "-x",  # leading . _ or an option
    "github:user/repo", "git+ssh://git@host/x.git", "user/repo", "npm:lodash", "file:x", "http://evil/x.tgz",
    "express@4", "@scope/name@1.0.0", "@scope", "@/x", "a b", "x" * 215,
    "node_modules", "favicon.ico",  # reserved by npm
    "fs", "http", "child_process", "worker_threads",  # Node core modules: never from npm
]
NPM_REGISTRY_NAMES = ["express", "lodash.merge", "@babel/core", "@types/node", "socket.io", "left-pad", "x" * 214,
                      "jquery-ui", "a1", "node-fetch", "buffer-from"]


@pytest.mark.parametrize("name", NPM_NOT_A_REGISTRY_NAME)
def test_npm_grammar_refuses_what_npm_would_not_fetch_from_the_registry(name: str) -> None:
    assert npm_package_refusal(name) is not None


@pytest.mark.parametrize("name", NPM_REGISTRY_NAMES)
def test_npm_grammar_accepts_registry_names(name: str) -> None:
    assert npm_package_refusal(name) is None


PYPI_NOT_A_PROJECT_NAME = [
    "evil.zip", "evil.whl", "evil.tar.gz", "Evil.TGZ", "x.tar.bz2",  # pip installs these files
    "requests==2.31", "requests>=2", "requests[socks]", "-r", "--index-url", "-e", "git+https://x/y.git",
    "https://evil/x", "../x", "./x", "/x", "a/b", "x-", "_x", ".x", "x.", "a b", "",
]
PYPI_PROJECT_NAMES = ["requests", "PyYAML", "python-dateutil", "discord.py", "zope.interface", "psycopg2-binary",
                      "a", "scikit_learn", "Django"]


@pytest.mark.parametrize("name", PYPI_NOT_A_PROJECT_NAME)
def test_pypi_grammar_refuses_anything_but_a_project_name(name: str) -> None:
    assert pypi_distribution_refusal(name) is not None


@pytest.mark.parametrize("name", PYPI_PROJECT_NAMES)
def test_pypi_grammar_accepts_project_names(name: str) -> None:
    assert pypi_distribution_refusal(name) is None


@pytest.mark.parametrize("text", [
    "Error: Cannot find module 'evil.tgz'",
    "Error [ERR_MODULE_NOT_FOUND]: Cannot find package 'evil.tar.gz' imported from /srv/app/index.js",
    "Error: Cannot find module 'evil.tar'",
    "Error: Cannot find module '/srv/app/node_modules/evil.tgz/index.js'",
    "Error: Cannot find module './lib/x'\nRequire stack:\n- /srv/app/node_modules/evil.tgz/index.js",
    "Error: Cannot find module '/srv/app/node_modules/fs/index.js'",
    "Error: Cannot find module '/srv/app/node_modules/node_modules/x.js'",
])
def test_default_npm_fix_never_installs_a_local_tarball_or_a_core_module(text: str) -> None:
    pset = load_patterns()
    assert pset.match(alert(text)) is None
    found = pset.evaluate(alert(text))
    assert found is None or not found.runnable


def test_a_tarball_in_the_app_dir_is_never_proposed(tmp_path: Path) -> None:
    """`npm install evil.tgz` in app_dir installs that file and runs its preinstall (reproduced
    with npm 10, --offline): the npm fix must not be proposed for it at all."""
    pset = load_patterns(settings={"app_dir": str(tmp_path)})
    for text in ("Error: Cannot find module 'evil.tgz'",
                 "Error: Cannot find module './x'\nRequire stack:\n- /srv/app/node_modules/evil.tgz/a.js"):
        assert pset.match(alert(text)) is None
    clean = pset.match(alert("Error: Cannot find module 'express'"))
    assert clean is not None and clean.argv[0][-1] == "express" and clean.cwd == str(tmp_path)


def test_pip_fix_names_only_pypi_projects() -> None:
    pset = load_patterns()
    m = pset.match(alert("ModuleNotFoundError: No module named 'yaml'"))
    assert m is not None and m.argv[0][-1] == "PyYAML"
    assert pset.get("pip_install_missing").placeholders["package"].grammar == "pypi-distribution"  # type: ignore[union-attr]
    assert pset.get("npm_install_missing").placeholders["package"].grammar == "npm-package"  # type: ignore[union-attr]


# -- matching cost on hostile text ------------------------------------------------------------

# One line repeating the start of the npm "Require stack" regex: an unbounded [^\n]*? rescanned
# the rest of the line from every repeat (about 1 s per 64 KB before the repeats were bounded).
REQUIRE_STACK_BOMB = "Cannot find module './x'Require stack:- "
CRAFTED = {
    "require-stack bomb": REQUIRE_STACK_BOMB,
    "require-stack with node_modules near misses": REQUIRE_STACK_BOMB + "/node_modules/A",
    "unclosed module quotes": "Cannot find module './",
    "node_modules in quotes": "Cannot find module 'x/node_modules/",
    "pip": "ModuleNotFoundError: No module named ",
    "postgres socket": 'Is the server running locally and accepting connections on Unix domain socket "',
    "compose prefix": "app-1 | ",
    "digits": "1",
}


def best_time(func: Callable[[], object], bound: float, runs: int = 3) -> float:
    """The fastest of up to a few runs: the cost of the work itself, not of a busy machine.

    Stops at the first run under `bound`: the fastest of all would be under it too, so the
    verdict is the one all the runs would give, without paying for runs that cannot change it.
    """
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - started)
        if best < bound:
            break
    return best


@pytest.mark.parametrize("size, bound", [(64_000, 0.2), (1_000_000, 0.3)])
@pytest.mark.parametrize("shape", CRAFTED)
def test_whole_default_set_matches_crafted_text_quickly(shape: str, size: int, bound: float) -> None:
    pset = load_patterns()
    unit = CRAFTED[shape]
    text = (unit * (size // len(unit) + 1))[:size]
    for hostile in (alert("Error", stacktrace=text), alert(text), alert(text, stacktrace=text, message=text)):
        elapsed = best_time(lambda a=hostile: pset.match(a), bound)  # type: ignore[misc]
        assert elapsed < bound, f"{shape}, {size} chars: {elapsed:.3f} s"
