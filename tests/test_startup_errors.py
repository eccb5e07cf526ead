"""Start-up failures, driven as a user meets them: `python -m bot run` as a real process.

Each failure must end the process with exit 2 and one line that names the setting to change,
within seconds, with no traceback and nothing left running (the busy port used to hang the
process; a rejected token used to retry forever). Telegram is the Bot API emulator on
127.0.0.1. Every run gets a clean environment (the developer's settings stripped) and a fresh
working directory, so no stray `.env` is read.

Every `python -m bot` here is its own process forked from the one interpreter per test worker
that has imported the bot and aiogram and loaded its rules already (tests/forked_cli.py): its own
environment, directory, output (a real pipe, read as it comes) and exit code, without the one to
three seconds of CPU a fresh interpreter spends before it decides anything. `scripts/run` is the
one fresh interpreter, as a user starts it: the script, its checkout's virtualenv and `.env`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.app import Application, StartupError
from bot.settings import ENV_FILE_VARIABLE, Settings
from bot.telegram_emulator import BotAPIEmulator
from tests.conftest import BOT_TOKEN as EMULATOR_BOT_TOKEN
from tests.conftest import CHAT_ID, free_port, make_settings
from tests.forked_cli import PIPE, STDOUT, Forked, ForkedCli

REPO = Path(__file__).resolve().parent.parent
SETTING_NAMES = {name.upper() for name in Settings.model_fields} | {ENV_FILE_VARIABLE}
BOT_TOKEN = "123456789:" + "AAE" + "x1Y2z3" * 6  # assembled so secret scanners do not flag it
OTHER_TOKEN = "987654321:" + "AAE" + "q9W8e7" * 6
WEBHOOK_TOKEN = "startup-test-webhook-token-0123"
# A failure found before Telegram is asked ends the process this soon; before, a busy port hung
# until killed. One found by asking Telegram waits for aiogram's import too (about 3 s on an idle
# machine, 10-20 s on a loaded one); before, a rejected token was retried forever. These are
# deadlines, not waits.
PROMPT_EXIT_S = 10.0
TELEGRAM_EXIT_S = 60.0
BROKEN_PATTERNS = """\
[patterns.fix_code]
description = "a code bug fixed by a command"
category = "code"
match.any = ["TypeError"]
action = ["echo", "hi"]
"""


def _env(workdir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", DATABASE_PATH=str(workdir / "remediator.db"),
               WEBHOOK_PORT="0", TELEGRAM_RATE_PER_CHAT="50", TELEGRAM_GROUP_PER_MINUTE="1000")
    env.pop("PYTHONSTARTUP", None)
    env.update(settings)
    return env


def _real_mode(api_base: str, **settings: str) -> dict[str, str]:
    return {"TELEGRAM_BOT_TOKEN": BOT_TOKEN, "TELEGRAM_CHAT_ID": "-1001234567890", "TELEGRAM_APPROVERS": "111",
            "WEBHOOK_TOKEN": WEBHOOK_TOKEN, "TELEGRAM_API_BASE": api_base, **settings}


@dataclass
class Finished:
    returncode: int
    output: str  # stdout and stderr together, in order
    seconds: float

    def lines_with(self, needle: str) -> list[str]:
        return [line for line in self.output.splitlines() if needle in line]


class BotProcess:
    """`python -m bot ARGS` with its output (stdout and stderr merged into one pipe) read as it comes."""

    def __init__(self, proc: Forked, output: asyncio.StreamReader) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.started = time.monotonic()
        self._reader = asyncio.create_task(self._read(output))
        self._grew = asyncio.Event()

    @classmethod
    async def start(cls, zygote: ForkedCli, workdir: Path, *args: str, **settings: str) -> BotProcess:
        proc = await asyncio.to_thread(zygote.spawn, list(args or ("run",)), cwd=workdir,
                                       env=_env(workdir, **settings), stdout=PIPE, stderr=STDOUT)
        output = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(output), proc.stdout)
        return cls(proc, output)

    async def _read(self, output: asyncio.StreamReader) -> None:
        async for raw in output:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            self._grew.set()
        self._grew.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(self, needle: str, timeout: float = 60) -> str:
        """The first output line containing `needle`; fails if the process ends or time runs out first."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((line for line in self.lines if needle in line), None)
            if found is not None:
                return found
            if self._reader.done():
                raise AssertionError(f"process ended without printing {needle!r}:\n{self.output}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} within {timeout}s:\n{self.output}")
            self._grew.clear()
            try:
                await asyncio.wait_for(self._grew.wait(), left)
            except TimeoutError:
                pass

    async def finish(self, timeout: float = 90) -> Finished:
        try:
            returncode = await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 30)
            raise AssertionError(f"still running after {timeout}s (a hang):\n{self.output}") from None
        await self._reader
        return Finished(returncode, self.output, time.monotonic() - self.started)

    async def stop(self) -> Finished:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        return await self.finish(30)


