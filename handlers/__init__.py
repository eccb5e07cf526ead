"""aiogram routers, composed in one place."""

from __future__ import annotations

from aiogram import Router

from handlers import callbacks, commands, errors


def build_router() -> Router:
    root = Router(name="remediator")
    root.include_router(commands.build())
    root.include_router(callbacks.build())
    root.include_router(errors.build())
    return root
