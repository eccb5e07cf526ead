"""The Telegram Bot API emulator, exercised through the real aiogram client over HTTP.

The emulator is only worth something if aiogram cannot tell it from Telegram, so these
tests never call its handlers directly: they go through ``Bot`` / ``Dispatcher`` and a
real socket, and check both what aiogram sees and what the emulator recorded.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.telegram.session import BotSession
from bot.telegram_emulator import (
    BotAPIEmulator,
    EmulatorEvent,
    HTMLParseError,
    format_event,
    parse_html,
    utf16_len,
)

TOKEN = "123456:TEST-TOKEN"
GROUP = -100
USER = 42


def keyboard(*rows: list[tuple[str, str]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=t, callback_data=d) for t, d in row] for row in rows]
    )


APPROVE = keyboard([("Approve", "approve:1"), ("Reject", "reject:1")])


class ManualClock:
    """The emulator's monotonic clock, moved by hand: ages queries and ends outages without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_bot(emu: BotAPIEmulator, token: str = TOKEN) -> Bot:
    return Bot(token, session=BotSession(TelegramAPIServer.from_base(emu.base_url)))


async def close_bot(bot: Bot) -> None:
    await bot.session.close()  # BotSession: no wait for TLS teardown over plain http


@pytest.fixture
async def emu() -> AsyncIterator[BotAPIEmulator]:
    async with BotAPIEmulator() as emulator:
        yield emulator


@pytest.fixture
async def bot(emu: BotAPIEmulator) -> AsyncIterator[Bot]:
    b = make_bot(emu)
    yield b
    await close_bot(b)


# ---------------------------------------------------------------- sending and editing


async def test_send_and_edit_read_back_state(emu: BotAPIEmulator, bot: Bot) -> None:
    assert emu.base_url.startswith("http://127.0.0.1:")
    me = await bot.get_me()
    assert me.id == 123456 and me.is_bot

    sent = await bot.send_message(GROUP, "<b>Disk full</b> on db-1 &amp; db-2", parse_mode="HTML", reply_markup=APPROVE)
    assert sent.text == "Disk full on db-1 & db-2"
    assert sent.chat.type == "group" and sent.from_user is not None and sent.from_user.id == 123456
    assert sent.entities is not None and sent.entities[0].type == "bold"
    assert sent.reply_markup is not None and sent.reply_markup.inline_keyboard[0][0].callback_data == "approve:1"

    edited = await bot.edit_message_text(
        "<i>Approved</i> by Ann", chat_id=GROUP, message_id=sent.message_id, parse_mode="HTML"
    )
    assert isinstance(edited, Message) and edited.edit_date is not None

    [msg] = emu.messages(GROUP)
    assert msg.message_id == sent.message_id
    assert msg.text == "<i>Approved</i> by Ann"
    assert msg.plain_text == "Approved by Ann"
    assert msg.parse_mode == "HTML"
    assert msg.reply_markup is None  # an edit without reply_markup drops the keyboard, as in Telegram
    assert msg.edit_count == 1
    assert msg.history == ["<b>Disk full</b> on db-1 &amp; db-2", "<i>Approved</i> by Ann"]

    assert [c.method for c in emu.calls] == ["getMe", "sendMessage", "editMessageText"]
    assert emu.calls[1].params["chat_id"] == GROUP and emu.calls[1].token == TOKEN
    assert emu.calls[1].params["reply_markup"]["inline_keyboard"][0][1]["text"] == "Reject"
    assert emu.call_count("sendMessage") == 1 and emu.call_count() == 3


async def test_private_chats_and_per_chat_message_ids(emu: BotAPIEmulator, bot: Bot) -> None:
    emu.send_user_message(USER, USER, "hello", first_name="Ann", username="ann")
    sent = await bot.send_message(USER, "hi")
    other = await bot.send_message(-1001234567890, "x")
    assert sent.chat.type == "private" and sent.chat.first_name == "Ann"
    assert sent.message_id == 2  # ids are per chat, after the user's message
    assert other.message_id == 1 and other.chat.type == "supergroup"
    assert [m.text for m in emu.messages(USER, include_user=True)] == ["hello", "hi"]


