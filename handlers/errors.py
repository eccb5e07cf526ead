"""The last resort: a handler that raised still answers the person, and the error is logged.

Without it a press keeps spinning and a command gets no reply, with nothing said in the chat.
"""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.types import ErrorEvent

log = logging.getLogger(__name__)

SORRY = "⚠️ Something went wrong and was logged; check the card before trying again."


async def on_error(event: ErrorEvent) -> bool:
    log.error("handler failed on update %s", event.update.update_id, exc_info=event.exception)
    try:
        if event.update.callback_query is not None:
            await event.update.callback_query.answer(SORRY)
        elif event.update.message is not None:
            await event.update.message.answer(SORRY)
    except Exception:  # already answered, or Telegram unreachable: the log line above is what remains
        log.warning("could not tell the user about the failure of update %s", event.update.update_id, exc_info=True)
    return True  # handled: aiogram does not log it a second time


def build() -> Router:
    """A fresh router (aiogram attaches a router to one dispatcher only)."""
    router = Router(name="errors")
    router.errors.register(on_error)
    return router
