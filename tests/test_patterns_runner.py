"""The runner with real subprocesses: argv only, stop at first failure, kill on timeout."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bot.models import Alert, AlertKind
from patterns import PatternMatch, PatternRunner, PatternSet, load_patterns

PY = sys.executable


def alert(title: str) -> Alert:
    return Alert(source="generic", kind=AlertKind.ERROR, title=title, fingerprint="t")


def pattern_file(tmp_path: Path) -> PatternSet:
    """One pattern per scenario; the interpreter comes from settings, never from error text."""
    body = textwrap.dedent("""
        [patterns.succeed]
        description = "two steps that pass"
        category = "infrastructure"
        match = ['^succeed$']
        action = [["{py}", "-c", "print('step one')"],
                  ["{py}", "-c", "import os, sys; print('cwd', os.getcwd()); print('env', os.environ.get('EXTRA'))"]]
        cwd = "{workdir}"
        env = {EXTRA = "from-pattern"}

        [patterns.fail_then_more]
        description = "the first step fails: the second must not run"
        category = "infrastructure"
        match = ['^fail$']
        action = [["{py}", "-c", "import sys; print('failing'); sys.exit(3)"],
                  ["{py}", "-c", "import sys; open(sys.argv[1], 'w').write('ran')", "{marker}"]]

        [patterns.hang]
        description = "sleeps past its timeout, with a grandchild"
        category = "resource"
        match = ['^hang$']
        action = ["{py}", "-c", "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); open(sys.argv[1], 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)", "{pidfile}"]
        timeout = 0.5

        [patterns.chatty]
        description = "prints far more than the output limit"
        category = "resource"
        match = ['^chatty$']
        action = ["{py}", "-c", "import sys; sys.stdout.write('HEAD' + 'x' * 200000 + 'TAIL')"]

        [patterns.verified_ok]
        description = "verify passes"
        category = "transient"
        match = ['^verify ok$']
        action = ["{py}", "-c", "pass"]
        verify = ["{py}", "-c", "print('healthy')"]

        [patterns.verified_bad]
        description = "verify fails"
        category = "transient"
        match = ['^verify bad$']
        action = ["{py}", "-c", "pass"]
        verify = ["{py}", "-c", "import sys; sys.exit(1)"]

        [patterns.missing_program]
        description = "the program does not exist"
        category = "transient"
        match = ['^missing$']
        action = ["/nonexistent/definitely-not-a-program", "x"]

        [patterns.precheck_says_no]
        description = "the precheck refuses: the action must not run"
        category = "resource"
        match = ['^precheck no$']
        precheck = ["{py}", "-c", "print('looking'); print('the full volume is /data, not this one'); raise SystemExit(1)"]
        action = ["{py}", "-c", "import sys; open(sys.argv[1], 'w').write('ran')", "{marker}"]

        [patterns.precheck_says_yes]
        description = "the precheck passes: the action runs"
        category = "resource"
        match = ['^precheck yes$']
        precheck = ["{py}", "-c", "print('below the threshold')"]
        action = ["{py}", "-c", "import sys; open(sys.argv[1], 'w').write('ran')", "{marker}"]
        verify = ["{py}", "-c", "pass"]
    """)
    path = tmp_path / "runner.toml"
    path.write_text(body, encoding="utf-8")
    workdir = tmp_path / "work"
    workdir.mkdir()
    return load_patterns(path, settings={
        "py": PY, "workdir": str(workdir), "marker": str(tmp_path / "marker"), "pidfile": str(tmp_path / "pid"),
    })


def matched(pset: PatternSet, title: str) -> PatternMatch:
    m = pset.match(alert(title))
    assert m is not None and m.runnable
    return m


async def test_success_runs_every_step_in_cwd_with_minimal_env(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "secret-token")
    pset = pattern_file(tmp_path)
    result = await PatternRunner().run(matched(pset, "succeed"))
    assert result.ok and result.verify_ok is None and len(result.steps) == 2
    first, second = result.steps
    assert first.exit_code == 0 and first.output == "step one\n" and not first.timed_out
    assert f"cwd {tmp_path / 'work'}" in second.output and "env from-pattern" in second.output
    assert "secret-token" not in second.output
    assert "ok — 2/2" in result.summary and result.duration_s >= 0


async def test_child_environment_does_not_carry_the_bots_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "secret-token")
    env = PatternRunner().environment({"X": "1"})
    assert "TELEGRAM_BOT_TOKEN" not in env and env["X"] == "1" and "PATH" in env


async def test_a_failing_step_stops_the_sequence(tmp_path: Path) -> None:
    pset = pattern_file(tmp_path)
    result = await PatternRunner().run(matched(pset, "fail"))
    assert not result.ok and len(result.steps) == 1
    assert result.steps[0].exit_code == 3 and "failing" in result.steps[0].output
    assert not (tmp_path / "marker").exists()
    assert "FAILED at step 1/2" in result.summary and "exited 3" in result.summary
    assert result.verify_ok is None


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pset = pattern_file(tmp_path)
    started = time.monotonic()
    result = await PatternRunner(kill_grace=0.5).run(matched(pset, "hang"))
    assert time.monotonic() - started < 4
    (step,) = result.steps
    assert step.timed_out and not result.ok and step.exit_code != 0
    assert "started" in step.output and "timed out" in step.output and "timed out" in result.summary
    grandchild = int((tmp_path / "pid").read_text())
    assert await asyncio.to_thread(_dies_within, grandchild, 3.0), "the grandchild survived the timeout"


def _dies_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its new parent to reap it is dead too
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


async def test_output_is_cut_to_the_limit_keeping_head_and_tail(tmp_path: Path) -> None:
    pset = pattern_file(tmp_path)
    result = await PatternRunner(output_limit=500).run(matched(pset, "chatty"))
    out = result.steps[0].output
    assert result.ok and len(out) <= 500
    assert out.startswith("HEAD") and out.endswith("TAIL") and "cut" in out


async def test_verify_pass_and_fail(tmp_path: Path) -> None:
    pset = pattern_file(tmp_path)
    good = await PatternRunner().run(matched(pset, "verify ok"))
    assert good.ok and good.verify_ok is True and good.verify is not None and "healthy" in good.verify.output
    assert "verify passed" in good.summary
    bad = await PatternRunner().run(matched(pset, "verify bad"))
    assert not bad.ok and bad.verify_ok is False and all(s.ok for s in bad.steps)
    assert "verify" in bad.summary and "failed" in bad.summary


async def test_a_program_that_cannot_start_is_a_failed_step(tmp_path: Path) -> None:
    pset = pattern_file(tmp_path)
    result = await PatternRunner().run(matched(pset, "missing"))
    assert not result.ok and result.steps[0].exit_code is None and "cannot start" in result.steps[0].output


async def test_a_refused_match_is_never_run(tmp_path: Path) -> None:
    pset = pattern_file(tmp_path)
    m = matched(pset, "fail")
    refused = PatternMatch(m.pattern, [], None, {}, refused="{x} refused")
    result = await PatternRunner().run(refused)
    assert not result.ok and result.steps == [] and "not run" in result.summary
    assert not (tmp_path / "marker").exists()


# -- precheck: runs first; a "no" means the action does not run ---------------------------------


async def test_a_precheck_that_says_no_stops_the_action_and_gives_its_reason(tmp_path: Path) -> None:
    pset = pattern_file(tmp_path)
    result = await PatternRunner().run(matched(pset, "precheck no"))
    assert not result.ok and result.precheck_refused and result.steps == [] and result.verify_ok is None
    assert result.summary == ("precheck_says_no: not run — the precheck said no: "
                              "the full volume is /data, not this one")
    assert result.precheck is not None and result.precheck.exit_code == 1
    assert not (tmp_path / "marker").exists()


async def test_a_precheck_that_passes_lets_the_action_run(tmp_path: Path) -> None:
    pset = pattern_file(tmp_path)
    result = await PatternRunner().run(matched(pset, "precheck yes"))
    assert result.ok and not result.precheck_refused and result.verify_ok is True
    assert result.precheck is not None and "below the threshold" in result.precheck.output
    assert (tmp_path / "marker").read_text() == "ran"


def disk_fix(tmp_path: Path, min_free: int) -> PatternMatch:
    """The shipped cleanup_disk with its real precheck, but a harmless action: a marker file
    instead of deleting /var/log archives (never delete the test machine's logs)."""
    pset = load_patterns(settings={"python": PY, "disk_min_free": str(min_free)})
    m = pset.match(alert("OSError: [Errno 28] No space left on device"))
    assert m is not None and m.pattern.id == "cleanup_disk" and m.precheck is not None
    harmless = [[PY, "-c", "import sys; open(sys.argv[1], 'w').write('cleaned')", str(tmp_path / "cleaned")]]
    return dataclasses.replace(m, argv=harmless, verify=None)


async def test_cleanup_disk_precheck_refuses_when_its_volumes_have_room(tmp_path: Path) -> None:
    result = await PatternRunner().run(disk_fix(tmp_path, min_free=1))  # / and /var/log surely have 1 byte free
    assert not result.ok and result.precheck_refused and result.steps == []
    assert "the full volume is another one, nothing was deleted" in result.summary
    assert "/var/log has" in result.summary and "GiB free" in result.summary
    assert not (tmp_path / "cleaned").exists()


async def test_cleanup_disk_precheck_lets_it_clean_when_a_volume_is_below_the_threshold(tmp_path: Path) -> None:
    result = await PatternRunner().run(disk_fix(tmp_path, min_free=10**18))  # no disk has an exabyte free
    assert result.ok and result.precheck is not None and "below the threshold" in result.precheck.output
    assert (tmp_path / "cleaned").read_text() == "cleaned"