async def test_edit_reply_markup_and_not_modified(emu: BotAPIEmulator, bot: Bot) -> None:
    sent = await bot.send_message(GROUP, "card", reply_markup=APPROVE)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("card", chat_id=GROUP, message_id=sent.message_id, reply_markup=APPROVE)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(chat_id=GROUP, message_id=sent.message_id, reply_markup=APPROVE)
    # Same visible text through different markup is still "not modified".
    await bot.edit_message_text("<b>card</b>", chat_id=GROUP, message_id=sent.message_id, parse_mode="HTML")
    with pytest.raises(TelegramBadRequest) as exc:
        await bot.edit_message_text("<b>card</b>", chat_id=GROUP, message_id=sent.message_id, parse_mode="HTML")
    assert "exactly the same as a current content and reply markup" in exc.value.message

    other = keyboard([("Undo", "undo:1")])
    await bot.edit_message_reply_markup(chat_id=GROUP, message_id=sent.message_id, reply_markup=other)
    msg = emu.message(GROUP, sent.message_id)
    assert msg.button_texts == ["Undo"] and msg.edit_count == 2 and msg.history == ["card", "<b>card</b>"]
    assert emu.call_count("editMessageText", ok=False) == 2


async def test_edit_and_delete_unknown_messages(emu: BotAPIEmulator, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=GROUP, message_id=999)
    user_msg = emu.send_user_message(GROUP, USER, "mine")
    with pytest.raises(TelegramBadRequest, match="message can't be edited"):
        await bot.edit_message_text("x", chat_id=GROUP, message_id=user_msg["message_id"])
    sent = await bot.send_message(GROUP, "bye")
    assert await bot.delete_message(GROUP, sent.message_id) is True
    assert emu.messages(GROUP) == [] and emu.messages(GROUP, include_deleted=True)[0].deleted
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(GROUP, sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("again", chat_id=GROUP, message_id=sent.message_id)


async def test_reply_parameters(emu: BotAPIEmulator, bot: Bot) -> None:
    asked = emu.send_user_message(GROUP, USER, "/status")
    reply = await bot.send_message(GROUP, "all good", reply_to_message_id=asked["message_id"])
    assert reply.reply_to_message is not None and reply.reply_to_message.text == "/status"
    with pytest.raises(TelegramBadRequest, match="message to be replied not found"):
        await bot.send_message(GROUP, "x", reply_to_message_id=12345)


# ---------------------------------------------------------------- Telegram's validation


@pytest.mark.parametrize(
    "text",
    [
        "load < 5",  # unescaped <
        "line<br>break",  # unsupported tag
        "<b>unclosed",
        "<b>crossed</i>",
        "</b>stray",
        "<span>no class</span>",
        "AT&T",  # bare & (the emulator is strict by default)
        '<a href=https://x.io/a?b=c">x</a>',
    ],
)
async def test_bad_html_is_refused(emu: BotAPIEmulator, bot: Bot, text: str) -> None:
    with pytest.raises(TelegramBadRequest, match="can't parse entities") as exc:
        await bot.send_message(GROUP, text, parse_mode="HTML")
    assert exc.value.message.startswith("Bad Request: can't parse entities: ")
    assert emu.messages(GROUP) == []
    # Without parse_mode the same text is fine.
    await bot.send_message(GROUP, text)


async def test_lenient_html_matches_real_telegram_on_ampersand() -> None:
    assert parse_html("AT&T &nbsp; &lt;ok", strict=False)[0] == "AT&T &nbsp; <ok"
    with pytest.raises(HTMLParseError, match='unescaped "&" at byte offset 2'):
        parse_html("AT&T")
    async with BotAPIEmulator(strict_html=False) as emu:
        bot = make_bot(emu)
        try:
            sent = await bot.send_message(GROUP, "AT&T", parse_mode="HTML")
        finally:
            await close_bot(bot)
    assert sent.text == "AT&T"


def test_parse_html_entities_and_offsets() -> None:
    plain, entities = parse_html(
        '😀 <b>bold <i>both</i></b> <a href="https://e.x/?a=1&amp;b=2">link</a> '
        '<tg-spoiler>s</tg-spoiler><span class="tg-spoiler">t</span> <code>c</code> '
        '<pre><code class="language-python">p</code></pre> <blockquote>q</blockquote> &#8212;&#x41;&quot;'
    )
    assert plain == '😀 bold both link st c p q —A"'
    by_type = {e["type"]: e for e in entities}
    assert by_type["bold"] == {"type": "bold", "offset": 3, "length": 9}  # the emoji is 2 UTF-16 units
    assert by_type["italic"]["offset"] == 8
    assert by_type["text_link"]["url"] == "https://e.x/?a=1&b=2"
    assert by_type["pre"]["language"] == "python" and "code" in by_type
    assert [e["type"] for e in entities].count("spoiler") == 2
    assert utf16_len("😀a") == 3
    with pytest.raises(HTMLParseError, match='Unsupported start tag "br" at byte offset 5'):
        parse_html("😀x<br>")  # byte offsets, like tdlib


async def test_text_length_counts_utf16_after_entity_parsing(emu: BotAPIEmulator, bot: Bot) -> None:
    await bot.send_message(GROUP, "x" * 4096)
    await bot.send_message(GROUP, "<b>" + "&amp;" * 4096 + "</b>", parse_mode="HTML")
    await bot.send_message(GROUP, "😀" * 2048)
    for too_long in ("x" * 4097, "😀" * 2049):
        with pytest.raises(TelegramBadRequest, match="message is too long"):
            await bot.send_message(GROUP, too_long)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(GROUP, "<i>" + "&lt;" * 4097 + "</i>", parse_mode="HTML")
    sent = emu.messages(GROUP)[0]
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.edit_message_text("y" * 4097, chat_id=GROUP, message_id=sent.message_id)
    assert len(emu.messages(GROUP)) == 3 and emu.message(GROUP, sent.message_id).edit_count == 0


async def test_empty_text_is_refused(emu: BotAPIEmulator, bot: Bot) -> None:
    for text in ("", "   \n", "<b> </b>"):
        with pytest.raises(TelegramBadRequest, match="message text is empty"):
            await bot.send_message(GROUP, text, parse_mode="HTML")


async def test_callback_data_limit_is_64_bytes(emu: BotAPIEmulator, bot: Bot) -> None:
    await bot.send_message(GROUP, "ok", reply_markup=keyboard([("A", "a" * 64)]))
    await bot.send_message(GROUP, "ok", reply_markup=keyboard([("Я", "я" * 32)]))  # 64 bytes in UTF-8
    for data in ("a" * 65, "я" * 33):
        with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
            await bot.send_message(GROUP, "too big", reply_markup=keyboard([("A", data)]))
    sent = emu.messages(GROUP)[0]
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.edit_message_reply_markup(
            chat_id=GROUP, message_id=sent.message_id, reply_markup=keyboard([("A", "b" * 65)])
        )
    assert len(emu.messages(GROUP)) == 2 and emu.messages(GROUP)[0].edit_count == 0


async def test_commands_and_chat_action(emu: BotAPIEmulator, bot: Bot) -> None:
    from aiogram.types import BotCommand

    await bot.set_my_commands([BotCommand(command="status", description="Open incidents")])
    assert emu.commands == [{"command": "status", "description": "Open incidents"}]
    assert [c.command for c in await bot.get_my_commands()] == ["status"]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad-Name", description="x")])
    assert await bot.send_chat_action(GROUP, "typing") is True


# ---------------------------------------------------------------- faults


async def test_429_raises_retry_after_and_changes_nothing(emu: BotAPIEmulator, bot: Bot) -> None:
    emu.fail("sendMessage", 429, retry_after=7)
    with pytest.raises(TelegramRetryAfter) as exc:
        await bot.send_message(GROUP, "alert")
    assert exc.value.retry_after == 7
    assert "Too Many Requests: retry after 7" in exc.value.message
    assert emu.messages(GROUP) == []
    await bot.send_message(GROUP, "alert")  # only the next call failed
    assert len(emu.messages(GROUP)) == 1
    assert [(c.method, c.status) for c in emu.calls] == [("sendMessage", 429), ("sendMessage", 200)]


async def test_5xx_and_outages(emu: BotAPIEmulator, bot: Bot) -> None:
    sent = await bot.send_message(GROUP, "v1")
    emu.fail(None, 500, times=2)
    for _ in range(2):
        with pytest.raises(TelegramServerError, match="Internal Server Error"):
            await bot.edit_message_text("v2", chat_id=GROUP, message_id=sent.message_id)
    assert emu.message(GROUP, sent.message_id).text == "v1"
    await bot.edit_message_text("v2", chat_id=GROUP, message_id=sent.message_id)

    emu.fail("editMessageText", 502, description="Bad Gateway")
    with pytest.raises(TelegramServerError, match="Bad Gateway"):
        await bot.edit_message_text("v3", chat_id=GROUP, message_id=sent.message_id)

    emu.set_down(True)
    with pytest.raises(TelegramServerError, match="Bad Gateway"):
        await bot.send_message(GROUP, "x")
    assert await bot.get_updates(timeout=0) == []  # polling still works during an outage
    emu.set_down(False)
    await bot.send_message(GROUP, "back")
    assert [m.text for m in emu.messages(GROUP)] == ["v2", "back"]


async def test_faults_queue_in_order_and_spare_polling(emu: BotAPIEmulator, bot: Bot) -> None:
    emu.fail("sendMessage", 429, times=2)
    emu.fail("sendMessage", 500)
    emu.fail(None, 503)
    assert await bot.get_updates(timeout=0) == []  # "any method" faults leave getUpdates alone
    for _ in range(4):
        with pytest.raises((TelegramRetryAfter, TelegramServerError)):
            await bot.send_message(GROUP, "x")
    await bot.send_message(GROUP, "through")
    assert [c.status for c in emu.calls if c.method == "sendMessage"] == [429, 429, 500, 503, 200]
    assert emu.calls[1].description == "Too Many Requests: retry after 1"  # the default retry_after
    assert [m.text for m in emu.messages(GROUP)] == ["through"]


async def test_timed_outage_ends_by_itself() -> None:
    clock = ManualClock()
    async with BotAPIEmulator(clock=clock) as emu:
        bot = make_bot(emu)
        try:
            emu.outage(30)
            with pytest.raises(TelegramServerError, match="Bad Gateway"):
                await bot.send_message(GROUP, "x")
            clock.advance(29.9)
            assert emu.is_down
            clock.advance(0.1)
            assert not emu.is_down
            await bot.send_message(GROUP, "back")
        finally:
            await close_bot(bot)
        assert [m.text for m in emu.messages(GROUP)] == ["back"]


async def test_token_check_and_unknown_method(emu: BotAPIEmulator) -> None:
    async with BotAPIEmulator(token=TOKEN) as strict:
        good, bad = make_bot(strict), make_bot(strict, "999:WRONG")
        try:
            assert (await good.get_me()).id == 123456
            with pytest.raises(TelegramUnauthorizedError):
                await bad.get_me()
        finally:
            await close_bot(good)
            await close_bot(bad)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{emu.base_url}/bot{TOKEN}/sendPigeon", data={"chat_id": "1"}) as resp:
            assert resp.status == 404
            assert await resp.json() == {
                "ok": False,
                "error_code": 404,
                "description": "Not Found: method not found",
            }
        # Method names are case-insensitive and JSON bodies are accepted, as by Telegram.
        async with http.post(f"{emu.base_url}/bot{TOKEN}/SENDMESSAGE", json={"chat_id": 5, "text": "j"}) as resp:
            body = await resp.json()
            assert body["ok"] and body["result"]["text"] == "j"


# ---------------------------------------------------------------- updates


async def test_polling_delivers_button_press_and_command(emu: BotAPIEmulator, bot: Bot) -> None:
    dp = Dispatcher()
    seen: list[str] = []

    @dp.callback_query(F.data.startswith("approve:"))
    async def on_approve(query: CallbackQuery) -> None:
        seen.append(f"{query.from_user.id}:{query.data}:{query.message.message_id if query.message else None}")
        await query.answer("Approved", show_alert=True)

    @dp.message(Command("start"))
    async def on_start(message: Message) -> None:
        await message.answer("Welcome")

    card = await bot.send_message(GROUP, "card", reply_markup=APPROVE)
    polling = asyncio.create_task(
        dp.start_polling(bot, handle_signals=False, polling_timeout=5, close_bot_session=False)
    )
    try:
        await emu.wait_for(lambda: emu.waiting_polls > 0, timeout=3)
        started = time.monotonic()
        query_id = emu.press_button(GROUP, card.message_id, USER, "approve:1", first_name="Bob")
        answer = await emu.wait_for_answer(query_id, timeout=3)
        assert time.monotonic() - started < 2.5  # the 5 s long poll answered at once
        assert answer["text"] == "Approved" and answer["show_alert"] is True
        assert seen == [f"{USER}:approve:1:{card.message_id}"]
        assert emu.answers[query_id] == answer

        emu.send_user_message(GROUP, USER, "/start")
        welcome = await emu.wait_for(lambda: [m for m in emu.messages(GROUP) if m.text == "Welcome"], timeout=3)
        assert welcome[0].chat_id == GROUP
    finally:
        await dp.stop_polling()
        await asyncio.wait_for(polling, 3)
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query_id, text="twice")


