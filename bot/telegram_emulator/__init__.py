"""A local Telegram Bot API emulator: end-to-end tests, the demo mode and benchmarks talk to it.

A real aiohttp server on 127.0.0.1 answering ``/bot{token}/{method}`` in Telegram's wire
format, with Telegram's validation (HTML entities, 4096 UTF-16 units, 64-byte
callback_data, "message is not modified"), long-polled ``getUpdates``, fault injection
(429 / 5xx / outages), user-side driving (messages, button presses) and inspection, both
in-process and over HTTP under ``/_emulator/``.

Typical test use::

    async with BotAPIEmulator() as emu:
        session = AiohttpSession(api=TelegramAPIServer.from_base(emu.base_url))
        bot = Bot("123456:TEST", session=session)
        await bot.send_message(-100, "<b>hi</b>", parse_mode="HTML")
        assert emu.messages(-100)[0].plain_text == "hi"
"""

from __future__ import annotations

from .cli import main
from .markup import HTMLParseError, parse_html, strip_html, utf16_len
from .models import ApiCall, EmulatorEvent, StoredMessage
from .render import format_buttons, format_event
from .server import BotAPIEmulator

__all__ = [
    "ApiCall",
    "BotAPIEmulator",
    "EmulatorEvent",
    "HTMLParseError",
    "StoredMessage",
    "format_buttons",
    "format_event",
    "main",
    "parse_html",
    "strip_html",
    "utf16_len",
]
