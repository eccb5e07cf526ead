"""Driving the local demo from the terminal, and its transcript.

While the demo runs, a typed line acts as the demo approver would in Telegram, through the
emulator's user side only (a message in the chat, a press on a card's button), so the real
application handles it exactly as it would a real person's. The transcript names a card by its
incident number (`#3`), the number the card itself shows, never by its Telegram message number.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from bot.callback_data import (
    APPROVE,
    INVESTIGATE,
    MUTE,
    OVERRIDE_ACTIONS,
    PRIORITY,
    REJECT,
    RESOLVE,
    CardPress,
    decode,
)
from bot.telegram_emulator import BotAPIEmulator, EmulatorEvent, StoredMessage, format_event

USAGE = """\
Type as the approver; the transcript shows what happens:
  /status  /incidents  /incident 3  /mute 3 2h  /killswitch on …   any command, sent to the chat
  approve 3 · reject 3 · investigate 3 · p0 3 … p3 3 · mute 3 [1h|24h] · resolve 3   press that button on card #3
  alert <text>                                                                     post a generic alert to the webhook
  help                                                                             this list"""

# A card's head line as shown: "🔴 P0 · infrastructure · #12" (bot/card_render.py).
_CARD_HEAD = re.compile(r"^\S+ P[0-3] · [a-z]+ · #([0-9]{1,19})\b")
_PRESS_WORDS = {"approve": APPROVE, "reject": REJECT, "investigate": INVESTIGATE, "resolve": RESOLVE, "mute": MUTE}
_BUTTON_NAMES = {APPROVE: "Approve", REJECT: "Reject", INVESTIGATE: "Investigate", RESOLVE: "Resolve",
                 MUTE: "Mute", PRIORITY: "priority"}
MAX_LINE = 4096  # characters of one typed line; longer lines are cut


def incident_of_buttons(markup: dict[str, Any] | None) -> int | None:
    """The incident a card's buttons act on (every card button carries it)."""
    for row in (markup or {}).get("inline_keyboard") or []:
        for button in row:
            press = decode(str(button.get("callback_data", "")))
            if press is not None and press.action not in OVERRIDE_ACTIONS:  # those carry an override's id
                return press.incident_id
    return None


def incident_of_text(text: str | None) -> int | None:
    """The incident a card's text is about, from its head line."""
    match = _CARD_HEAD.match((text or "").lstrip())
    return int(match.group(1)) if match else None


class Transcript:
    """Prints emulator events for the demo, a card named by its incident number.

    A card's incident is read from its buttons or head line when it is posted, and remembered
    for later edits and presses (an edit that only removes buttons carries neither).
    """

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self.write = write or (lambda text: print(text, flush=True))
        self._incident_by_message: dict[tuple[int | None, int | None], int] = {}

    def line(self, event: EmulatorEvent) -> str | None:
        if event.kind not in ("new", "edit", "delete", "press", "message", "answer"):
            return None  # e.g. the command menu being set: not part of the conversation
        if event.kind in ("message", "answer"):
            return format_event(event)
        key = (event.chat_id, event.message_id)
        found = incident_of_text(event.plain_text or event.text) or incident_of_buttons(event.reply_markup)
        if found is not None:
            self._incident_by_message[key] = found
        incident = self._incident_by_message.get(key)
        return format_event(event, label=f"#{incident}" if incident is not None else "message")

    def __call__(self, event: EmulatorEvent) -> None:
        text = self.line(event)
        if text is not None:
            self.write(text)