async def test_get_updates_offset_allowed_updates_and_conflict(emu: BotAPIEmulator, bot: Bot) -> None:
    assert await bot.get_updates(timeout=0) == []
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == []
    assert 0.9 < time.monotonic() - started < 3

    card = await bot.send_message(GROUP, "card", reply_markup=APPROVE)
    first = emu.send_user_message(GROUP, USER, "/start@remediator_bot now")
    emu.press_button(GROUP, card.message_id, USER, "reject:1")
    updates = await bot.get_updates(timeout=1)
    assert [u.event_type for u in updates] == ["message", "callback_query"]
    assert updates[0].message is not None and updates[0].message.text == first["text"]
    assert first["entities"] == [{"type": "bot_command", "offset": 0, "length": 21}]
    assert updates[1].callback_query is not None and updates[1].callback_query.data == "reject:1"
    assert len(await bot.get_updates(timeout=0)) == 2  # not confirmed yet
    assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0) == []

    emu.send_user_message(GROUP, USER, "filtered out")
    emu.press_button(GROUP, card.message_id, USER, "approve:1")
    only_queries = await bot.get_updates(timeout=0, allowed_updates=["callback_query"])
    assert [u.event_type for u in only_queries] == ["callback_query"]

    with pytest.raises(LookupError):
        emu.press_button(GROUP, card.message_id, USER, "no-such-button")

    # A second concurrent poll terminates the first one, like Telegram does.
    offset = only_queries[-1].update_id + 1
    first_poll = asyncio.create_task(bot.get_updates(offset=offset, timeout=2))
    await emu.wait_for(lambda: emu.waiting_polls == 1, timeout=2)
    # allowed_updates=[] lifts the sticky callback_query-only filter set above.
    second_poll = asyncio.create_task(bot.get_updates(offset=offset, timeout=5, allowed_updates=[]))
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await first_poll
    emu.send_user_message(GROUP, USER, "late")
    assert [u.message.text for u in await second_poll if u.message] == ["late"]


