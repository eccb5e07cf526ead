"""Where a fix runs: on this machine only, so only errors from this machine get one.

A real GlitchTip error from server `web-03` got `systemctl restart redis-server`, which
would have restarted the Redis of the bot's host. Every pattern now applies only to
errors from FIX_HOSTS (default: this machine's names) or naming no server, unless the
pattern lists its `servers` itself.
"""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from bot.models import Alert, AlertKind
from patterns import load_patterns
from patterns.engine import local_host_names

REDIS_DOWN = "Error: connect ECONNREFUSED 127.0.0.1:6379"


def alert(title: str, **fields: str) -> Alert:
    return Alert(source="generic", kind=AlertKind.ERROR, title=title, fingerprint="h", **fields)  # type: ignore[arg-type]


def test_an_error_from_another_server_gets_no_local_fix_and_says_why() -> None:
    pset = load_patterns()
    assert pset.match(alert(REDIS_DOWN, server="web-03")) is None
    found = pset.evaluate(alert(REDIS_DOWN, server="web-03"))
    assert found is not None and not found.runnable and found.argv == []
    assert found.elsewhere == "web-03"
    assert found.refused == "no local fix: the error came from web-03"


@pytest.mark.parametrize("server", [socket.gethostname(), socket.gethostname().upper() + ".", "localhost",
                                    "127.0.0.1"])
def test_an_error_from_this_machine_gets_the_fix(server: str) -> None:
    m = load_patterns().match(alert(REDIS_DOWN, server=server))
    assert m is not None and m.argv == [["systemctl", "restart", "redis-server"]]


def test_an_alert_naming_no_server_gets_the_fix() -> None:
    m = load_patterns().match(alert(REDIS_DOWN))
    assert m is not None and m.runnable


def test_fix_hosts_decides_which_servers_are_this_machine() -> None:
    pset = load_patterns(hosts=["web-03", "web-03.example.com"])
    assert pset.match(alert(REDIS_DOWN, server="WEB-03.example.com")) is not None
    assert pset.match(alert(REDIS_DOWN, server=socket.gethostname())) is None  # not in FIX_HOSTS any more
    # a per-call override (what the fix runner re-checks with at run time)
    assert pset.match(alert(REDIS_DOWN, server="web-03"), hosts=["app-1"]) is None
    assert pset.match(alert(REDIS_DOWN, server="app-1"), hosts=["app-1"]) is not None


def test_a_pattern_that_lists_its_servers_applies_to_exactly_those(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(textwrap.dedent("""
        [patterns.restart_it]
        description = "d"
        category = "infrastructure"
        match = ['boom']
        servers = ["web-03"]
        action = ["echo", "restart"]
    """))
    pset = load_patterns(path, hosts=["app-1"])
    assert pset.match(alert("boom", server="web-03")) is not None
    assert pset.evaluate(alert("boom", server="app-1")) is None  # not one of its servers: no note either
    assert pset.match(alert("boom")) is None  # an alert without the field does not match a list


def test_no_local_fix_is_preferred_over_other_refusals(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(textwrap.dedent("""
        [patterns.picky]
        description = "d"
        category = "dependency"
        match = ["missing (?P<name>\\\\S+)"]
        action = ["echo", "{name}"]

        [patterns.picky.placeholders.name]
        from = "name"
        validate = '^[a-z]+$'

        [patterns.any_name]
        description = "d"
        category = "dependency"
        match = ["missing (?P<name>\\\\S+)"]
        action = ["echo", "{name}"]

        [patterns.any_name.placeholders.name]
        from = "name"
        validate = '^[A-Za-z]+$'
    """))
    found = load_patterns(path, hosts=["app-1"]).evaluate(alert("missing Thing", server="web-03"))
    assert found is not None and found.pattern.id == "any_name" and found.elsewhere == "web-03"


def test_no_local_fix_is_only_said_of_a_fix_that_would_apply() -> None:
    # the placeholder is refused whatever the server: the refusal says so, not "no local fix"
    found = load_patterns().evaluate(alert("Error: Cannot find module 'evil.tgz'", server="web-03"))
    assert found is not None and found.elsewhere is None and "tarball" in (found.refused or "")


def test_this_machine_has_several_names() -> None:
    names = local_host_names()
    host = socket.gethostname().lower()
    assert host in names and host.split(".")[0] in names
    assert {"localhost", "127.0.0.1"} <= set(names)
