"""Shared fixtures: the Bot API emulator on 127.0.0.1 and the real application wired to it."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bot.app import Application
from bot.settings import Settings
from bot.telegram_emulator import BotAPIEmulator

DATA = Path(__file__).parent / "data"
CHAT_ID = -1001234567890
APPROVER = 111
APPROVER_2 = 222
STRANGER = 999
WEBHOOK_TOKEN = "test-webhook-token-0123456789"
BOT_TOKEN = "123456789:TEST-test-test-test-test-test-test1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def glitchtip_sample(name: str) -> bytes:
    return (DATA / "glitchtip" / name).read_bytes()


def corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().splitlines() if line.strip()]


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "telegram_chat_id": CHAT_ID,
        "telegram_approvers": [APPROVER, APPROVER_2],
        "webhook_host": "127.0.0.1",
        "webhook_port": 0,
        "webhook_token": SecretStr(WEBHOOK_TOKEN),
        "database_path": tmp_path / "remediator.db",
        # Fast pacing so tests do not wait on Telegram's real per-chat limits.
        "telegram_rate_per_chat": 200.0,
        "telegram_group_per_minute": 100000,
        "telegram_rate_global": 1000.0,
        # Storm summaries are tested on their own (tests/test_storms_and_poison.py).
        "storm_cards_per_minute": 1000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def emulator() -> AsyncIterator[BotAPIEmulator]:
    async with BotAPIEmulator() as emu:
        yield emu


class Harness:
    """The application under test plus helpers to post alerts and read the chat."""

    def __init__(self, app: Application, emu: BotAPIEmulator, client: httpx.AsyncClient) -> None:
        self.app = app
        self.emu = emu
        self.client = client

    @property
    def base(self) -> str:
        assert self.app.web is not None
        return f"http://127.0.0.1:{self.app.web.port}"

    async def post(self, source: str, body: bytes | dict[str, Any], token: str = WEBHOOK_TOKEN) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(
            f"{self.base}/webhook/{source}/{token}", content=content, headers={"Content-Type": "application/json"}
        )

    def cards(self) -> list[Any]:
        return [m for m in self.emu.messages(CHAT_ID) if m.from_bot]

    async def wait_cards(self, n: int, timeout: float = 10) -> list[Any]:
        await self.emu.wait_for(lambda: len(self.cards()) >= n, timeout=timeout)
        return self.cards()

    async def wait_text(self, message_id: int, needle: str, timeout: float = 10) -> Any:
        return await self.emu.wait_for(
            lambda: (m := self.emu.message(CHAT_ID, message_id)) and needle in m.plain_text and m, timeout=timeout
        )

    async def press(
        self, message_id: int, data: str, user_id: int = APPROVER, name: str = "Ann", stale: bool = False
    ) -> dict[str, Any]:
        query = self.emu.press_button(CHAT_ID, message_id, user_id, data, first_name=name, stale=stale)
        return await self.emu.wait_for_answer(query, timeout=10)

    async def command(self, text: str, user_id: int = APPROVER, chat_id: int = CHAT_ID) -> Any:
        before = len(self.emu.messages(chat_id))
        self.emu.send_user_message(chat_id, user_id, text)
        # The reply is the next bot message in that chat.
        return await self.emu.wait_for(
            lambda: next((m for m in self.emu.messages(chat_id)[before:] if m.from_bot), None), timeout=10
        )


@pytest.fixture
async def start_app(
    emulator: BotAPIEmulator, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    started: list[Application] = []
    client = httpx.AsyncClient(timeout=10)

    async def start(**overrides: Any) -> Harness:
        settings = make_settings(tmp_path, **overrides)
        app = Application(settings, chat_id=CHAT_ID, token=BOT_TOKEN, api_base=emulator.base_url)
        await app.start()
        started.append(app)
        return Harness(app, emulator, client)

    yield start
    for app in started:
        if app.web is not None and app.db._conn is not None:
            await app.stop()
    await client.aclose()
