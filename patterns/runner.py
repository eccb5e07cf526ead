"""Run a matched pattern: argv only, bounded in time and output, stop at the first failure.

Why it is built this way:
- ``create_subprocess_exec`` with the rendered argv, never a shell, so no text from an
  error message can become shell syntax.
- Each step runs in its own session (process group), so a timeout kills the whole tree
  (``npm`` and its children, not just ``npm``).
- The child gets a minimal environment, not the bot's: the bot's environment holds its
  Telegram/API tokens, and ``npm install`` runs third-party install scripts.
- Output is captured as it streams, keeping only the head and the tail, so a chatty
  command cannot fill memory; the integrator redacts it before showing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from patterns.engine import PatternMatch

__all__ = ["DEFAULT_ENV_KEYS", "PatternRunner", "RunResult", "StepResult", "cut_text"]

#: Variables passed through from the bot's environment to the commands it runs.
DEFAULT_ENV_KEYS: tuple[str, ...] = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "USER", "LOGNAME", "TMPDIR", "TZ")

_READ_CHUNK = 65536


class StepResult(NamedTuple):
    """One command that ran (or could not start: ``exit_code`` None, reason in ``output``)."""

    argv: list[str]
    exit_code: int | None
    duration_s: float
    output: str
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass
class RunResult:
    """What happened when a pattern ran. ``ok`` means the precheck, every step and the verify passed.

    A precheck that said no leaves ``steps`` empty: nothing of the action ran.
    """

    ok: bool
    steps: list[StepResult]
    verify_ok: bool | None  # None: no verify command, or it did not run
    duration_s: float
    summary: str
    pattern_id: str = ""
    verify: StepResult | None = None
    precheck: StepResult | None = None

    @property
    def precheck_refused(self) -> bool:
        return self.precheck is not None and not self.precheck.ok


def cut_text(text: str, limit: int) -> str:
    """Keep the head and the tail of text within ``limit`` characters, saying what was cut."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    marker = f"\n…[{len(text) - limit} characters cut]…\n"
    if len(marker) >= limit:
        return text[-limit:]
    room = limit - len(marker)
    head = room // 3
    tail = room - head
    return text[:head] + marker + text[len(text) - tail :]


class _Capture:
    """Head and tail of a byte stream, bounded in memory whatever the stream's size."""

    def __init__(self, limit_chars: int) -> None:
        self.cap = max(1, limit_chars) * 4  # up to 4 bytes a character in UTF-8
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.cap:
                del self.tail[: len(self.tail) - self.cap]

    def text(self, limit: int) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        if dropped <= 0:
            return cut_text(bytes(self.head + self.tail).decode("utf-8", "replace"), limit)
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        return cut_text(f"{head}\n…[{dropped} bytes cut]…\n{tail}", limit)


