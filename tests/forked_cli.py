"""`python -m bot ARGS` as a real process each time, without paying the interpreter's start-up each time.

A fresh interpreter spends about a second of CPU before the command does anything: importing the
bot (0.5 s) and judging and compiling the ~800 rule regexes (0.5 s). The CLI tests run some forty
commands, so that second was most of their cost. Here one interpreter (the zygote) imports the bot
and loads the rules once; each command is then a fork of it that runs `python -m bot` as the
interpreter would (`runpy`, `__main__`), in its own process, with its own environment, working
directory, standard input and output files, and exit code, a traceback printed as Python prints it.
What the command does is unchanged; only the start-up it shares is skipped. The zygote holds no
threads and no open database, so a fork of it is safe.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ZYGOTE = r"""
import gc, json, os, runpy, sys
import bot.cli
from bot.triage import RuleSet
from patterns import load_patterns
RuleSet.load(None)  # the packaged rules and patterns, judged and compiled once for every fork
load_patterns(None)
for module in filter(None, sys.argv[3].split(",")):  # what the commands run import anyway (e.g. anthropic)
    __import__(module)
gc.freeze()  # what is loaded stays out of the forks' collections (they would touch, so copy, every page)
requests, replies = os.fdopen(int(sys.argv[1]), "r", encoding="utf-8"), int(sys.argv[2])
for line in requests:
    run = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        requests.close()
        os.close(replies)
        os.chdir(run["cwd"])
        os.environ.clear()
        os.environ.update(run["env"])
        # Appending: stdout and stderr may be one file (merged in the order written).
        for fd, path, flags in ((0, run["stdin"], os.O_RDONLY), (1, run["stdout"], os.O_WRONLY | os.O_APPEND),
                                (2, run["stderr"], os.O_WRONLY | os.O_APPEND)):
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
        sys.argv = ["-m", *run["args"]]
        runpy.run_module("bot", run_name="__main__", alter_sys=True)
        sys.exit(0)
    os.write(replies, f"{pid}\n".encode())
    _, status = os.waitpid(pid, 0)
    os.write(replies, f"{os.waitstatus_to_exitcode(status)}\n".encode())
"""


class ForkedCli:
    """One zygote; `run` forks a command from it and waits for that command to end.

    `preload`: modules the zygote imports besides the bot's, for commands that would import them
    in every run (the `anthropic` SDK takes seconds).
    """

    def __init__(self, repo: Path, env: dict[str, str], *, preload: tuple[str, ...] = ()) -> None:
        self._requests_r, self._requests_w = os.pipe()
        self._replies_r, self._replies_w = os.pipe()
        self._zygote = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, str(self._requests_r), str(self._replies_w), ",".join(preload)],
            cwd=repo, env=env,
            stdin=subprocess.DEVNULL, pass_fds=(self._requests_r, self._replies_w),
        )
        os.close(self._requests_r)
        os.close(self._replies_w)
        self._replies = os.fdopen(self._replies_r, "rb", buffering=0)
        self._pending = b""

    def run(self, args: list[str], *, cwd: Path, env: dict[str, str], stdin: str, timeout: float,
            merge_output: bool = False) -> subprocess.CompletedProcess[str]:
        """`merge_output`: stderr into stdout, in order (as `2>&1`); the result's stderr is then empty."""
        with tempfile.TemporaryDirectory(prefix="forked-cli-") as tmp:
            files = {name: Path(tmp) / name for name in ("stdin", "stdout", "stderr")}
            if merge_output:
                files["stderr"] = files["stdout"]
            files["stdin"].write_text(stdin, encoding="utf-8")
            files["stdout"].touch()
            files["stderr"].touch()
            request = {"args": args, "cwd": str(cwd), "env": env, **{k: str(v) for k, v in files.items()}}
            os.write(self._requests_w, (json.dumps(request) + "\n").encode())
            pid = int(self._reply(timeout))
            try:
                code = int(self._reply(timeout))
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._reply(timeout)
                raise
            return subprocess.CompletedProcess(
                ["python", "-m", "bot", *args], code,
                files["stdout"].read_text(encoding="utf-8"),
                "" if merge_output else files["stderr"].read_text(encoding="utf-8"),
            )

    def start(self, args: list[str], *, cwd: Path, env: dict[str, str]) -> int:
        """Fork a long-running command (`run`) with no input or output and return its pid at once, for
        a test to signal; `wait` then gives its exit code. One at a time: the zygote serves the next
        request only after this command has ended."""
        request = {"args": args, "cwd": str(cwd), "env": env,
                   **dict.fromkeys(("stdin", "stdout", "stderr"), os.devnull)}
        os.write(self._requests_w, (json.dumps(request) + "\n").encode())
        return int(self._reply(30))

    def wait(self, timeout: float) -> int:
        """The exit code of the command `start` forked (negative: the signal that ended it)."""
        return int(self._reply(timeout))

    def _reply(self, timeout: float) -> str:
        while b"\n" not in self._pending:
            ready, _, _ = select.select([self._replies], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired("python -m bot (forked)", timeout)
            chunk = self._replies.read(4096)
            if not chunk:
                raise RuntimeError(f"the CLI zygote ended (exit {self._zygote.wait()})")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        os.close(self._requests_w)
        self._zygote.wait(timeout=30)
        self._replies.close()
