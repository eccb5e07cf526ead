"""Claude's triage end to end: the real app, the Bot API emulator, the real `anthropic` SDK against the
loopback fake (and the fake GlitchTip for the enrichment), over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from bot.telegram_emulator import strip_html
from bot.triage.claude import TOOL_NAME
from storage.llm import LlmUsageRepository, triage_state
from tests.anthropic_fake import AnthropicFake, anthropic_fake, held_reply, tool_use_reply
from tests.conftest import glitchtip_sample
from tests.glitchtip_fake import TOKEN, FakeGlitchTip

ANSWER = {"priority": "P1", "category": "database", "tags": ["postgres"],
          "likely_cause": "Claude: the database refuses connections.", "affected_users": "all API users",
          "owner": None, "confidence": 0.9}


@pytest.fixture
async def claude() -> AsyncIterator[AnthropicFake]:
    async with anthropic_fake() as fake:
        yield fake


def claude_on(fake: AnthropicFake, **more: Any) -> dict[str, Any]:
    return {"anthropic_api_key": SecretStr("sk-ant-e2e-key"), "anthropic_base_url": fake.base_url,
            "anthropic_triage_model": "claude-haiku-5-5", **more}


async def test_the_card_goes_out_with_the_rules_then_claudes_answer_edits_it(start_app: Any, claude: AnthropicFake):
    h = await start_app(**claude_on(claude, claude_triage_wait_s=0.3))
    late, answer_now = held_reply(tool_use_reply(TOOL_NAME, ANSWER))
    claude.script(late)
    body = {"title": "OperationalError: could not connect to server: Connection refused", "project": "api"}
    assert (await h.post("generic", body)).status_code == 202

    [card] = await h.wait_cards(1)
    first = strip_html(card.history[0])  # as first sent: Claude had not answered within 0.3 s
    assert "P0 · infrastructure" in first and "rules; asking Claude…" in first  # the rules' triage
    answer_now.set()
    edited = await h.wait_text(card.message_id, "triage: Claude (confidence 90%)")
    assert "Claude: the database refuses connections." in edited.plain_text
    assert "P1 · database" in edited.plain_text and "rules said P0 · infrastructure" in edited.plain_text
    assert "asking Claude" not in edited.plain_text

    [incident_id] = [r["id"] for r in await h.app.db.fetchall("SELECT id FROM incidents")]
    assert await triage_state(h.app.db, incident_id) == ("claude", "done", None)
    usage = await LlmUsageRepository(h.app.db).summary(datetime.now(UTC) - timedelta(hours=1))
    assert (usage.calls, usage.by_purpose["triage"][0]) == (1, 1)
    assert claude.headers[0]["authorization"] == "Bearer sk-ant-e2e-key"


async def test_glitchtips_details_go_into_the_question(start_app: Any, claude: AnthropicFake):
    glitchtip = await FakeGlitchTip().start()
    glitchtip.add_issue("1")
    try:
        h = await start_app(**claude_on(claude, glitchtip_url=glitchtip.base_url, glitchtip_token=TOKEN))
        claude.script(tool_use_reply(TOOL_NAME, ANSWER))
        assert (await h.post("glitchtip", glitchtip_sample("real_issue_alert.json"))).status_code == 202
        [card] = await h.wait_cards(1)
        await h.wait_text(card.message_id, "triage: Claude")
        question = claude.requests[0]["messages"][0]["content"]
        enrichment = json.loads(question[question.index("<enrichment>") + 12:question.index("</enrichment>")])
        assert enrichment["culprit"] == "__main__ in connect"
        assert any("send_event.py:6" in frame for frame in enrichment["crashing_frames"])
    finally:
        await glitchtip.stop()