async def test_callback_queries_expire_like_telegram() -> None:
    clock = ManualClock()
    async with BotAPIEmulator(clock=clock) as emu:
        bot = make_bot(emu)
        try:
            emu.query_ttl = 10  # read on every answer, so it can change on a running emulator
            card = await bot.send_message(GROUP, "card", reply_markup=APPROVE)
            fast = emu.press_button(GROUP, card.message_id, USER, "approve:1")
            slow = emu.press_button(GROUP, card.message_id, USER, "reject:1")
            clock.advance(10)
            assert await bot.answer_callback_query(fast, text="ok") is True  # just in time
            clock.advance(0.1)
            with pytest.raises(TelegramBadRequest, match="query is too old"):
                await bot.answer_callback_query(slow, text="too late")
        finally:
            await close_bot(bot)
        assert emu.answers == {fast: {"text": "ok", "show_alert": False, "url": None, "cache_time": None}, slow: None}
        with pytest.raises(TimeoutError, match="not answered within"):
            await emu.wait_for_answer(slow, timeout=0.05)


async def test_a_poll_held_across_reset_is_not_a_conflict(emu: BotAPIEmulator, bot: Bot) -> None:
    emu.send_user_message(GROUP, USER, "before")
    emu.fail("sendMessage", 500)
    poll = asyncio.create_task(bot.get_updates(offset=2, timeout=5))  # confirms "before", then waits
    await emu.wait_for(lambda: emu.waiting_polls == 1, timeout=2)
    emu.reset()
    assert emu.pending_updates == 0 and emu.messages(GROUP, include_user=True) == []
    emu.send_user_message(GROUP, USER, "after")
    assert [u.message.text for u in await poll if u.message] == ["after"]
    await bot.send_message(GROUP, "faults were reset too")
    assert emu.call_count("sendMessage", ok=True) == 1


