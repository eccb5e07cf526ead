"""`python -m bot ARGS` as a real process each time, without paying the interpreter's start-up each time.

A fresh interpreter spends about a second of CPU before the command does anything: importing the
bot (0.5 s) and judging and compiling the ~800 rule regexes (0.5 s); `run` adds aiogram (1.5 s) and
`--claude` the `anthropic` SDK (2 s). Here one interpreter (the zygote) imports the bot and loads
the rules once; each command is then a fork of it that runs `python -m bot` as the interpreter
would (`runpy`, `__main__`), in its own process, with its own environment, working directory,
standard streams (fresh ones, buffered as that environment asks: PYTHONUNBUFFERED), and exit
code, a traceback printed as Python prints it. What the command does is unchanged; only the
start-up it shares is skipped. The zygote holds no threads and no open database, so a fork of it
is safe.

A fork ends as the interpreter ends, but for one step: its threads are joined, its atexit functions
run, its streams flushed, its garbage collected (finalizers run), and its exit status is Python's
(1 and a traceback for an exception, 120 for a failed flush, death by SIGINT for an unhandled
Ctrl+C); only the teardown of every module is skipped, which in a fork writes to, so copies, every
page the zygote loaded (most of a short command's CPU, 0.1 s a command).

One zygote serves a whole pytest worker (the `forked_cli` fixture in tests/conftest.py, which
preloads `bot.app`: `run` imports it, and `triage` much of it). Modules only some commands import
are imported into it on demand (`load("anthropic")` before the first `--claude`), once, so a worker
that never needs them never pays for them. Commands may run at the same time (a long-running `run` while
others come and go): the zygote forks at once and reports each exit as it happens.
"""

from __future__ import annotations

import enum
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO

ZYGOTE = r"""
import atexit, gc, io, json, os, runpy, select, signal, sys

ZYGOTE_PID = os.getpid()
ending = {"code": 0, "interrupted": False}  # how the command in this fork ended


def exit_without_teardown():
    # Registered first, so it runs last: after the command's and its libraries' atexit functions
    # (threads already joined), where a fresh interpreter flushes its streams, collects garbage and
    # tears every module down. In a fork that teardown writes to, so copies, every page the zygote
    # loaded: most of a short command's CPU. Here: the same flush and collection (finalizers run,
    # "Task was destroyed" is said), then the exit, with the status the interpreter would give.
    if os.getpid() == ZYGOTE_PID:
        return
    gc.collect()
    code = ending["code"]
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception as exc:  # as Python: "Exception ignored", exit status 120
            print(f"Exception ignored in: {stream!r}", f"{type(exc).__name__}: {exc}", sep="\n", file=sys.__stderr__)
            code = code or 120
    if ending["interrupted"]:  # as Python after an unhandled Ctrl+C: die by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


atexit.register(exit_without_teardown)
import bot.cli
from bot.triage import RuleSet
from patterns import load_patterns
RuleSet.load(None)  # the packaged rules and patterns, judged and compiled once for every fork
load_patterns(None)
for module in filter(None, sys.argv[3].split(",")):  # what the commands run import anyway (e.g. anthropic)
    __import__(module)
gc.freeze()  # what is loaded stays out of the forks' collections (they would touch, so copy, every page)
requests, replies = int(sys.argv[1]), int(sys.argv[2])
woken, wake = os.pipe()  # SIGCHLD wakes the select below: exits are reported as they happen
os.set_blocking(woken, False)
os.set_blocking(wake, False)
signal.set_wakeup_fd(wake)
signal.signal(signal.SIGCHLD, lambda *_: None)


def reply(*words):
    os.write(replies, (" ".join(map(str, words)) + "\n").encode())


def standard_streams(unbuffered):
    # As a fresh interpreter makes them for its descriptors 1 and 2 (stdin reads descriptor 0 already).
    for fd, name, errors, line_buffering in ((1, "stdout", sys.stdout.errors, os.isatty(1)),
                                             (2, "stderr", "backslashreplace", True)):
        raw = io.FileIO(fd, "w", closefd=False)
        stream = io.TextIOWrapper(raw if unbuffered else io.BufferedWriter(raw), encoding=sys.stdout.encoding,
                                  errors=errors, line_buffering=line_buffering, write_through=unbuffered)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def command(run):
    # In the fork: become `python -m bot ARGS` (never returns).
    try:
        become(run)
    except SystemExit as exc:  # the status Python gives it (a message: printed by Python, status 1)
        ending["code"] = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        raise
    except KeyboardInterrupt:
        ending["interrupted"] = True
        raise
    except BaseException:  # Python prints the traceback, status 1
        ending["code"] = 1
        raise


def become(run):
    for fd in (requests, replies, woken, wake):
        os.close(fd)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.chdir(run["cwd"])
    os.environ.clear()
    os.environ.update(run["env"])
    # In this order (the client opens its ends of pipes in it too, and may remove them once open).
    for fd, path, flags in ((0, run["stdin"], os.O_RDONLY), (1, run["stdout"], os.O_WRONLY | os.O_APPEND),
                            (2, run["stderr"], os.O_WRONLY | os.O_APPEND)):
        if fd == 2 and path == run["stdout"]:  # `2>&1`: one pipe or file, in the order written
            os.dup2(1, 2)
            continue
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    standard_streams(bool(run["env"].get("PYTHONUNBUFFERED")))
    sys.argv = ["-m", *run["args"]]
    runpy.run_module("bot", run_name="__main__", alter_sys=True)
    sys.exit(0)


def reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        reply("exited", pid, os.waitstatus_to_exitcode(status))


pending = b""
while True:
    ready, _, _ = select.select([requests, woken], [], [])
    if woken in ready:
        while True:
            try:
                if not os.read(woken, 512):
                    break
            except BlockingIOError:
                break
    reap()
    if requests not in ready:
        continue
    chunk = os.read(requests, 65536)
    if not chunk:
        break
    pending += chunk
    while b"\n" in pending:
        line, pending = pending.split(b"\n", 1)
        request = json.loads(line)
        if "load" in request:
            for module in request["load"]:
                __import__(module)
            gc.freeze()
            reply("loaded", request["id"], 0)
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            command(request)
        reply("forked", request["id"], pid)
signal.set_wakeup_fd(-1)
signal.signal(signal.SIGCHLD, signal.SIG_DFL)
while True:  # the client is closing: every command still running ends first
    try:
        pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    reply("exited", pid, os.waitstatus_to_exitcode(status))
"""

