"""Telegram's error answers: one exception that every part of the emulator raises.

A method, a fault or the transport refuses a call by raising :class:`ApiError`; only the
transport turns it into the JSON body aiogram decodes (``ok: false``, ``error_code``,
``description``, ``parameters``), so the shape of an error is written down once.
"""

from __future__ import annotations

from typing import Any

CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"


class ApiError(Exception):
    """A Bot API error answer: raised by method handlers, rendered in Telegram's JSON shape."""

    def __init__(
        self, status: int, description: str, retry_after: int | None = None, migrate_to_chat_id: int | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.migrate_to_chat_id = migrate_to_chat_id

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        if self.migrate_to_chat_id is not None:
            body["parameters"] = {"migrate_to_chat_id": self.migrate_to_chat_id}
        return body


def bad_request(description: str) -> ApiError:
    """A 400 worded as Telegram words it: ``Bad Request: <description>``."""
    return ApiError(400, f"Bad Request: {description}")
