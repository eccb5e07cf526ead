"""``python -m bot.telegram_emulator``: see :func:`bot.telegram_emulator.cli.main`."""

from .cli import main

main()
