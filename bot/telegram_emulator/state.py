"""What the emulated Telegram remembers: chats, messages, callback queries, commands, updates.

Plain data and the few rules of how it grows (message ids count per chat, update ids
count globally, a chat's shape follows from its id). No HTTP and no validation here: the
Bot API methods decide what may change, the user side decides what people do, and both
write through this one store so that inspection sees a single truth.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from .models import CallbackQuery, StoredMessage

# Ids at or below this are supergroups in the Bot API (-100… prefix); other negatives are groups.
_SUPERGROUP_IDS_BELOW = -1_000_000_000_000


class BotIdentity(Protocol):
    """The bot's names, read on every use so a test can rename a running emulator's bot."""

    bot_username: str
    bot_first_name: str


class ChatState:
    """Chats and the update queue. :meth:`clear` forgets it all but keeps query ids unique."""

    # What a reset forgets (set by clear()):
    chats: dict[int, dict[int, StoredMessage]]  # chat id -> message id -> message, oldest first
    updates: list[dict[str, Any]]  # queued Updates not yet confirmed by a getUpdates offset
    allowed_updates: list[str] | None  # the bot's sticky getUpdates filter; None = all types
    queries: dict[str, CallbackQuery]  # every callback query by id, answered or not
    commands: dict[str, list[dict[str, Any]]]  # setMyCommands lists by commands_key()
    migrated: dict[int, int]  # group id -> the supergroup it became
    bot_id: int  # the bot's user id, from the token of the latest call
    _next_message_id: dict[int, int]
    _next_update_id: int
    _chat_users: dict[int, dict[str, Any]]  # private chat id -> the user it is with

    def __init__(self, identity: BotIdentity, notify: Callable[[], None]) -> None:
        self._identity = identity
        self._notify = notify
        # Survives clear(): a query id handed out before a reset must never be reused.
        self._query_ids = itertools.count(random.randint(10**15, 9 * 10**15))
        self.clear()

    def clear(self) -> None:
        self.chats = {}
        self.updates = []
        self.allowed_updates = None
        self.queries = {}
        self.commands = {}
        self.migrated = {}
        self.bot_id = 1
        self._next_message_id = {}
        self._next_update_id = 1
        self._chat_users = {}

    # ------------------------------------------------------------------ people and chats

    @staticmethod
    def user(user_id: int, first_name: str, username: str | None) -> dict[str, Any]:
        """A Bot API ``User`` for a person."""
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        return user

    def remember_private_chat(self, chat_id: int, user: dict[str, Any]) -> None:
        """A private chat takes its name from the person in it."""
        if chat_id > 0:
            self._chat_users[chat_id] = user

    def bot_user(self) -> dict[str, Any]:
        """The bot's own ``User``; its id follows the token of the latest call, as aiogram expects."""
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self._identity.bot_first_name,
            "username": self._identity.bot_username,
        }

    def chat(self, chat_id: int) -> dict[str, Any]:
        """The Bot API ``Chat`` for an id: groups and supergroups by sign and size, else private."""
        if chat_id < 0:
            kind = "supergroup" if chat_id <= _SUPERGROUP_IDS_BELOW else "group"
            return {"id": chat_id, "type": kind, "title": f"Chat {chat_id}"}
        user = self._chat_users.get(chat_id, {})
        chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": user.get("first_name", "User")}
        if "username" in user:
            chat["username"] = user["username"]
        return chat

    # ------------------------------------------------------------------ messages

    def store(self, chat_id: int, **fields: Any) -> StoredMessage:
        """Keep a new message under the chat's next message id."""
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        msg = StoredMessage(
            chat_id=chat_id,
            message_id=message_id,
            date=int(time.time()),
            chat=self.chat(chat_id),
            history=[fields["text"]],
            **fields,
        )
        self.chats.setdefault(chat_id, {})[message_id] = msg
        return msg

    def find(self, chat_id: int, message_id: int) -> StoredMessage | None:
        """A message that still exists (not deleted), or None."""
        msg = self.chats.get(chat_id, {}).get(message_id)
        return None if msg is None or msg.deleted else msg

    def message_api(self, msg: StoredMessage) -> dict[str, Any]:
        """The Bot API ``Message`` for a stored one, with the message it replies to."""
        reply_to = None
        if msg.reply_to_message_id is not None:
            reply_to = self.find(msg.chat_id, msg.reply_to_message_id)
        return msg.to_api(reply_to)

    def messages(self, chat_id: int, *, include_user: bool, include_deleted: bool) -> list[StoredMessage]:
        return [
            m
            for m in self.chats.get(chat_id, {}).values()
            if (include_user or m.from_bot) and (include_deleted or not m.deleted)
        ]

    # ------------------------------------------------------------------ callback queries

    def open_query(self, chat_id: int, message_id: int, user_id: int, data: str, now: float) -> CallbackQuery:
        """A new callback query, waiting for the bot's answer."""
        query_id = str(next(self._query_ids))
        query = CallbackQuery(query_id, chat_id, message_id, user_id, data, created=now)
        self.queries[query_id] = query
        return query

    # ------------------------------------------------------------------ the update queue

    def queue_update(self, kind: str, payload: dict[str, Any]) -> int:
        """Queue an Update for getUpdates and wake the long poll."""
        update_id = self._next_update_id
        self._next_update_id += 1
        self.updates.append({"update_id": update_id, kind: payload})
        self._notify()
        return update_id

    def drop_disallowed_updates(self) -> None:
        """Forget queued updates of types the bot said (allowed_updates) it does not want."""
        if self.allowed_updates is not None:
            allowed = self.allowed_updates
            self.updates = [u for u in self.updates if _update_type(u) in allowed]

    # ------------------------------------------------------------------ bot commands

    def commands_for(self, scope: Any, language_code: Any) -> list[dict[str, Any]]:
        return list(self.commands.get(commands_key(scope, language_code), []))


def commands_key(scope: Any, language_code: Any) -> str:
    """Commands are stored per (scope, language); no scope means the default one."""
    scope = scope if isinstance(scope, dict) else {"type": "default"}
    return json.dumps([scope, language_code or ""], sort_keys=True)


def _update_type(update: dict[str, Any]) -> str:
    return next((k for k in update if k != "update_id"), "")