@pytest.fixture
def zygote(forked_cli: ForkedCli) -> ForkedCli:
    return forked_cli  # the worker's one (tests/conftest.py)


@pytest.fixture
def run_bot(zygote: ForkedCli) -> Callable[..., Awaitable[Finished]]:
    """`python -m bot ARGS` until it ends, its output read as it comes."""

    async def run(workdir: Path, *args: str, **settings: str) -> Finished:
        return await (await BotProcess.start(zygote, workdir, *args, **settings)).finish()

    return run


Decided = Callable[..., Awaitable[Finished]]


@pytest.fixture
def decided(zygote: ForkedCli) -> Decided:
    """`python -m bot ARGS` forked from the zygote, until it ends (90 s: a hang fails the test)."""

    async def run(workdir: Path, *args: str, **settings: str) -> Finished:
        started = time.monotonic()
        done = await asyncio.to_thread(zygote.run, list(args or ("run",)), cwd=workdir,
                                       env=_env(workdir, **settings), stdin="", timeout=90, merge_output=True)
        return Finished(done.returncode, done.stdout.rstrip("\n"), time.monotonic() - started)

    return run


def assert_one_clear_line(result: Finished, *needles: str) -> str:
    """Exit 2, no traceback, and exactly one line that says it all."""
    assert result.returncode == 2, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if all(n in line for n in needles)]
    assert len(lines) == 1, f"expected one line with {needles}:\n{result.output}"
    return lines[0]


def databases_in(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith((".db", ".sent-journal"))]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


# --------------------------------------------------------------------------- the webhook port


@pytest.mark.parametrize("mode", ["demo", "real"])
async def test_a_busy_port_exits_2_at_once_naming_the_port_and_the_setting(
    tmp_path: Path, busy_port: int, mode: str, decided: Decided
) -> None:
    settings = {"WEBHOOK_PORT": str(busy_port)}
    if mode == "real":  # the port is taken before Telegram is asked anything
        settings |= _real_mode("http://127.0.0.1:9")
    result = await decided(tmp_path, **settings)
    line = assert_one_clear_line(result, f"WEBHOOK_PORT {busy_port}", "already in use")
    assert "cannot start" in line and "free port" in line
    assert result.seconds < PROMPT_EXIT_S
    if mode == "demo":
        assert "remediator local demo" not in result.output  # no banner for a demo that is not running


async def test_a_port_lost_after_the_check_stops_what_had_started(
    tmp_path: Path, busy_port: int, emulator: BotAPIEmulator
) -> None:
    """The application's own bind failure (the port taken between the CLI's check and the start):
    StartupError naming the port, and the database and its thread closed again (they used to keep
    the process alive: the hang)."""
    threads_before = set(threading.enumerate())
    app = Application(make_settings(tmp_path, webhook_port=busy_port), chat_id=CHAT_ID,
                      token=EMULATOR_BOT_TOKEN, api_base=emulator.base_url)
    with pytest.raises(StartupError, match=f"WEBHOOK_PORT {busy_port} on 127.0.0.1 is already in use"):
        await app.start()
    assert app.db._conn is None
    started = set(threading.enumerate()) - threads_before  # e.g. SQLite's worker thread
    for thread in started:
        await asyncio.to_thread(thread.join, 5)  # a closed connection's thread ends right after its last job
    assert not [t.name for t in started if t.is_alive()]


# --------------------------------------------------------------------------- the bot token


