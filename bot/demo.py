"""The local demo: `remediator run` with no TELEGRAM_BOT_TOKEN.

The built-in Bot API emulator stands in for Telegram; the real application (webhook server,
pipeline, outbox, aiogram polling) runs against it, a few sample alerts are posted to the live
webhook, an approver's button press is simulated, and the conversation is printed as it happens.
Alerts sent with curl to the printed URL show up too, and lines typed in the terminal act as the
approver would in Telegram (bot/demo_console.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from importlib import resources

import httpx
from pydantic import SecretStr

from bot.app import Application
from bot.demo_console import DemoConsole, Transcript, drive, typed_lines
from bot.settings import Settings
from bot.telegram_emulator import BotAPIEmulator

DEMO_CHAT_ID = -1001000000001
DEMO_APPROVER_ID = 1001
DEMO_TOKEN = "123456789:DEMO-demo-demo-demo-demo-demo-demo1"
DEMO_WEBHOOK_TOKEN = "demo-webhook-token"


def demo_settings(settings: Settings) -> Settings:
    """The user's settings with the Telegram side pointed at the demo chat and approver."""
    update: dict[str, object] = {
        "telegram_chat_id": settings.telegram_chat_id or DEMO_CHAT_ID,
        "telegram_approvers": settings.telegram_approvers or [DEMO_APPROVER_ID],
    }
    if settings.webhook_token is None:
        update["webhook_token"] = SecretStr(DEMO_WEBHOOK_TOKEN)
    return settings.model_copy(update=update)


async def _post_samples(base: str, token: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for entry in sorted(resources.files("bot.samples").iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".json"):
                await client.post(f"{base}/webhook/glitchtip/{token}", content=entry.read_bytes(),
                                  headers={"Content-Type": "application/json"})
                await asyncio.sleep(0.5)


async def _press_first_approve(emu: BotAPIEmulator, chat_id: int, user_id: int) -> None:
    """Show a decision: the demo approver presses Approve on the first card that offers it."""
    def first_card() -> tuple[int, str] | None:
        for msg in emu.messages(chat_id):
            for row in msg.buttons:
                for button in row:
                    if str(button.get("callback_data", "")).startswith("ap:"):
                        return msg.message_id, button["callback_data"]
        return None

    with contextlib.suppress(TimeoutError):
        found = await emu.wait_for(first_card, timeout=30)
        await asyncio.sleep(2)
        emu.press_button(chat_id, found[0], user_id, found[1], first_name="Demo", username="demo_approver")


def _stdin_fd() -> int | None:
    """The terminal (or pipe) to read typed commands from; None when there is no stdin at all.
    A closed or empty stdin (CI, tests) just ends the reading: the demo runs on as before."""
    try:
        return sys.stdin.fileno() if sys.stdin is not None else None
    except (OSError, ValueError):
        return None


async def run_demo(settings: Settings) -> None:
    settings = demo_settings(settings)
    emu = BotAPIEmulator(on_event=Transcript())
    await emu.start()
    assert settings.telegram_chat_id is not None and settings.webhook_token is not None
    app = Application(settings, chat_id=settings.telegram_chat_id, token=DEMO_TOKEN, api_base=emu.base_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()  # a failed start (e.g. a busy WEBHOOK_PORT) has stopped the app: stop the emulator too
    except BaseException:
        await emu.stop()
        raise
    assert app.web is not None
    base = f"http://{settings.webhook_host}:{app.web.port}"
    token = settings.webhook_token.get_secret_value()
    print(
        "\n=== remediator local demo (no TELEGRAM_BOT_TOKEN set) ===\n"
        f"Telegram is emulated at {emu.base_url}; the chat is printed below.\n"
        f"Webhook: {base}/webhook/glitchtip/<WEBHOOK_TOKEN>  (token: {token if token == DEMO_WEBHOOK_TOKEN else 'yours'})\n"
        "Try:  curl -X POST -H 'Content-Type: application/json' "
        f"-d '{{\"title\": \"Error: connect ECONNREFUSED 127.0.0.1:6379\", \"project\": \"api\"}}' "
        f"{base}/webhook/generic/{token if token == DEMO_WEBHOOK_TOKEN else '$WEBHOOK_TOKEN'}\n"
        f"Type here as the approver (user {settings.telegram_approvers[0]}): /status, /incidents, approve 3, "
        "reject 3, p1 3, resolve 3, alert <text> (help lists all).\n"
        "Numbers in the transcript (#3) are incident numbers, as on the cards.\n"
        "Press Ctrl+C to stop.\n",
        flush=True,
    )
    extras = [
        asyncio.create_task(_post_samples(base, token)),
        asyncio.create_task(_press_first_approve(emu, settings.telegram_chat_id, settings.telegram_approvers[0])),
    ]
    stdin = _stdin_fd()
    if stdin is not None:
        console = DemoConsole(emu, settings.telegram_chat_id, settings.telegram_approvers[0],
                              f"{base}/webhook/generic/{token}")
        extras.append(asyncio.create_task(drive(console, typed_lines(stdin), lambda note: print(note, flush=True))))
    try:
        await app.wait(stop)
    finally:
        for task in extras:
            task.cancel()
        await app.stop()
        await emu.stop()
