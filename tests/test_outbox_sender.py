"""The outbox sender against the Bot API emulator: Telegram's awkward answers handled."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.methods import Response
from aiogram.types import User

from bot.telegram import session as session_module
from bot.telegram.sender import OutboxSender
from bot.telegram.sent_journal import SentJournal
from bot.telegram.session import BotSession
from bot.telegram_emulator import BotAPIEmulator
from storage.db import Database
from storage.outbox import OutboxRepository

CHAT = -100777


@dataclass
class Rig:
    emu: BotAPIEmulator
    db: Database
    sender: OutboxSender
    bot: Bot

    @property
    def outbox(self) -> OutboxRepository:
        return OutboxRepository(self.db)


@pytest.fixture
async def rig(tmp_path) -> AsyncIterator[Rig]:
    async with BotAPIEmulator() as emu:
        db = await Database(tmp_path / "o.db").connect()
        bot = Bot("123456789:OUTBOX-outbox-outbox-outbox-outbox",
                  session=BotSession(TelegramAPIServer.from_base(emu.base_url)))
        sender = OutboxSender(db, bot, rate_per_chat=100, group_per_minute=1000, rate_global=1000)
        yield Rig(emu, db, sender, bot)
        await bot.session.close()
        await db.close()


async def _drain(sender: OutboxSender, db: Database) -> None:
    for _ in range(50):
        if await OutboxRepository(db).depth() == 0:
            return
        await sender.send_due()
        await asyncio.sleep(0.02)
    raise AssertionError("outbox did not drain")


async def test_cant_parse_entities_is_resent_as_plain_text(rig):
    await rig.outbox.add(CHAT, {"text": "<b>broken <i>html</b> & more", "parse_mode": "HTML",
                                          "buttons": []})
    await _drain(rig.sender, rig.db)
    [msg] = rig.emu.messages(CHAT)
    assert msg.plain_text == "broken html & more" and msg.parse_mode is None


async def test_message_not_modified_counts_as_done_and_deleted_card_is_reposted(rig):
    outbox = rig.outbox
    payload = {"text": "<b>same</b>", "parse_mode": "HTML", "buttons": [[["OK", "rs:1:"]]]}
    await outbox.add(CHAT, payload)
    await _drain(rig.sender, rig.db)
    [msg] = rig.emu.messages(CHAT)
    await outbox.add(CHAT, payload, kind="edit", message_id=msg.message_id)  # identical edit
    await _drain(rig.sender, rig.db)
    row = await rig.db.fetchone("SELECT state, last_error FROM outbox ORDER BY id DESC LIMIT 1")
    assert row["state"] == "sent"
    await outbox.add(CHAT, {"text": "new", "parse_mode": "HTML", "buttons": []}, kind="edit", message_id=999)
    await _drain(rig.sender, rig.db)
    assert [m.plain_text for m in rig.emu.messages(CHAT)] == ["same", "new"]  # re-posted, not lost


async def test_permanent_errors_are_parked_after_a_few_tries_and_do_not_block_the_chat(rig):
    outbox = rig.outbox
    bad = await outbox.add(CHAT, {"text": "x", "parse_mode": "HTML", "buttons": [[["B", "d" * 80]]]})
    await outbox.add(CHAT, {"text": "after", "parse_mode": "HTML", "buttons": []})
    for _ in range(3):
        await rig.sender.send_due()
        rig.sender._pace.clear()  # skip the retry delay in the test
    await _drain(rig.sender, rig.db)
    row = await rig.db.fetchone("SELECT state, last_error FROM outbox WHERE id = ?", (bad,))
    assert row["state"] == "failed" and "BUTTON_DATA_INVALID" in row["last_error"]
    assert [m.plain_text for m in rig.emu.messages(CHAT)] == ["after"]


async def test_a_payload_replaced_while_sending_is_sent_again_as_an_edit(rig):
    outbox = rig.outbox
    item_id = await outbox.add(CHAT, {"text": "v1", "parse_mode": "HTML", "buttons": []})
    [item] = await outbox.pending()
    # A newer rendering lands between the read and the send (a repeat during the HTTP call).
    await rig.db.execute("UPDATE outbox SET payload = ?, version = version + 1 WHERE id = ?",
                     (json.dumps({"text": "v2", "parse_mode": "HTML", "buttons": []}), item_id))
    await rig.sender._deliver(item)
    row = await rig.db.fetchone("SELECT state, kind FROM outbox WHERE id = ?", (item_id,))
    assert row["state"] == "pending"


async def test_group_upgraded_to_supergroup_moves_the_queue_to_the_new_chat(rig):
    outbox = rig.outbox
    rig.emu.migrate_chat(CHAT, -1009999)
    for text in ("one", "two"):
        await outbox.add(CHAT, {"text": text, "parse_mode": "HTML", "buttons": []})
    await _drain(rig.sender, rig.db)
    await outbox.add(CHAT, {"text": "three", "parse_mode": "HTML", "buttons": []})  # queued to the old id
    await _drain(rig.sender, rig.db)
    assert [m.plain_text for m in rig.emu.messages(-1009999)] == ["one", "two", "three"]


async def test_a_delivery_noted_before_a_crash_is_recorded_not_resent(rig, tmp_path):
    await rig.outbox.add(CHAT, {"text": "card", "parse_mode": "HTML", "buttons": []})
    [item] = await rig.outbox.pending()
    # Telegram accepted it and the journal noted it, then the process died before the commit.
    message = await rig.bot.send_message(CHAT, "card")
    journal = SentJournal(tmp_path / "o.db.sent-journal")
    journal.record(item.id, item.version, message.message_id)
    rig.sender.journal = journal
    assert await rig.sender.replay_journal() == 1
    await _drain(rig.sender, rig.db)
    assert [m.plain_text for m in rig.emu.messages(CHAT)] == ["card"]  # not sent twice
    assert journal.deliveries() == []
    journal.close()


async def test_a_failed_record_after_delivery_is_retried_without_resending(rig, monkeypatch):
    await rig.outbox.add(CHAT, {"text": "once", "parse_mode": "HTML", "buttons": []})
    real = OutboxRepository.mark_sent
    calls = {"n": 0}

    async def flaky(self, item):
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("database is locked")
        return await real(self, item)

    monkeypatch.setattr(OutboxRepository, "mark_sent", flaky)
    with pytest.raises(sqlite3.OperationalError):
        await rig.sender.send_due()  # delivered, then recording it failed
    await _drain(rig.sender, rig.db)
    assert [m.plain_text for m in rig.emu.messages(CHAT)] == ["once"]
    assert rig.emu.call_count("sendMessage") == 1


async def test_repeated_429s_and_5xx_wait_as_telegram_asks_then_deliver_everything_once_in_order(rig):
    rig.emu.fail("sendMessage", 429, times=2, retry_after=3)
    rig.emu.fail("sendMessage", 500, times=3)
    for text in ("one", "two", "three"):
        await rig.outbox.add(CHAT, {"text": text, "parse_mode": "HTML", "buttons": []})
    waits = []
    for _ in range(5):
        assert await rig.sender.send_due() == 0.0  # an attempt went out, and was refused
        waits.append(round(await rig.sender.send_due(), 1))  # how long the sender now waits before the next
        rig.sender._pace.clear()  # that time passes (the test does not sit it out)
    assert waits == [3.0, 3.0, 1.0, 2.0, 4.0]  # retry_after honoured each time; 5xx back off doubling
    await _drain(rig.sender, rig.db)
    assert [m.plain_text for m in rig.emu.messages(CHAT)] == ["one", "two", "three"]
    assert rig.emu.call_count("sendMessage", ok=False) == 5 and rig.emu.call_count("sendMessage", ok=True) == 3


# ---------------------------------------------------------------- the session (bot/telegram/session.py)


def test_the_bot_session_is_aiogram_session_with_one_ca_bundle_load_per_process():
    api = TelegramAPIServer.from_base("http://127.0.0.1:1")
    ours, aiograms = BotSession(api), AiohttpSession(api=api)
    # BotSession skips AiohttpSession.__init__: it must still set everything that one sets.
    assert set(vars(aiograms)) <= set(vars(ours))
    assert ours._connector_init.keys() == aiograms._connector_init.keys()
    assert BotSession(api)._connector_init["ssl"] is ours._connector_init["ssl"]


async def test_each_answer_type_is_validated_by_a_model_the_session_keeps(rig):
    await rig.bot.get_me()
    # pydantic's own cache of Response[User] is weak: a garbage collection would drop it, and the
    # next answer would build it again. The session holds every one it used (a full collection
    # here to watch it survive would cost a few tenths of a second of CPU).
    assert any(model is Response[User] for model in session_module._RESPONSE_MODELS.values())
