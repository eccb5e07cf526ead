"""A new bot's first start: a token but no chat or approvers yet. It answers /start, posts no card."""

from __future__ import annotations

import httpx
import pytest

from bot.app import Application
from bot.settings import SettingsError, check_for_run
from tests.conftest import BOT_TOKEN, WEBHOOK_TOKEN, make_settings


def test_a_token_without_chat_and_approvers_is_setup_mode_and_one_of_them_alone_is_an_error(tmp_path) -> None:
    from pydantic import SecretStr

    setup = make_settings(tmp_path, telegram_bot_token=SecretStr(BOT_TOKEN), telegram_chat_id=None,
                          telegram_approvers=[])
    assert setup.setup_mode
    check_for_run(setup)  # no error: it can start and tell people the ids
    half = make_settings(tmp_path, telegram_bot_token=SecretStr(BOT_TOKEN), telegram_approvers=[])
    assert not half.setup_mode
    with pytest.raises(SettingsError, match="TELEGRAM_APPROVERS"):
        check_for_run(half)


async def test_setup_mode_answers_start_with_the_ids_and_keeps_alerts_waiting(emulator, tmp_path) -> None:
    from pydantic import SecretStr

    settings = make_settings(tmp_path, telegram_bot_token=SecretStr(BOT_TOKEN), telegram_chat_id=None,
                             telegram_approvers=[])
    app = Application(settings, chat_id=0, token=BOT_TOKEN, api_base=emulator.base_url)
    await app.start()
    try:
        group = -1009876543210
        emulator.send_user_message(group, 4242, "/start")
        reply = await emulator.wait_for(
            lambda: next((m for m in emulator.messages(group) if m.from_bot), None), timeout=20)
        assert str(group) in reply.plain_text and "4242" in reply.plain_text
        async with httpx.AsyncClient() as client:
            posted = await client.post(f"http://127.0.0.1:{app.web.port}/webhook/generic/{WEBHOOK_TOKEN}",
                                       json={"title": "Error: boom"})
        assert posted.status_code == 202
        row = await app.db.fetchone("SELECT COUNT(*) AS n FROM inbox WHERE state = 'pending'")
        assert row["n"] == 1  # kept for when the chat is configured (no pipeline runs in setup mode)
        assert await app.db.fetchone("SELECT id FROM incidents") is None
    finally:
        await app.stop()