class DemoConsole:
    """Acts on typed lines as the approver `user_id` in `chat_id`, through the emulator."""

    def __init__(self, emu: BotAPIEmulator, chat_id: int, user_id: int, alert_url: str) -> None:
        self.emu = emu
        self.chat_id = chat_id
        self.user_id = user_id
        self.alert_url = alert_url  # the live generic webhook, token included

    async def handle(self, line: str) -> str | None:
        """Do what `line` says. Returns a note for the terminal, or None when the transcript shows the result."""
        line = line.strip()[:MAX_LINE]
        if not line:
            return None
        if line.startswith("/"):
            self.emu.send_user_message(self.chat_id, self.user_id, line, first_name="Demo", username="demo_approver")
            return None
        word, _, rest = line.partition(" ")
        word = word.lower()
        if word in ("help", "?"):
            return USAGE
        if word == "alert":
            return await self._post_alert(rest.strip())
        press = self._press_named(word, rest.split())
        if isinstance(press, str):
            return press
        return self._press(press)

    def _press_named(self, word: str, args: list[str]) -> CardPress | str:
        """The button a line names (e.g. `p1 3`, `mute 3 24h`), or why it names none."""
        if word in ("p0", "p1", "p2", "p3"):
            action, arg = PRIORITY, word.upper()
        elif word in _PRESS_WORDS:
            action = _PRESS_WORDS[word]
            arg = (args[1] if len(args) > 1 else "1h") if action == MUTE else ""
        else:
            return f"Unknown: {word!r}. Type help for the list."
        if not args or not (args[0].removeprefix("#").isascii() and args[0].removeprefix("#").isdigit()):
            return f"Which incident? e.g. {word} 3"
        return CardPress(action, int(args[0].removeprefix("#")), arg)

    def _press(self, wanted: CardPress) -> str | None:
        card, data = self._find_button(wanted)
        name = _BUTTON_NAMES[wanted.action] + (f" {wanted.arg}" if wanted.arg else "")
        if card is None:
            return f"No card for incident #{wanted.incident_id} in the chat (yet)."
        if data is None:
            return f"Card #{wanted.incident_id} has no {name} button now (already decided, resolved, or not offered)."
        self.emu.press_button(self.chat_id, card.message_id, self.user_id, data,
                              first_name="Demo", username="demo_approver")
        return None

    def _find_button(self, wanted: CardPress) -> tuple[StoredMessage | None, str | None]:
        """The incident's newest message with the button asked for, and that button's callback data;
        else any message about the incident (a card whose buttons are gone, an /incident reply).

        Approve and Reject carry the proposal id, which the typist does not know: any button of
        that kind for that incident matches.
        """
        about: StoredMessage | None = None
        for message in reversed(self.emu.messages(self.chat_id)):
            incident = incident_of_buttons(message.reply_markup) or incident_of_text(message.plain_text)
            if incident != wanted.incident_id:
                continue
            about = about or message
            for row in message.buttons:
                for button in row:
                    data = str(button.get("callback_data", ""))
                    press = decode(data)
                    if press is None or press.action != wanted.action or press.incident_id != wanted.incident_id:
                        continue
                    if wanted.action in (PRIORITY, MUTE) and press.arg != wanted.arg:
                        continue
                    return message, data
        return about, None

    async def _post_alert(self, text: str) -> str:
        if not text:
            return "Usage: alert <the error line>, e.g. alert Error: connect ECONNREFUSED 127.0.0.1:6379"
        body = {"title": text, "project": "demo", "environment": "production"}
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.post(self.alert_url, json=body)
        except httpx.HTTPError as exc:
            return f"The alert was not posted: {type(exc).__name__}: {exc}"
        if response.status_code == 202:
            return f"Alert accepted (inbox row {response.json().get('inbox_id')}); its card follows."
        return f"The webhook answered {response.status_code}: {response.text[:300]}"


async def typed_lines(fd: int) -> AsyncIterator[str]:
    """Lines read from `fd` until end of input, without blocking the event loop.

    A daemon thread does the blocking reads: asyncio's pipe transports would put a terminal
    into non-blocking mode, which the terminal shares with stdout, and prints could then fail.
    `os.read` takes no Python lock, so a thread still waiting at exit cannot hold up shutdown.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def hand_over(item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def pump() -> None:
        pending = b""
        try:
            while chunk := os.read(fd, 4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    hand_over(raw.decode("utf-8", "replace")[:MAX_LINE])
                pending = pending[-MAX_LINE * 4:]
            if pending:
                hand_over(pending.decode("utf-8", "replace")[:MAX_LINE])
        except OSError:
            pass
        finally:
            hand_over(None)

    threading.Thread(target=pump, name="demo-stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line


async def drive(console: DemoConsole, lines: AsyncIterator[str], write: Callable[[str], None]) -> None:
    """Hand each line to the console and print its note; a failure is reported, not fatal to the demo."""
    async for line in lines:
        try:
            note = await console.handle(line)
        except Exception as exc:
            note = f"Could not do {line.strip()!r}: {type(exc).__name__}: {exc}"
        if note:
            write(note)
