"""Photos and documents through the outbox, the sender and the Bot API emulator, as a chat sees them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiogram import Bot
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest, TelegramEntityTooLarge
from aiogram.types import BufferedInputFile

from bot.card_publisher import CardPublisher, cut_html
from bot.rollout import RolloutPolicy, Stage
from bot.telegram.sender import OutboxSender
from bot.telegram.session import BotSession
from bot.telegram_emulator import BotAPIEmulator, parse_html
from storage.db import Database
from storage.outbox import OutboxRepository
from tests.pngs import grey_png

CHAT = -100555
TOKEN = "123456789:MEDIA-media-media-media-media-media"


@dataclass
class Rig:
    emu: BotAPIEmulator
    db: Database
    sender: OutboxSender
    bot: Bot
    cards: CardPublisher
    path: Path

    async def queue(self, **kwargs: object) -> None:
        async with self.db.transaction() as tx:
            await self.cards.send_file(tx, **kwargs)  # type: ignore[arg-type]

    async def drain(self) -> None:
        for _ in range(100):
            if await OutboxRepository(self.db).depth() == 0:
                return
            await self.sender.send_due()
            self.sender._pace.clear()  # the pacing and back-off times pass (the test does not sit them out)
            await asyncio.sleep(0.01)
        raise AssertionError("outbox did not drain")


def new_bot(emu: BotAPIEmulator) -> Bot:
    return Bot(TOKEN, session=BotSession(TelegramAPIServer.from_base(emu.base_url)))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with BotAPIEmulator() as emu:
        path = tmp_path / "media.db"
        db = await Database(path).connect()
        bot = new_bot(emu)
        sender = OutboxSender(db, bot, rate_per_chat=100, group_per_minute=1000, rate_global=1000)
        yield Rig(emu, db, sender, bot, CardPublisher(CHAT, RolloutPolicy(Stage(2))), path)
        await bot.session.close()
        await db.close()


async def test_a_photo_and_a_document_arrive_once_with_their_captions_and_bytes(rig):
    chart = grey_png(300, 200)
    report = b"# Investigation\n\nThe cache was cold.\n"
    await rig.queue(kind="photo", filename="chart.png", content=chart, caption="<b>14 days</b> &amp; trend")
    await rig.queue(kind="document", filename="report.md", content=report, caption="Report for <i>#7</i>",
                    buttons=[[("👍", "vote:1:up"), ("👎", "vote:1:down")]])
    await rig.drain()

    photo, document = rig.emu.messages(CHAT)
    assert photo.media is not None and photo.media.kind == "photo"
    assert (photo.media.width, photo.media.height, photo.media.content) == (300, 200, chart)
    assert photo.plain_text == "14 days & trend" and photo.entities[0]["type"] == "bold"
    assert document.media is not None and document.media.kind == "document"
    assert (document.media.file_name, document.media.content) == ("report.md", report)
    assert document.plain_text == "Report for #7" and document.button_texts == ["👍", "👎"]
    assert rig.emu.call_count("sendPhoto") == 1 and rig.emu.call_count("sendDocument") == 1
    # The bytes are retrievable from another process, through the control API.
    async with httpx.AsyncClient() as client:
        got = await client.get(f"{rig.emu.base_url}/_emulator/file",
                               params={"chat_id": CHAT, "message_id": document.message_id})
        state = (await client.get(f"{rig.emu.base_url}/_emulator/state")).json()
    assert got.status_code == 200 and got.content == report
    assert state["messages"][str(CHAT)][0]["media"]["file_size"] == len(chart)
    # Delivered: the stored copy is gone, the database does not grow with every chart.
    row = await rig.db.fetchone("SELECT COUNT(*) FROM outbox_files")
    assert row[0] == 0


async def test_an_outage_and_a_restart_delay_files_but_never_drop_or_double_them(rig):
    rig.emu.set_down(True)
    await rig.queue(kind="photo", filename="chart.png", content=grey_png(40, 30), caption="chart")
    await rig.queue(kind="document", filename="report.md", content=b"report", caption="report")
    for _ in range(4):
        await rig.sender.send_due()
        rig.sender._pace.clear()
    assert rig.emu.messages(CHAT) == [] and rig.emu.call_count("sendPhoto", ok=False) >= 2
    # The process dies during the outage; a new one finds both files in SQLite and sends them.
    await rig.bot.session.close()
    await rig.db.close()
    rig.db = await Database(rig.path).connect()
    rig.bot = new_bot(rig.emu)
    rig.sender = OutboxSender(rig.db, rig.bot, rate_per_chat=100, group_per_minute=1000, rate_global=1000)
    rig.emu.set_down(False)
    await rig.drain()
    assert [(m.media.kind if m.media else None, m.plain_text) for m in rig.emu.messages(CHAT)] == [
        ("photo", "chart"), ("document", "report")]
    assert rig.emu.call_count("sendPhoto", ok=True) == 1 and rig.emu.call_count("sendDocument", ok=True) == 1


async def test_a_long_caption_is_cut_to_telegrams_limit_and_stays_valid_html(rig):
    caption = "<b>Digest</b>\n" + "<i>" + "é" * 600 + "</i> " + "<code>" + "x" * 900 + "</code>"
    await rig.queue(kind="photo", filename="chart.png", content=grey_png(20, 20), caption=caption)
    await rig.drain()
    [msg] = rig.emu.messages(CHAT)
    assert len(msg.plain_text) == 1024 and msg.plain_text.endswith("…")
    assert msg.plain_text.startswith("Digest\néé")
    assert {e["type"] for e in msg.entities} == {"bold", "italic", "code"}  # tags closed, not dropped
    assert cut_html("<b>short</b>", 1024) == "<b>short</b>"


async def test_a_caption_telegram_cannot_parse_is_sent_as_plain_text_not_lost(rig):
    async with rig.db.transaction() as tx:  # bypass the publisher: a row with broken markup
        await OutboxRepository(tx).add_file(CHAT, {"text": "<b>broken <i>html</b>", "parse_mode": "HTML"},
                                            kind="document", filename="r.txt", content=b"r")
    await rig.drain()
    [msg] = rig.emu.messages(CHAT)
    assert msg.media is not None and msg.plain_text == "broken html" and msg.parse_mode is None


async def test_files_telegram_would_refuse_are_refused_before_they_are_queued(rig):
    async with rig.db.transaction() as tx:
        with pytest.raises(ValueError, match="10 MB"):
            await rig.cards.send_file(tx, kind="photo", filename="big.png", content=b"x" * (10 * 2**20 + 1),
                                      caption="")
        with pytest.raises(ValueError, match="kind"):
            await rig.cards.send_file(tx, kind="video", filename="v.mp4", content=b"x", caption="")
    assert await OutboxRepository(rig.db).depth() == 0


async def _refusal(call) -> str:
    with pytest.raises((TelegramBadRequest, TelegramEntityTooLarge)) as caught:
        await call
    return str(caught.value.message)


async def test_the_emulator_refuses_what_telegram_refuses(rig):
    bot = rig.bot

    def photo(content: bytes, caption: str | None = None):
        return bot.send_photo(CHAT, BufferedInputFile(content, "p.png"), caption=caption, parse_mode="HTML")

    assert "message caption is too long" in await _refusal(photo(grey_png(10, 10), "a" * 1025))
    assert "can't parse entities" in await _refusal(photo(grey_png(10, 10), "<b>open"))
    assert "PHOTO_INVALID_DIMENSIONS" in await _refusal(photo(grey_png(9000, 1001)))  # width + height > 10000
    assert "PHOTO_INVALID_DIMENSIONS" in await _refusal(photo(grey_png(420, 20)))  # ratio 21 > 20
    assert "IMAGE_PROCESS_FAILED" in await _refusal(photo(b"not an image at all"))
    assert "PHOTO_SAVE_FILE_INVALID" in await _refusal(photo(grey_png(10, 10) + b"\0" * (10 * 2**20)))
    too_big = bot.send_document(CHAT, BufferedInputFile(b"\0" * (50 * 2**20 + 1), "big.bin"))
    assert "Request Entity Too Large" in await _refusal(too_big)
    assert rig.emu.messages(CHAT) == []
    # At the limits, accepted: 1024 characters of caption (counted after parsing), a 20:1 photo.
    ok = await photo(grey_png(400, 20), "<b>" + "a" * 1024 + "</b>")
    assert ok.photo is not None and ok.photo[-1].width == 400 and ok.caption == "a" * 1024
    assert parse_html("<b>" + "a" * 1024 + "</b>")[0] == rig.emu.messages(CHAT)[0].plain_text


async def test_a_document_too_large_for_telegram_is_parked_at_the_first_413(rig):
    # Telegram answers 413 (its limit is below ours, say): aiogram calls that a network error. One 413
    # is enough: a second upload of the same bytes would get the same answer, so there is none.
    rig.emu.fail("sendDocument", 413, times=1)
    await rig.queue(kind="document", filename="big.bin", content=b"big", caption="big")
    await rig.queue(kind="document", filename="next.txt", content=b"next", caption="next")
    await rig.drain()
    row = await rig.db.fetchone("SELECT state, attempts, last_error FROM outbox ORDER BY id LIMIT 1")
    assert row["state"] == "failed" and row["attempts"] == 1
    assert row["last_error"].startswith("refused for good, not retried") and "Too Large" in row["last_error"]
    assert rig.emu.call_count("sendDocument", ok=False) == 1  # the same bytes were not uploaded again
    assert [m.plain_text for m in rig.emu.messages(CHAT)] == ["next"]  # the chat was not blocked


async def test_a_photo_telegram_cannot_process_is_parked_at_the_first_refusal(rig):
    await rig.queue(kind="photo", filename="strip.png", content=grey_png(420, 20), caption="ratio 21:1")
    await rig.queue(kind="photo", filename="chart.png", content=grey_png(40, 30), caption="chart")
    await rig.drain()
    row = await rig.db.fetchone("SELECT state, attempts, last_error FROM outbox ORDER BY id LIMIT 1")
    assert row["state"] == "failed" and row["attempts"] == 1
    assert "not retried" in row["last_error"] and "PHOTO_INVALID_DIMENSIONS" in row["last_error"]
    assert rig.emu.call_count("sendPhoto", ok=False) == 1
    assert [m.plain_text for m in rig.emu.messages(CHAT)] == ["chart"]


async def _stored_bytes(db: Database) -> list[tuple[int, str, int]]:
    rows = await db.fetchall("SELECT o.id, o.state, length(f.content) AS n FROM outbox o "
                             "JOIN outbox_files f ON f.outbox_id = o.id ORDER BY o.id")
    return [(r["id"], r["state"], r["n"]) for r in rows]


async def test_a_parked_file_keeps_its_row_but_not_its_bytes(rig):
    rig.emu.fail("sendDocument", 413, times=1)
    await rig.queue(kind="document", filename="big.bin", content=b"x" * 200_000, caption="big")
    await rig.drain()
    row = await rig.db.fetchone("SELECT state, last_error, payload FROM outbox")
    assert row["state"] == "failed" and "Too Large" in row["last_error"] and "big.bin" in row["payload"]
    assert await _stored_bytes(rig.db) == []  # the database does not keep 200 kB nobody will send


async def test_bytes_left_by_rows_parked_before_are_deleted_when_the_sender_starts(rig):
    # A database from before parked rows dropped their bytes: one parked, one sent, one still to send.
    async with rig.db.transaction() as tx:
        outbox = OutboxRepository(tx)
        parked = await outbox.add_file(CHAT, {"text": "p"}, kind="document", filename="p.md", content=b"p" * 5000)
        sent = await outbox.add_file(CHAT, {"text": "s"}, kind="document", filename="s.md", content=b"s" * 50)
        waiting = await outbox.add_file(CHAT, {"text": "w"}, kind="document", filename="w.md", content=b"w" * 7)
        await tx.execute("UPDATE outbox SET state = 'failed' WHERE id = ?", (parked,))
        await tx.execute("UPDATE outbox SET state = 'sent' WHERE id = ?", (sent,))
    assert len(await _stored_bytes(rig.db)) == 3
    rig.emu.set_down(True)  # the start's cleanup must not wait for Telegram, nor touch what waits to be sent
    run = asyncio.create_task(rig.sender.run())
    try:
        for _ in range(500):
            if len(await _stored_bytes(rig.db)) < 3:
                break
            await asyncio.sleep(0.01)
    finally:
        rig.sender.stop()
        await run
    assert await _stored_bytes(rig.db) == [(waiting, "pending", 7)]
    assert [r["state"] for r in await rig.db.fetchall("SELECT state FROM outbox ORDER BY id")] == [
        "failed", "sent", "pending"]
