"""The outbox sender against the Bot API emulator: Telegram's awkward answers handled."""

from __future__ import annotations

import json

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.telegram.sender import OutboxSender
from bot.telegram_emulator import BotAPIEmulator
from storage.db import Database
from storage.outbox import OutboxRepository

CHAT = -100777


async def _sender(tmp_path, emu: BotAPIEmulator) -> tuple[Database, OutboxSender, Bot]:
    db = await Database(tmp_path / "o.db").connect()
    bot = Bot("123456789:OUTBOX-outbox-outbox-outbox-outbox",
              session=AiohttpSession(api=TelegramAPIServer.from_base(emu.base_url)))
    return db, OutboxSender(db, bot, rate_per_chat=100, group_per_minute=1000, rate_global=1000), bot


async def _drain(sender: OutboxSender, db: Database) -> None:
    for _ in range(50):
        if await OutboxRepository(db).depth() == 0:
            return
        await sender.send_due()
        await __import__("asyncio").sleep(0.02)
    raise AssertionError("outbox did not drain")


async def test_cant_parse_entities_is_resent_as_plain_text(tmp_path):
    async with BotAPIEmulator() as emu:
        db, sender, bot = await _sender(tmp_path, emu)
        await OutboxRepository(db).add(CHAT, {"text": "<b>broken <i>html</b> & more", "parse_mode": "HTML",
                                              "buttons": []})
        await _drain(sender, db)
        [msg] = emu.messages(CHAT)
        assert msg.plain_text == "broken html & more" and msg.parse_mode is None
        await bot.session.close()
        await db.close()


async def test_message_not_modified_counts_as_done_and_deleted_card_is_reposted(tmp_path):
    async with BotAPIEmulator() as emu:
        db, sender, bot = await _sender(tmp_path, emu)
        outbox = OutboxRepository(db)
        payload = {"text": "<b>same</b>", "parse_mode": "HTML", "buttons": [[["OK", "rs:1:"]]]}
        await outbox.add(CHAT, payload)
        await _drain(sender, db)
        [msg] = emu.messages(CHAT)
        await outbox.add(CHAT, payload, kind="edit", message_id=msg.message_id)  # identical edit
        await _drain(sender, db)
        row = await db.fetchone("SELECT state, last_error FROM outbox ORDER BY id DESC LIMIT 1")
        assert row["state"] == "sent"
        await outbox.add(CHAT, {"text": "new", "parse_mode": "HTML", "buttons": []}, kind="edit", message_id=999)
        await _drain(sender, db)
        assert [m.plain_text for m in emu.messages(CHAT)] == ["same", "new"]  # re-posted, not lost
        await bot.session.close()
        await db.close()


async def test_permanent_errors_are_parked_after_a_few_tries_and_do_not_block_the_chat(tmp_path):
    async with BotAPIEmulator() as emu:
        db, sender, bot = await _sender(tmp_path, emu)
        outbox = OutboxRepository(db)
        bad = await outbox.add(CHAT, {"text": "x", "parse_mode": "HTML", "buttons": [[["B", "d" * 80]]]})
        await outbox.add(CHAT, {"text": "after", "parse_mode": "HTML", "buttons": []})
        for _ in range(3):
            await sender.send_due()
            sender._pace.clear()  # skip the retry delay in the test
        await _drain(sender, db)
        row = await db.fetchone("SELECT state, last_error FROM outbox WHERE id = ?", (bad,))
        assert row["state"] == "failed" and "BUTTON_DATA_INVALID" in row["last_error"]
        assert [m.plain_text for m in emu.messages(CHAT)] == ["after"]
        await bot.session.close()
        await db.close()


async def test_a_payload_replaced_while_sending_is_sent_again_as_an_edit(tmp_path):
    async with BotAPIEmulator() as emu:
        db, sender, bot = await _sender(tmp_path, emu)
        outbox = OutboxRepository(db)
        item_id = await outbox.add(CHAT, {"text": "v1", "parse_mode": "HTML", "buttons": []})
        [item] = await outbox.pending()
        # A newer rendering lands between the read and the send (a repeat during the HTTP call).
        await db.execute("UPDATE outbox SET payload = ?, version = version + 1 WHERE id = ?",
                         (json.dumps({"text": "v2", "parse_mode": "HTML", "buttons": []}), item_id))
        await sender._deliver(item)
        row = await db.fetchone("SELECT state, kind FROM outbox WHERE id = ?", (item_id,))
        assert row["state"] == "pending"
        await db.close()
        await bot.session.close()


async def test_group_upgraded_to_supergroup_moves_the_queue_to_the_new_chat(tmp_path):
    async with BotAPIEmulator() as emu:
        db, sender, bot = await _sender(tmp_path, emu)
        outbox = OutboxRepository(db)
        emu.migrate_chat(CHAT, -1009999)
        for text in ("one", "two"):
            await outbox.add(CHAT, {"text": text, "parse_mode": "HTML", "buttons": []})
        await _drain(sender, db)
        await outbox.add(CHAT, {"text": "three", "parse_mode": "HTML", "buttons": []})  # queued to the old id
        await _drain(sender, db)
        assert [m.plain_text for m in emu.messages(-1009999)] == ["one", "two", "three"]
        await bot.session.close()
        await db.close()


async def test_a_delivery_noted_before_a_crash_is_recorded_not_resent(tmp_path):
    from bot.telegram.sent_journal import SentJournal

    async with BotAPIEmulator() as emu:
        db, sender, bot = await _sender(tmp_path, emu)
        outbox = OutboxRepository(db)
        await outbox.add(CHAT, {"text": "card", "parse_mode": "HTML", "buttons": []})
        [item] = await outbox.pending()
        # Telegram accepted it and the journal noted it, then the process died before the commit.
        message = await bot.send_message(CHAT, "card")
        journal = SentJournal(tmp_path / "o.db.sent-journal")
        journal.record(item.id, item.version, message.message_id)
        sender.journal = journal
        assert await sender.replay_journal() == 1
        await _drain(sender, db)
        assert [m.plain_text for m in emu.messages(CHAT)] == ["card"]  # not sent twice
        assert journal.deliveries() == []
        journal.close()
        await bot.session.close()
        await db.close()
