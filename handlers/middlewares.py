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
            if not self.allowed(event.chat.id, event.chat.type, user):
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