@pytest.mark.parametrize("status", [401, 404])
async def test_a_token_telegram_rejects_exits_2_and_frees_the_port(
    tmp_path: Path, status: int, run_bot: Callable[..., Awaitable[Finished]]
) -> None:
    port = free_port()
    # 401: the emulator knows another token; 404: what Telegram answers to a malformed one.
    emu = BotAPIEmulator(token=OTHER_TOKEN if status == 401 else None)
    async with emu:
        if status == 404:
            emu.fail("getMe", 404, times=1000)
        result = await run_bot(tmp_path, **_real_mode(emu.base_url, WEBHOOK_PORT=str(port)))
        assert not any(c.method == "getUpdates" for c in emu.calls)  # never got as far as polling
    line = assert_one_clear_line(result, "Telegram rejected the token: check TELEGRAM_BOT_TOKEN")
    assert str(status) in line
    assert BOT_TOKEN not in result.output
    assert result.seconds < TELEGRAM_EXIT_S
    assert port_is_free(port)  # the webhook server that had started was stopped again


async def test_telegram_unreachable_is_retried_and_said_so_until_it_rejects_the_token(
    tmp_path: Path, zygote: ForkedCli
) -> None:
    """A network error is not a verdict: the bot starts, says it retries, and keeps taking alerts.
    When Telegram is back and rejects the token, that is final: exit 2 with the line."""
    api_port = free_port()  # nothing listens here yet
    bot = await BotProcess.start(zygote, tmp_path, **_real_mode(f"http://127.0.0.1:{api_port}"))
    try:
        retry = await bot.wait_for("retrying in")
        assert "Telegram is not reachable" in retry
        await bot.wait_for("remediator running")
        emu = BotAPIEmulator(token=OTHER_TOKEN)  # Telegram is back, and does not know this token
        await emu.start(port=api_port)
        try:
            result = await bot.finish()
        finally:
            await emu.stop()
    finally:
        if bot.proc.returncode is None:
            bot.proc.kill()
    assert_one_clear_line(result, "Telegram rejected the token: check TELEGRAM_BOT_TOKEN")
    assert "stopping" in result.output


# --------------------------------------------------------------------------- the database path


def _unwritable_db(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes anywhere a mode allows; sysfs refuses new files even to root
        return Path("/sys/remediator-test.db")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked / "remediator.db"


@pytest.mark.parametrize("case", ["directory", "unwritable", "parent is a file", "not sqlite"])
async def test_an_unusable_database_path_is_named_before_anything_starts(
    tmp_path: Path, case: str, decided: Decided
) -> None:
    plain = tmp_path / "notes.txt"
    plain.write_text("not a database, just notes\n", encoding="utf-8")
    path = {
        "directory": tmp_path,
        "unwritable": _unwritable_db(tmp_path),
        "parent is a file": plain / "remediator.db",
        "not sqlite": plain,
    }[case]
    result = await decided(tmp_path, DATABASE_PATH=str(path))
    assert_one_clear_line(result, "DATABASE_PATH", str(path))
    assert result.seconds < PROMPT_EXIT_S
    assert plain.read_text(encoding="utf-8") == "not a database, just notes\n"
    assert not databases_in(tmp_path)  # nothing left behind


# --------------------------------------------------------------------------- bad values


async def test_an_unknown_log_level_is_one_line_listing_the_valid_ones(tmp_path: Path, decided: Decided) -> None:
    result = await decided(tmp_path, LOG_LEVEL="LOUD")
    line = assert_one_clear_line(result, "LOG_LEVEL")
    assert "'LOUD'" in line
    for level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        assert level in line


async def test_approvers_that_are_not_ids_are_named_once_with_the_bad_values(
    tmp_path: Path, decided: Decided
) -> None:
    result = await decided(tmp_path, **_real_mode("http://127.0.0.1:9", TELEGRAM_APPROVERS="alice,111,bob"))
    line = assert_one_clear_line(result, "TELEGRAM_APPROVERS")
    assert "'alice'" in line and "'bob'" in line and "111" not in line.split("—")[0]
    assert "numeric" in line


# --------------------------------------------------------------------------- which .env


async def test_env_file_option_is_read_with_paths_relative_to_it_and_said_at_start(
    tmp_path: Path, zygote: ForkedCli
) -> None:
    """--env-file wins over ./.env; the start-up line names the file and says it is the demo;
    its relative paths are relative to it; a broken PATTERNS_FILE below stage 4 is a warning that
    says stage 4 will refuse it; a missing database directory is created and said so."""
    (tmp_path / ".env").write_text("LOG_LEVEL=LOUD\n", encoding="utf-8")  # would stop the start if read
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "broken.toml").write_text(BROKEN_PATTERNS, encoding="utf-8")
    (conf / "bot.env").write_text(
        "ROLLOUT_STAGE=2\nDATABASE_PATH=state/demo.db\nPATTERNS_FILE=broken.toml\n", encoding="utf-8"
    )
    env = {"WEBHOOK_PORT": str(free_port()), "DATABASE_PATH": ""}  # empty counts as unset: the file's is used
    bot = await BotProcess.start(zygote, tmp_path, "run", "--env-file", "conf/bot.env", **env)
    try:
        await bot.wait_for("Press Ctrl+C to stop.")
    finally:
        result = await bot.stop()
    assert result.returncode == 0, result.output
    assert "Traceback" not in result.output
    starting = next(line for line in result.lines_with("remediator starting"))
    assert str(conf / "bot.env") in starting and "local demo" in starting
    assert str(conf / "state" / "demo.db") in starting
    created = result.lines_with("created the missing directory")
    assert len(created) == 1 and str(conf / "state") in created[0]
    assert (conf / "state" / "demo.db").is_file()
    assert not (tmp_path / "state").exists()
    warning = result.lines_with("PATTERNS_FILE")
    assert len(warning) == 1 and "WARNING" in warning[0]
    assert "stage 4 will refuse" in warning[0] and "fix_code" in warning[0]