class Stream(enum.Enum):
    """What `spawn` connects a standard stream to, besides a file."""

    PIPE = "a real pipe, its other end given to the caller"
    STDOUT = "stderr into the same pipe or file as stdout (as `2>&1`)"


PIPE, STDOUT = Stream.PIPE, Stream.STDOUT
DEVNULL = Path(os.devnull)


class Forked:
    """A command `spawn` started: its pid, the caller's ends of its pipes, and its exit code once it has one."""

    def __init__(self, cli: ForkedCli, pid: int, stdin: IO[bytes] | None, stdout: IO[bytes] | None,
                 stderr: IO[bytes] | None) -> None:
        self._cli = cli
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr

    @property
    def returncode(self) -> int | None:
        return self._cli._exit_code(self.pid)

    def wait(self, timeout: float) -> int:
        """The exit code (negative: the signal that ended it)."""
        return self._cli._wait_exit(self.pid, timeout)

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkedCli:
    """One zygote; `run` forks a command from it and waits for that command to end; `spawn` starts one.

    `preload`: modules the zygote imports besides the bot's, for commands that would import them
    in every run (the `anthropic` SDK takes seconds); `load` imports more later.
    """

    def __init__(self, repo: Path, env: dict[str, str], *, preload: tuple[str, ...] = ()) -> None:
        requests_r, self._requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        self._zygote = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, str(requests_r), str(replies_w), ",".join(preload)],
            cwd=repo, env=env, stdin=subprocess.DEVNULL, pass_fds=(requests_r, replies_w),
        )
        os.close(requests_r)
        os.close(replies_w)
        self._loaded = set(preload)
        self._changed = threading.Condition()
        self._replies: dict[tuple[str, int], int] = {}  # ("forked", request id): pid; ("exited", pid): code
        self._ended = False
        self._next_id = 0
        self._last_started: int | None = None
        self._reader = threading.Thread(target=self._read_replies, args=(replies_r,), daemon=True,
                                        name="forked-cli-replies")
        self._reader.start()

    # ------------------------------------------------------------------ what tests call

    def load(self, *modules: str) -> None:
        """Import `modules` into the zygote (once each), so the forks after this have them already."""
        missing = [m for m in modules if m not in self._loaded]
        if missing:
            self._await(("loaded", self._send({"load": missing})), 120)
            self._loaded.update(missing)

    def run(self, args: list[str], *, cwd: Path, env: dict[str, str], stdin: str, timeout: float,
            merge_output: bool = False) -> subprocess.CompletedProcess[str]:
        """Run to its end, `stdin` written into a real pipe (as `subprocess.run(input=...)`).
        `merge_output`: stderr into stdout, in order (as `2>&1`); the result's stderr is then empty."""
        with tempfile.TemporaryDirectory(prefix="forked-cli-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            out.touch()
            err.touch()
            forked = self.spawn(args, cwd=cwd, env=env, input=stdin, stdout=out,
                                stderr=STDOUT if merge_output else err)
            try:
                code = forked.wait(timeout)
            except subprocess.TimeoutExpired:
                forked.kill()
                forked.wait(30)
                raise
            return subprocess.CompletedProcess(
                ["python", "-m", "bot", *args], code, out.read_text(encoding="utf-8"),
                "" if merge_output else err.read_text(encoding="utf-8"),
            )

    def spawn(self, args: list[str], *, cwd: Path, env: dict[str, str], input: str | None = None,
              stdin: Path | Stream = DEVNULL, stdout: Path | Stream = DEVNULL,
              stderr: Path | Stream = DEVNULL) -> Forked:
        """Start `python -m bot ARGS` and return at once, like `subprocess.Popen`. `input`: written into
        a real pipe that is then closed (instead of `stdin`). A Path: a file (output appended to it);
        PIPE: a real pipe whose other end is the result's `stdin`/`stdout`/`stderr`; STDOUT: stderr
        into stdout."""
        with tempfile.TemporaryDirectory(prefix="forked-cli-pipes-") as tmp:
            if input is not None:
                stdin = PIPE
            paths = {name: os.path.join(tmp, name) if stream is PIPE else str(stream)
                     for name, stream in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr))}
            for name in paths:
                if paths[name].startswith(tmp):
                    os.mkfifo(paths[name])
            if stderr is STDOUT:
                paths["stderr"] = paths["stdout"]
            pid = self._await(("forked", self._send({"args": args, "cwd": str(cwd), "env": env, **paths})), 30)
            # The fork opens stdin, stdout, stderr in this order; a pipe's open waits for its other end
            # (then the pipes' names may go: what is open stays open).
            ends = [open(paths[name], mode, buffering=0) if stream is PIPE else None  # noqa: SIM115
                    for name, mode, stream in (("stdin", "wb", stdin), ("stdout", "rb", stdout),
                                               ("stderr", "rb", stderr))]
        if input is not None:
            assert ends[0] is not None
            threading.Thread(target=_feed, args=(ends[0], input), daemon=True).start()
            ends[0] = None
        return Forked(self, pid, *ends)

    def start(self, args: list[str], *, cwd: Path, env: dict[str, str]) -> int:
        """Fork a long-running command (`run`) with no input or output and return its pid at once, for
        a test to signal; `wait` then gives its exit code."""
        self._last_started = self.spawn(args, cwd=cwd, env=env).pid
        return self._last_started

    def wait(self, timeout: float) -> int:
        """The exit code of the command `start` forked last (negative: the signal that ended it)."""
        assert self._last_started is not None, "start a command first"
        return self._wait_exit(self._last_started, timeout)

    def close(self) -> None:
        os.close(self._requests_w)
        self._zygote.wait(timeout=30)
        self._reader.join(30)

    # ------------------------------------------------------------------ the zygote's replies

    def _send(self, request: dict[str, object]) -> int:
        with self._changed:
            self._next_id += 1
            request_id = self._next_id
            os.write(self._requests_w, (json.dumps({**request, "id": request_id}) + "\n").encode())
        return request_id

    def _read_replies(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as replies:
            for line in replies:
                kind, key, value = line.decode().split()
                with self._changed:
                    if kind == "forked":  # a pid used again: what its earlier process said is done with
                        self._replies.pop(("exited", int(value)), None)
                    self._replies[(kind, int(key))] = int(value)
                    self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def _await(self, key: tuple[str, int], timeout: float) -> int:
        with self._changed:
            if not self._changed.wait_for(lambda: key in self._replies or self._ended, timeout):
                raise subprocess.TimeoutExpired("python -m bot (forked)", timeout)
            if key not in self._replies:
                raise RuntimeError(f"the CLI zygote ended (exit {self._zygote.wait()})")
            return self._replies[key]

    def _wait_exit(self, pid: int, timeout: float) -> int:
        return self._await(("exited", pid), timeout)

    def _exit_code(self, pid: int) -> int | None:
        with self._changed:
            return self._replies.get(("exited", pid))


def _feed(pipe: IO[bytes], text: str) -> None:
    """Write a command's standard input and close it (its end of file), as `subprocess.run(input=...)`."""
    with pipe:
        try:
            pipe.write(text.encode("utf-8"))
        except BrokenPipeError:  # it ended without reading everything: as a real pipe
            pass


def zygote_env(repo: Path, setting_names: Iterable[str]) -> dict[str, str]:
    """The environment a zygote starts in: this one without the bot's settings (each command gets its own)."""
    names = {n.upper() for n in setting_names}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.pop("PYTHONUNBUFFERED", None)  # each fork's streams follow its own environment
    env["PYTHONPATH"] = str(repo)
    return env
