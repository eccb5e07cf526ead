"""The standalone emulator (``python -m bot.telegram_emulator --port 8081``), printing the conversation."""

from __future__ import annotations

import argparse
import asyncio

from .models import EmulatorEvent
from .render import format_event
from .server import BotAPIEmulator


def _print_event(event: EmulatorEvent) -> None:
    print(format_event(event), flush=True)


async def _serve(host: str, port: int, token: str | None, latency: float) -> None:
    emulator = BotAPIEmulator(token=token, on_event=_print_event, latency=latency)
    await emulator.start(host, port)
    print(f"Telegram Bot API emulator listening on {emulator.base_url}", flush=True)
    print(
        f"  bot API: {emulator.base_url}/bot<token>/<method>   control: {emulator.base_url}/_emulator/state",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the emulator until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m bot.telegram_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument("--token", default=None, help="accept only this bot token")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every API answer")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args.host, args.port, args.token, args.latency))
    except KeyboardInterrupt:
        pass
