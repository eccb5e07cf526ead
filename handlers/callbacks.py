"""Card buttons: decode the press, call the decision service, answer with a short toast."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import CallbackQuery

from bot.callback_data import decode
from bot.decisions import DecisionService
from bot.models import Actor


def actor_of(user: object) -> Actor:
    full = getattr(user, "full_name", None) or ""
    username = getattr(user, "username", None)
    name = f"{full} (@{username})" if username else full or str(getattr(user, "id", "?"))
    return Actor(id=getattr(user, "id", 0), name=name)


async def on_press(callback: CallbackQuery, decisions: DecisionService) -> None:
    actor = actor_of(callback.from_user)
    press = decode(callback.data or "")
    if press is None:
        # Data this bot never draws (a forged press, or an id out of range): said so, and audited.
        await decisions.audit_refusal(actor, "button", "unknown button data",
                                      detail={"data": (callback.data or "")[:64]})
        await callback.answer("Unknown button: nothing changed.")
        return
    outcome = await decisions.press(actor, press)
    await callback.answer(outcome.answer[:200])


def build() -> Router:
    """A fresh router (aiogram attaches a router to one dispatcher only)."""
    router = Router(name="callbacks")
    router.callback_query.register(on_press, F.data)
    return router