def _precheck_reason(step: StepResult, limit: int = 300) -> str:
    """The precheck's own explanation (its last line of output), else how it ended."""
    if step.timed_out:
        return "it timed out (its process group was killed)"
    said = [line.strip() for line in step.output.splitlines() if line.strip()]
    return cut_text(said[-1], limit) if said else f"it exited {step.exit_code}"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _wait_exit(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    """Wait until the process itself has exited; True if it did within ``timeout``.

    Polls ``returncode`` rather than awaiting ``proc.wait()``, which on Python 3.11 also
    waits for the output pipe to close and so hangs while any grandchild holds it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    interval = 0.005
    while proc.returncode is None:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 2, 0.1)
    return True


class PatternRunner:
    """Runs :class:`PatternMatch` steps; holds no state between runs.

    Rate limits (cooldown, max_runs), approvals and the recurrence check are the
    integrator's: this class only runs what it is given, and only if it is runnable.
    """

    def __init__(
        self,
        output_limit: int = 3000,
        *,
        kill_grace: float = 2.0,
        drain_timeout: float = 1.0,
        env_keys: Sequence[str] = DEFAULT_ENV_KEYS,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.output_limit = output_limit
        self.kill_grace = kill_grace
        self.drain_timeout = drain_timeout
        self.env_keys = tuple(env_keys)
        self._base_env = dict(base_env) if base_env is not None else None

    def environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        """The child's environment: a few variables from ours, then the pattern's ``env``."""
        source = self._base_env if self._base_env is not None else os.environ
        env = {k: source[k] for k in self.env_keys if k in source}
        env.setdefault("PATH", os.defpath)
        env.update(extra)
        return env

    async def run(self, m: PatternMatch) -> RunResult:
        """Run each step in order, stop at the first failure, then verify if all passed."""
        pid = m.pattern.id
        if not m.runnable:
            reason = m.refused or "the pattern has no action"
            return RunResult(False, [], None, 0.0, f"{pid}: not run — {reason}", pid)
        started = time.monotonic()
        env = self.environment(m.env)
        precheck: StepResult | None = None
        if m.precheck:
            precheck = await self.run_step(m.precheck, cwd=m.cwd, env=env, timeout=m.pattern.precheck_timeout)
            if not precheck.ok:
                duration = time.monotonic() - started
                summary = f"{pid}: not run — the precheck said no: {_precheck_reason(precheck)}"
                return RunResult(False, [], None, duration, summary, pid, precheck=precheck)
        steps: list[StepResult] = []
        for argv in m.argv:
            step = await self.run_step(argv, cwd=m.cwd, env=env, timeout=m.pattern.timeout)
            steps.append(step)
            if not step.ok:
                break
        ok = len(steps) == len(m.argv) and all(s.ok for s in steps)
        verify: StepResult | None = None
        if ok and m.verify:
            if m.pattern.verify_delay:
                await asyncio.sleep(m.pattern.verify_delay)
            verify = await self.run_step(m.verify, cwd=m.cwd, env=env, timeout=m.pattern.verify_timeout)
        verify_ok = verify.ok if verify is not None else None
        ok = ok and verify_ok is not False
        duration = time.monotonic() - started
        summary = self._summary(m, steps, verify, ok, duration)
        return RunResult(ok, steps, verify_ok, duration, summary, pid, verify, precheck)

    async def run_step(
        self, argv: Sequence[str], *, cwd: str | None, env: Mapping[str, str], timeout: float
    ) -> StepResult:
        """One argv, its own process group, killed with the group after ``timeout`` seconds."""
        argv = list(argv)
        started = time.monotonic()
        if cwd is not None and not await asyncio.to_thread(os.path.isdir, cwd):
            return StepResult(argv, None, 0.0, f"cannot start: working directory {cwd!r} does not exist", False)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
            )
        except OSError as exc:
            return StepResult(argv, None, time.monotonic() - started, f"cannot start {argv[0]!r}: {exc}", False)
        capture = _Capture(self.output_limit)
        reader = asyncio.create_task(self._pump(proc.stdout, capture))
        timed_out = False
        held_open = False
        try:
            if not await _wait_exit(proc, timeout):
                timed_out = True
                await self._kill(proc)
            try:
                # a daemonised grandchild may keep the pipe open: stop reading after a moment
                await asyncio.wait_for(reader, self.drain_timeout)
            except TimeoutError:
                held_open = True
                # the process has exited: close our end of the pipe (asyncio has no public way)
                transport = getattr(proc, "_transport", None)
                if transport is not None:
                    transport.close()
        except BaseException:
            # cancelled (bot shutting down): never leave the command running unattended
            reader.cancel()
            await asyncio.shield(self._kill(proc))
            raise
        output = capture.text(self.output_limit)
        if held_open:
            output = cut_text(f"{output}\n[a background process still holds the output; stopped reading]",
                              self.output_limit)
        if timed_out:
            output = cut_text(f"{output}\n[timed out after {timeout:g} s: process group killed]", self.output_limit)
        return StepResult(argv, proc.returncode, time.monotonic() - started, output, timed_out)

    @staticmethod
    async def _pump(stream: asyncio.StreamReader | None, capture: _Capture) -> None:
        if stream is None:
            return
        while chunk := await stream.read(_READ_CHUNK):
            capture.feed(chunk)

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the group, give it ``kill_grace`` seconds, then SIGKILL whatever is left."""
        _signal_group(proc.pid, signal.SIGTERM)
        await _wait_exit(proc, self.kill_grace)
        _signal_group(proc.pid, signal.SIGKILL)
        await _wait_exit(proc, 5.0)

    @staticmethod
    def _summary(
        m: PatternMatch, steps: Sequence[StepResult], verify: StepResult | None, ok: bool, duration: float
    ) -> str:
        pid = m.pattern.id
        total = len(m.argv)
        if ok:
            checked = ", verify passed" if verify is not None else ""
            return f"{pid}: ok — {total}/{total} step(s) passed{checked} in {duration:.1f} s"
        if steps and not steps[-1].ok:
            last = steps[-1]
            cmd = " ".join(last.argv)
            if last.timed_out:
                why = "timed out and was killed"
            elif last.exit_code is None:
                why = "could not start"
            else:
                why = f"exited {last.exit_code}"
            return f"{pid}: FAILED at step {len(steps)}/{total} `{cmd}` — {why} ({duration:.1f} s)"
        if verify is not None:
            why = "timed out" if verify.timed_out else f"exited {verify.exit_code}"
            return f"{pid}: steps passed but verify `{' '.join(verify.argv)}` failed — {why} ({duration:.1f} s)"
        return f"{pid}: FAILED ({duration:.1f} s)"
