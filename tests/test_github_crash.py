"""SIGKILL right after GitHub answered the create, restart: still one issue, and the card links it.

The bot runs as a real process (`python -m bot run`, forked from an interpreter that has imported
the bot: tests/test_e2e_crash.py's BotProcesses) against the Bot API emulator and the fake
GitHub. The fake kills the bot the moment its answer to `POST /repos/acme/api/issues` has left:
the issue exists on GitHub, and the bot has not committed that it does. The fake's search index
lags behind for the whole test (as GitHub's does for new issues), so the restarted bot must find
its marker in the repository's recent issues, not only in the search.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from pathlib import Path

import httpx

from bot.telegram_emulator import BotAPIEmulator
from tests.conftest import free_port
from tests.github_fake import REPO, TOKEN, FakeGitHub
from tests.test_e2e_crash import BotProcesses, wait_up

ROOT = Path(__file__).resolve().parents[1]
CHAT = 5550002  # a private chat
APPROVER = 1
WEBHOOK = "github-crash-webhook-token-00"


def bot_env(emu: BotAPIEmulator, fake: FakeGitHub, port: int, db: Path) -> dict[str, str]:
    return {**os.environ, "TELEGRAM_BOT_TOKEN": "123456789:GHCRASH-crash-crash-crash-crash-cr",
            "TELEGRAM_API_BASE": emu.base_url, "TELEGRAM_CHAT_ID": str(CHAT), "TELEGRAM_APPROVERS": str(APPROVER),
            "WEBHOOK_PORT": str(port), "WEBHOOK_TOKEN": WEBHOOK, "DATABASE_PATH": str(db), "LOG_LEVEL": "WARNING",
            "GITHUB_TOKEN": TOKEN, "GITHUB_REPO": REPO, "GITHUB_API_URL": fake.base_url, "PYTHONPATH": str(ROOT)}


def intent(db: Path) -> tuple[str, str | None, int | None]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        state, sent, number = conn.execute(
            "SELECT state, create_sent_at, number FROM github_issues WHERE incident_id = 1"
        ).fetchone()
    return state, sent, number


async def test_sigkill_after_githubs_answer_leaves_one_issue_linked_after_restart(tmp_path, forked_cli):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db = tmp_path / "bot.db"
    fake = await FakeGitHub().start()
    fake.search_lag_s = 3600.0
    bots = BotProcesses(forked_cli)
    async with BotAPIEmulator() as emu, httpx.AsyncClient(timeout=5) as client:
        bots.start(bot_env(emu, fake, port, db), cwd=tmp_path)
        fake.after_create = lambda issue: bots.send(signal.SIGKILL)
        try:
            await wait_up(client, base)
            response = await client.post(f"{base}/webhook/generic/{WEBHOOK}", json={
                "title": "KeyError: 'customer_id'", "project": "billing-api", "environment": "production",
                "stacktrace": 'File "/srv/app/billing/charge.py", line 88, in charge\nKeyError: \'customer_id\''})
            assert response.status_code == 202
            card = await emu.wait_for(lambda: next(iter(emu.messages(CHAT)), None), timeout=60)
            assert "Proposal: file a GitHub issue in acme/api" in card.plain_text
            approve = next(b["callback_data"] for row in card.buttons for b in row
                           if b["callback_data"].startswith("ap:"))
            await emu.wait_for_answer(emu.press_button(CHAT, card.message_id, APPROVER, approve, first_name="Ann"),
                                      timeout=30)
            assert await asyncio.to_thread(bots.ended, 60) == -signal.SIGKILL
            assert len(fake.issues()) == 1
            state, sent, number = intent(db)
            assert (state, number) == ("pending", None) and sent is not None  # killed between answer and commit

            fake.after_create = None
            bots.start(bot_env(emu, fake, port, db), cwd=tmp_path)
            linked = await emu.wait_for(
                lambda: (m := emu.message(CHAT, card.message_id)) and "GitHub issue acme/api#1" in m.plain_text and m,
                timeout=60,
            )
            assert 'href="https://github.com/acme/api/issues/1"' in linked.text
            assert len(fake.issues()) == 1 and len(fake.creates()) == 1  # found by its marker, not made again
            assert fake.calls("GET", "/repos/acme/api/issues")  # the search lagged: the recent issues had it
            assert intent(db)[0] == "filed"
            with contextlib.closing(sqlite3.connect(db)) as conn:
                outcomes = [r[0] for r in conn.execute("SELECT outcome FROM audit WHERE action = 'github.issue'")]
            assert outcomes == ["linked existing"]
        finally:
            await asyncio.to_thread(bots.close)  # the bot's shutdown may still talk to the emulator
            await fake.stop()
