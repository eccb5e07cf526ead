"""The runner with real subprocesses: argv only, stop at first failure, kill on timeout."""

from __future__ import annotations

import asyncio
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
