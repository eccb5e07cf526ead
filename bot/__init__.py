"""remediator: production errors in, triage cards out, humans decide."""

from bot.deferred_telegram_types import install as _defer_telegram_types

__version__ = "0.1.0"

# Before anything imports aiogram: its ~440 Telegram types are built on first use, not at import (4-5 s).
_defer_telegram_types()
