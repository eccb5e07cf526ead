"""Operator commands. Thin: pass the command to bot/chat_commands.py and send back its reply.

/start and /help reach here from any chat (handlers/middlewares.py lets them through); the
service decides what a stranger sees.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import Message

from bot.chat_commands import CommandService
from handlers.callbacks import actor_of

NAMES = ("help", "status", "incidents", "incident", "mute", "resolve", "killswitch", "investigate", "digest", "stats")


async def on_command(message: Message, command: CommandObject, commands: CommandService) -> None:
    reply = await commands.run(actor_of(message.from_user), command.command.lower(), command.args, message.chat.id)
    if reply.html is not None:
        await message.answer(reply.html)


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
