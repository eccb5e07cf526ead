"""The people in the chat: what a user writing a message or pressing a button produces.

Telegram's other side. A user's action is stored as a message or a callback query,
queued as an Update for the bot's getUpdates, and shown to observers. A test can only do
what a real user could: press a button that is on the message (or, as ``stale``, one an
outdated client still shows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .changes import EventFeed
from .markup import bot_command_entities
from .models import EmulatorEvent
from .state import ChatState


class ChatUsers:
    """Turns user actions into updates and events."""

    def __init__(self, state: ChatState, feed: EventFeed, clock: Callable[[], float]) -> None:
        self._state = state
        self._feed = feed
        self._clock = clock

    def send_message(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        first_name: str,
        username: str | None,
        reply_to_message_id: int | None,
    ) -> dict[str, Any]:
        """Store and queue the user's message; commands get ``bot_command`` entities as from Telegram."""
        state = self._state
        user = state.user(user_id, first_name, username)
        state.remember_private_chat(chat_id, user)
        msg = state.store(
            chat_id,
            sender=user,
            text=text,
            plain_text=text,
            parse_mode=None,
            entities=bot_command_entities(text),
            reply_markup=None,
            from_bot=False,
            reply_to_message_id=reply_to_message_id,
        )
        api = state.message_api(msg)
        state.queue_update("message", api)
        self._feed.emit(
            EmulatorEvent(
                kind="message",
                chat_id=chat_id,
                message_id=msg.message_id,
                text=text,
                plain_text=text,
                user_id=user_id,
                user_name=_display_name(user),
            )
        )
        return api

    def press_button(
        self,
        chat_id: int,
        message_id: int,
        user_id: int,
        data: str,
        first_name: str,
        username: str | None,
        stale: bool,
    ) -> str:
        """Open and queue a callback query; ``LookupError`` if there is no such message or button."""
        state = self._state
        msg = state.find(chat_id, message_id)
        if msg is None:
            raise LookupError(f"no message #{message_id} in chat {chat_id}")
        button = msg.find_button(data) or ({"text": "(stale)", "callback_data": data} if stale else None)
        if button is None:
            available = [b.get("callback_data") for row in msg.buttons for b in row]
            raise LookupError(f"message #{message_id} in chat {chat_id} has no button {data!r}; has {available}")
        user = state.user(user_id, first_name, username)
        query = state.open_query(chat_id, message_id, user_id, data, now=self._clock())
        state.queue_update(
            "callback_query",
            {
                "id": query.id,
                "from": user,
                "message": state.message_api(msg),
                "chat_instance": str(abs(hash(("chat", chat_id)))),
                "data": data,
            },
        )
        self._feed.emit(
            EmulatorEvent(
                kind="press",
                chat_id=chat_id,
                message_id=message_id,
                user_id=user_id,
                user_name=_display_name(user),
                data=data,
                button_text=button.get("text"),
                callback_query_id=query.id,
            )
        )
        return query.id


def _display_name(user: dict[str, Any]) -> str:
    return str(user.get("username") or user.get("first_name") or user.get("id"))