async def test_the_start_up_line_says_when_no_env_file_was_read(
    tmp_path: Path, busy_port: int, decided: Decided
) -> None:
    result = await decided(tmp_path, WEBHOOK_PORT=str(busy_port))
    starting = result.lines_with("remediator starting")
    assert len(starting) == 1 and "no .env read" in starting[0] and str(tmp_path) in starting[0]


async def test_remediator_env_file_variable_is_read_and_must_exist(tmp_path: Path, decided: Decided) -> None:
    named = tmp_path / "elsewhere.env"
    named.write_text("LOG_LEVEL=LOUD\n", encoding="utf-8")
    read = await decided(tmp_path, REMEDIATOR_ENV_FILE=str(named))
    assert_one_clear_line(read, "LOG_LEVEL", "'LOUD'")
    missing = await decided(tmp_path, REMEDIATOR_ENV_FILE=str(tmp_path / "typo.env"))
    assert_one_clear_line(missing, ENV_FILE_VARIABLE, "typo.env")
    assert "remediator local demo" not in missing.output  # a typo does not silently start the demo
    option_wins = await decided(tmp_path, "run", "--env-file", str(tmp_path / "nope.env"),
                                REMEDIATOR_ENV_FILE=str(named))
    assert_one_clear_line(option_wins, "--env-file", "nope.env")


# --------------------------------------------------------------------------- scripts/run


@pytest.fixture
def fake_checkout(tmp_path: Path) -> Path:
    """A copy of scripts/ in a checkout whose .venv is this one, with its own .env."""
    repo = tmp_path / "checkout"
    (repo / "scripts").mkdir(parents=True)
    for name in ("run", "bootstrap"):
        shutil.copy2(REPO / "scripts" / name, repo / "scripts" / name)
    (repo / "pyproject.toml").write_text("", encoding="utf-8")
    venv_bin = repo / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    (venv_bin / "remediator").write_text(
        f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m bot "$@"\n', encoding="utf-8"
    )
    (venv_bin / "remediator").chmod(0o755)
    (repo / ".venv" / ".installed").touch()  # newer than pyproject.toml: bootstrap installs nothing
    # A setting the output shows: a word the checkout's .env declares secret.
    (repo / ".env").write_text(r"REDACT_PATTERNS=zebra-\d+" + "\n", encoding="utf-8")
    return repo


def test_scripts_run_stays_in_the_callers_directory_and_reads_the_checkouts_env(
    fake_checkout: Path, tmp_path: Path
) -> None:
    caller = tmp_path / "somewhere"
    caller.mkdir()
    (caller / "alerts.jsonl").write_text("Error: connect ECONNREFUSED 127.0.0.1:6379 for zebra-42\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    result = subprocess.run(
        [str(fake_checkout / "scripts" / "run"), "triage", "--file", "alerts.jsonl"],
        cwd=caller, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "infrastructure" in result.stdout
    assert "zebra-42" not in result.stdout and "[REDACTED]" in result.stdout
