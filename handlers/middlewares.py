"""Who the bot listens to: the alert chat, and private chats with approvers. Others are ignored."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject

from handlers.callbacks import actor_of


class ChatGate(BaseMiddleware):
    def __init__(self, chat_id: int | None, approvers: set[int]) -> None:
        self.chat_id = chat_id
        self.approvers = approvers

    def allowed(self, chat_id: int | None, chat_type: str | None, user_id: int | None) -> bool:
        if chat_id is not None and chat_id == self.chat_id:
            return True
        return chat_type == "private" and user_id in self.approvers

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if isinstance(event, Message):
            user = event.from_user.id if event.from_user else None
            if not self.allowed(event.chat.id, event.chat.type, user):
                return None
        elif isinstance(event, CallbackQuery):
            chat = event.message.chat if event.message else None
            if chat is None or not self.allowed(chat.id, chat.type, event.from_user.id):
                decisions = data.get("decisions")
                if decisions is not None:  # audited like any other refusal
                    await decisions.refuse(actor_of(event.from_user), "button (outside the alert chat)")
                await event.answer("Not allowed here.")
                return None
        return await handler(event, data)
