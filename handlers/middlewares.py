"""Who the bot listens to: the alert chat, and private chats with approvers.

From anywhere else only /start and /help get through (bot/open_commands.py answers them with ids,
never incident data, and bounds how often). Every other message from elsewhere is ignored, with
a log line at most once a minute per chat, so an operator can see which chat is talking to the bot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject

from bot.chat_commands import OPEN_TO_ALL
from handlers.callbacks import actor_of

log = logging.getLogger(__name__)


def open_command(text: str | None) -> bool:
    """Whether a message is /start or /help (also `/start@this_bot payload`)."""
    if not text or not text.startswith("/"):
        return False
    word = text.split(maxsplit=1)[0][1:]
    return word.split("@", 1)[0].lower() in OPEN_TO_ALL


class IgnoredMessageLog:
    """One warning per chat a minute at most, and `per_minute` in all, for messages the gate drops.

    A stranger's chat says once what happened (and how many more were dropped since); a flood from
    many chats costs a few lines a minute. Memory is bounded by `max_chats`.
    """

    def __init__(
        self, chat_id: int | None, per_minute: int = 10, interval_s: float = 60.0, max_chats: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chat_id = chat_id
        self.per_minute = per_minute
        self.interval = interval_s
        self.max_chats = max_chats
        self.clock = clock
        self._chats: dict[int, tuple[float, int]] = {}  # chat -> (logged at, dropped since)
        self._window_end = 0.0
        self._lines = 0
        self._unlogged = 0  # ignored messages not logged because the shared budget was spent

    def note(self, chat_id: int, chat_type: str | None, user_id: int | None) -> None:
        now = self.clock()
        logged_at, since = self._chats.get(chat_id, (-self.interval, 0))
        if now - logged_at < self.interval:
            self._chats[chat_id] = (logged_at, since + 1)
            return
        if now >= self._window_end:
            self._window_end, self._lines = now + self.interval, 0
        if self._lines >= self.per_minute:
            self._unlogged += 1
            return
        self._lines += 1
        if len(self._chats) >= self.max_chats:
            self._chats.clear()
        self._chats[chat_id] = (now, 0)
        why = ("a private chat with someone not in TELEGRAM_APPROVERS" if chat_type == "private"
               else f"not the alert chat (TELEGRAM_CHAT_ID={self.chat_id})")
        more = f"; {since} more from it since the last line" if since else ""
        others = f"; {self._unlogged} from other chats not logged" if self._unlogged else ""
        self._unlogged = 0
        log.warning("ignored a message from chat %s by user %s: %s%s%s (send /start there to see the ids)",
                    chat_id, user_id, why, more, others)


class ChatGate(BaseMiddleware):
    def __init__(self, chat_id: int | None, approvers: set[int]) -> None:
        self.chat_id = chat_id
        self.approvers = approvers
        self.ignored = IgnoredMessageLog(chat_id)

    def allowed(self, chat_id: int | None, chat_type: str | None, user_id: int | None) -> bool:
        if chat_id is not None and chat_id == self.chat_id:
            return True
        return chat_type == "private" and user_id in self.approvers

    @staticmethod
    def refusal_reason(chat_type: str | None) -> str:
        """Why `allowed` said no, for the audit row (a private chat is refused only for a non-approver)."""
        if chat_type is None:
            return "the press came without its chat"
        return "not an approver (private chat)" if chat_type == "private" else "outside the alert chat"

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if isinstance(event, Message):
            user = event.from_user.id if event.from_user else None
            if not self.allowed(event.chat.id, event.chat.type, user) and not open_command(event.text):
                self.ignored.note(event.chat.id, event.chat.type, user)
                return None
        elif isinstance(event, CallbackQuery):
            chat = event.message.chat if event.message else None
            if chat is None or not self.allowed(chat.id, chat.type, event.from_user.id):
                decisions = data.get("decisions")
                if decisions is not None:  # audited like any other refusal, with the true reason
                    await decisions.audit_refusal(
                        actor_of(event.from_user), "button", self.refusal_reason(chat.type if chat else None),
                        detail={"chat_id": chat.id if chat else None, "chat_type": chat.type if chat else None,
                                "approver": event.from_user.id in self.approvers},
                    )
                await event.answer("Not allowed here.")
                return None
        return await handler(event, data)
