"""SIGKILL mid-stream, restart: no accepted alert lost, no card doubled.

The bot runs as a real process (`python -m bot run`, forked from an interpreter that has imported
the bot: see BotProcesses) against the Bot API emulator, so the kill is a real SIGKILL of a
process with open SQLite transactions and HTTP calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx

from bot.telegram_emulator import BotAPIEmulator
from tests.conftest import eventually, free_port
from tests.forked_cli import Forked, ForkedCli

ROOT = Path(__file__).resolve().parents[1]
CHAT = 5550001  # a private chat
TOKEN = "crash-test-webhook-token-000"


def alert(issue: int) -> bytes:
    return json.dumps({
        "text": "GlitchTip Alert",
        "attachments": [{"title": f"RuntimeError: worker {issue} crashed",
                         "title_link": f"https://gt.example.com/acme/issues/{500 + issue}", "text": None,
                         "fields": [{"title": "Project", "value": "jobs"}]}],
    }).encode()


def bot_env(emu: BotAPIEmulator, port: int, db: Path, rate_per_chat: int = 2) -> dict[str, str]:
    return {**os.environ, "TELEGRAM_BOT_TOKEN": "123456789:CRASH-crash-crash-crash-crash-crash",
            "TELEGRAM_API_BASE": emu.base_url, "TELEGRAM_CHAT_ID": str(CHAT), "TELEGRAM_APPROVERS": "1",
            "WEBHOOK_PORT": str(port), "WEBHOOK_TOKEN": TOKEN, "DATABASE_PATH": str(db),
            "TELEGRAM_RATE_PER_CHAT": str(rate_per_chat), "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}


class BotProcesses:
    """`python -m bot run`, each time its own process, forked from the interpreter this pytest worker
    keeps with the bot imported (the `forked_cli` fixture, tests/forked_cli.py): a fresh interpreter
    spends about two seconds of CPU on the imports before it runs. Only that start-up is shared;
    what the process runs, its database and connections, and the SIGKILL it gets are its own."""

    def __init__(self, cli: ForkedCli) -> None:
        self._cli = cli
        self._running: Forked | None = None

    def start(self, env: dict[str, str], cwd: Path) -> None:
        assert self._running is None, "one bot at a time"
        self._running = self._cli.spawn(["run"], cwd=cwd, env=env)

    def send(self, sig: signal.Signals) -> None:
        """Signal the running bot, without waiting (e.g. from inside a fake's request handler)."""
        assert self._running is not None
        self._running.send_signal(sig)

    def signal(self, sig: signal.Signals, timeout: float) -> int:
        """Send `sig` to the running bot and wait for it to end: its exit code."""
        self.send(sig)
        return self.ended(timeout)

    def ended(self, timeout: float) -> int:
        """Wait for the running bot to end (signalled here or from elsewhere): its exit code."""
        assert self._running is not None
        code = self._running.wait(timeout)
        self._running = None
        return code

    def close(self) -> None:
        if self._running is not None:
            self.signal(signal.SIGTERM, 30)


async def cards_recorded_as_sent(db: Path) -> int:
    """Cards the running bot has sent and committed as sent (read from its SQLite file)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'sent' AND kind = 'send'").fetchone()[0])
        except sqlite3.OperationalError:  # not migrated yet
            return 0


async def wait_up(client: httpx.AsyncClient, base: str, timeout: float = 60.0) -> None:
    """Until the webhook answers. Generous: importing aiogram alone takes seconds on a busy machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (await client.get(f"{base}/healthz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError("bot did not start")


async def test_sigkill_mid_stream_loses_nothing_and_doubles_no_card(tmp_path, forked_cli):
    distinct, total, kill_after = 6, 120, 30
    bodies = [(i % distinct, alert(i % distinct)) for i in range(total)]
    accepted = [0] * distinct
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    bots = BotProcesses(forked_cli)
    async with BotAPIEmulator() as emu, httpx.AsyncClient(timeout=5) as client:
        bots.start(bot_env(emu, port, tmp_path / "bot.db"), cwd=tmp_path)
        try:
            await wait_up(client, base)
            for sent, (issue, body) in enumerate(bodies):
                if sent == kill_after:
                    # Killed while cards go out (2 a second): two are delivered and recorded, the rest
                    # still queued, repeats still editing. The moment is chosen, not timed: between two
                    # sends, not inside one (a send Telegram took but the bot had not yet noted is the
                    # one window no bot can close: Telegram has no idempotency key).
                    await eventually(lambda: cards_recorded_as_sent(tmp_path / "bot.db"), until=lambda n: n >= 2,
                                     timeout=30)
                    assert bots.signal(signal.SIGKILL, timeout=10) == -signal.SIGKILL
                    assert len(emu.messages(CHAT)) < distinct, "the kill came after every card was out"
                    # After the restart the pace no longer matters to the claim: the catch-up goes out
                    # at Telegram's own group pace instead of two a second.
                    bots.start(bot_env(emu, port, tmp_path / "bot.db", rate_per_chat=20), cwd=tmp_path)
                    await wait_up(client, base)
                response = await client.post(f"{base}/webhook/glitchtip/{TOKEN}", content=body,
                                             headers={"Content-Type": "application/json"})
                if response.status_code == 202:
                    accepted[issue] += 1

            def settled() -> bool:
                cards = emu.messages(CHAT)
                return len(cards) >= distinct and all(
                    any(f"worker {i} crashed" in c.plain_text and f"×{accepted[i]}" in c.plain_text for c in cards)
                    for i in range(distinct)
                )

            await emu.wait_for(settled, timeout=60)
            cards = emu.messages(CHAT)
            for i in range(distinct):
                assert sum(f"worker {i} crashed" in c.plain_text for c in cards) == 1, f"card {i} doubled or lost"
            db = sqlite3.connect(tmp_path / "bot.db")
            kept = db.execute("SELECT SUM(count) FROM incidents").fetchone()[0]
            not_done = db.execute("SELECT COUNT(*) FROM inbox WHERE state != 'done'").fetchone()[0]
            db.close()
            assert kept == sum(accepted) == total, "every accepted alert is counted exactly once"
            assert not_done == 0
        finally:
            bots.close()