# ---------------------------------------------------------------- observers and HTTP control


async def test_events_and_terminal_format(bot: Bot) -> None:
    events: list[EmulatorEvent] = []
    async with BotAPIEmulator(on_event=events.append) as emu:
        b = make_bot(emu)
        try:
            card = await b.send_message(
                GROUP, "<b>Disk full</b> &lt;db-1&gt;\nP1", parse_mode="HTML", reply_markup=APPROVE
            )
            emu.press_button(GROUP, card.message_id, USER, "approve:1")
            query_id = emu.press_button(GROUP, card.message_id, USER, "reject:1")
            await b.answer_callback_query(query_id, text="Rejected")
            await b.edit_message_text("Rejected", chat_id=GROUP, message_id=card.message_id)
            emu.send_user_message(GROUP, USER, "/status")
        finally:
            await close_bot(b)
    rendered = [format_event(e) for e in events]
    assert rendered == [
        "[bot → chat -100] NEW #1\nDisk full <db-1>\nP1\n[ Approve ] [ Reject ]",
        f'[user {USER} pressed "Approve" on #1]',
        f'[user {USER} pressed "Reject" on #1]',
        '[bot answered: "Rejected"]',
        "[bot ✎ chat -100] EDIT #1\nRejected",
        f"[user {USER} → chat -100] /status",
    ]
    assert [e.kind for e in events] == ["new", "press", "press", "answer", "edit", "message"]


