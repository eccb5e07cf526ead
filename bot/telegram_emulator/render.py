"""Terminal rendering of emulator events, for the demo mode and the standalone server.

Kept apart from the server so the demo can print events its own way and tests can
check the exact wording without starting anything.
"""

from __future__ import annotations

from typing import Any

from .markup import strip_html
from .models import EmulatorEvent


def format_buttons(reply_markup: dict[str, Any] | None) -> list[str]:
    """One line per inline-keyboard row: ``[ Approve ] [ Reject ]`` (URL buttons get ``↗``)."""
    if not reply_markup:
        return []
    lines = []
    for row in reply_markup.get("inline_keyboard") or []:
        cells = []
        for button in row:
            label = str(button.get("text", ""))
            cells.append(f"[ {label} ↗ ]" if "url" in button else f"[ {label} ]")
        if cells:
            lines.append(" ".join(cells))
    return lines


def _body(event: EmulatorEvent) -> list[str]:
    if event.plain_text is not None:
        text = event.plain_text
    elif event.parse_mode and event.parse_mode.lower() == "html" and event.text:
        text = strip_html(event.text)
    else:
        text = event.text or ""
    attachment = [f"📎 {event.attachment}"] if event.attachment else []
    return [*attachment, *text.splitlines(), *format_buttons(event.reply_markup)]


def format_event(event: EmulatorEvent, label: str | None = None) -> str:
    """Render one event as a few terminal lines, e.g.::

    [bot → chat -100] NEW #12
    Disk full on db-1
    [ Approve ] [ Reject ]

    ``label`` names the message in the head line; by default its Telegram message number
    (``#12``). The demo passes the incident number of a card instead, so the transcript's
    numbers are the ones the cards show.
    """
    name = label if label is not None else f"#{event.message_id}"
    if event.kind == "new":
        return "\n".join([f"[bot → chat {event.chat_id}] NEW {name}", *_body(event)])
    if event.kind == "edit":
        if event.markup_only:
            head = f"[bot ✎ chat {event.chat_id}] EDIT {name} (buttons only)"
            buttons = format_buttons(event.reply_markup) or ["(buttons removed)"]
            return "\n".join([head, *buttons])
        return "\n".join([f"[bot ✎ chat {event.chat_id}] EDIT {name}", *_body(event)])
    if event.kind == "delete":
        return f"[bot ✗ chat {event.chat_id}] DELETE {name}"
    if event.kind == "answer":
        how = "answered (alert)" if event.show_alert else "answered"
        return f'[bot {how}: "{event.text}"]' if event.text else "[bot answered]"
    if event.kind == "press":
        pressed = event.button_text if event.button_text is not None else event.data
        return f'[user {event.user_id} pressed "{pressed}" on {name}]'
    if event.kind == "message":
        return f"[user {event.user_id} → chat {event.chat_id}] {event.text}"
    return f"[{event.kind}] {event.to_dict()}"
