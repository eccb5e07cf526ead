"""Operator commands. Thin: pass the command to bot/chat_commands.py and send back its reply.

/start and /help reach here from any chat (handlers/middlewares.py lets them through); the
service decides what a stranger sees.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.chat_commands import CommandService
from handlers.callbacks import actor_of

NAMES = ("help", "status", "incidents", "incident", "mute", "resolve", "killswitch", "investigate", "digest", "stats",
         "overrides")


async def on_command(message: Message, command: CommandObject, commands: CommandService) -> None:
    reply = await commands.run(actor_of(message.from_user), command.command.lower(), command.args, message.chat.id)
    if reply.html is not None:
        await message.answer(reply.html, reply_markup=_keyboard(reply.buttons))


def _keyboard(rows: list[list[tuple[str, str]]]) -> InlineKeyboardMarkup | None:
    """Buttons under a reply (Apply under /stats, Remove under /overrides)."""
    if not rows:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=text, callback_data=data) for text, data in row] for row in rows]
    )


async def on_shutdown(commands: CommandService) -> None:
    """When polling stops: audit what the service only counted (a flood of /start)."""
    await commands.close()


def build() -> Router:
    """A fresh router (aiogram attaches a router to one dispatcher only)."""
    router = Router(name="commands")
    router.message.register(on_command, CommandStart())
    router.message.register(on_command, Command(*NAMES))
    router.shutdown.register(on_shutdown)
    return router