async def test_http_control_api(emu: BotAPIEmulator, bot: Bot) -> None:
    dp = Dispatcher()

    @dp.callback_query()
    async def on_any(query: CallbackQuery) -> None:
        await query.answer(f"got {query.data}")

    card = await bot.send_message(GROUP, "card", reply_markup=APPROVE)
    polling = asyncio.create_task(
        dp.start_polling(bot, handle_signals=False, polling_timeout=5, close_bot_session=False)
    )
    base = f"{emu.base_url}/_emulator"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/message", json={"chat_id": GROUP, "user_id": USER, "text": "hi"}) as r:
                assert r.status == 200 and (await r.json())["text"] == "hi"
            press = {"chat_id": GROUP, "message_id": card.message_id, "user_id": USER, "data": "approve:1"}
            async with http.post(f"{base}/press", json=press) as r:
                query_id = (await r.json())["callback_query_id"]
            async with http.get(f"{base}/answer", params={"id": query_id, "timeout": "3"}) as r:
                assert r.status == 200 and (await r.json())["text"] == "got approve:1"
            async with http.post(f"{base}/press", json={**press, "data": "nope"}) as r:
                assert r.status == 404

            async with http.post(f"{base}/fail", json={"method": "sendMessage", "status": 429, "retry_after": 3}) as r:
                assert r.status == 200
            with pytest.raises(TelegramRetryAfter):
                await bot.send_message(GROUP, "limited")
            async with http.post(f"{base}/outage", json={"down": True}) as r:
                assert (await r.json())["down"] is True
            with pytest.raises(TelegramServerError):
                await bot.send_message(GROUP, "down")
            async with http.post(f"{base}/outage", json={"down": False}) as r:
                assert (await r.json())["down"] is False

            async with http.get(f"{base}/state") as r:
                state = await r.json()
            assert [m["text"] for m in state["messages"][str(GROUP)]] == ["card", "hi"]
            assert state["messages"][str(GROUP)][0]["reply_markup"]["inline_keyboard"][0][0]["text"] == "Approve"
            assert state["call_counts"]["sendMessage"] == 3 and state["call_counts"]["answerCallbackQuery"] == 1
            assert state["failed_calls"] == 2 and state["answers"][query_id]["text"] == "got approve:1"

            async with http.get(f"{base}/calls", params={"method": "sendMessage"}) as r:
                calls = await r.json()
            assert [(c["status"], c["params"]["text"]) for c in calls["calls"]] == [
                (200, "card"),
                (429, "limited"),
                (502, "down"),
            ]
            async with http.get(f"{base}/calls", params={"since": str(calls["next"])}) as r:
                assert all(c["method"] == "getUpdates" for c in (await r.json())["calls"])

            async with http.post(f"{base}/reset") as r:
                assert r.status == 200
            assert emu.messages(GROUP) == [] and emu.call_count() == 0
    finally:
        await dp.stop_polling()
        await asyncio.wait_for(polling, 3)


async def test_standalone_cli_serves() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.telegram_emulator", "--port", "0",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        base_url = line.split()[-1]
        assert base_url.startswith("http://127.0.0.1:")
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{base_url}/bot{TOKEN}/sendMessage", data={"chat_id": "7", "text": "hi"}) as r,
        ):
            assert (await r.json())["result"]["text"] == "hi"
        printed = (await asyncio.wait_for(proc.stdout.readline(), 5)).decode()
        while not printed.startswith("[bot"):
            printed = (await asyncio.wait_for(proc.stdout.readline(), 5)).decode()
        assert printed.strip() == "[bot → chat 7] NEW #1"
    finally:
        proc.terminate()
        await proc.wait()
