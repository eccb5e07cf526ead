"""The Claude gate (bot/llm/gate.py) with the real `anthropic` SDK against the loopback fake:
the daily spend cap stops calls exactly at the cap and is said once a day in the chat (also after a
restart), every call's usage and cost is stored, and every API failure comes back as a plain reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import SecretStr

from bot.llm import BudgetSpent, ClaudeGate, ClaudeModels, ClaudeUnavailable, PricesError, load_prices
from bot.llm.prices import Price, Prices
from storage.db import Database, Executor
from storage.llm import LlmUsageRepository
from tests.anthropic_fake import (
    AnthropicFake,
    anthropic_fake,
    error_reply,
    raw_reply,
    slow_reply,
    text_reply,
)
from tests.conftest import make_settings

if TYPE_CHECKING:
    import anthropic  # the SDK loads when a test makes a client (AnthropicFake.client), not at collection

# 1000 input + 500 output tokens at $2 / $4 per million: exactly $0.004 a call.
PRICES = Prices(default=Price(input=2.0, output=4.0), models={})
ASK = {"max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}


class Chat:
    """Stands in for CardPublisher.say: what the gate said in the chat, as stored with the transaction."""

    def __init__(self) -> None:
        self.said: list[str] = []

    async def say(self, tx: Executor, html_text: str) -> None:
        self.said.append(html_text)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[AnthropicFake]:
    async with anthropic_fake() as running:
        yield running


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database(tmp_path / "gate.db").connect()
    yield database
    for client in _clients:
        await client.close()
    _clients.clear()
    await database.close()


_clients: list[anthropic.AsyncAnthropic] = []


def make_gate(fake: AnthropicFake, db: Database, *, budget: float = 1.0, chat: Chat | None = None,
              clock: Clock | None = None, timeout_s: float = 5.0) -> ClaudeGate:
    client = fake.client()
    _clients.append(client)
    return ClaudeGate(client, db, models=ClaudeModels(triage="claude-haiku-5-5", investigate="claude-sonnet-5-5"),
                      prices=PRICES, daily_budget_usd=budget, timeout_s=timeout_s, announcer=chat,
                      clock=clock or Clock(datetime.now(UTC)))


def priced_reply() -> Any:
    return text_reply("ok", input_tokens=1000, output_tokens=500)


async def test_calls_stop_exactly_at_the_daily_cap_and_it_is_said_once(fake: AnthropicFake, db: Database) -> None:
    chat = Chat()
    gate = make_gate(fake, db, budget=0.012, chat=chat)  # three calls of $0.004
    fake.default = lambda body: priced_reply()
    for _ in range(3):
        await gate.create(purpose="triage", model="claude-haiku-5-5", incident_id=1, **ASK)
    assert await gate.spent_today() == pytest.approx(0.012)
    for _ in range(2):
        with pytest.raises(BudgetSpent) as refused:
            await gate.create(purpose="triage", model="claude-haiku-5-5", incident_id=1, **ASK)
    assert fake.calls == 3  # the fourth and fifth never left the machine
    assert refused.value.reason == "daily budget spent ($0.01)"
    assert isinstance(refused.value, ClaudeUnavailable)
    assert len(chat.said) == 1 and "daily budget is spent" in chat.said[0]


async def test_one_call_below_the_cap_still_goes(fake: AnthropicFake, db: Database) -> None:
    gate = make_gate(fake, db, budget=0.0121)
    fake.default = lambda body: priced_reply()
    for _ in range(4):  # $0.012 spent is still below $0.0121: the fourth goes, then none
        await gate.create(purpose="triage", model="m", incident_id=None, **ASK)
    with pytest.raises(BudgetSpent):
        await gate.create(purpose="triage", model="m", incident_id=None, **ASK)
    assert fake.calls == 4


async def test_a_zero_budget_means_no_call_at_all(fake: AnthropicFake, db: Database) -> None:
    gate = make_gate(fake, db, budget=0.0)
    with pytest.raises(BudgetSpent):
        await gate.create(purpose="investigate", model="m", incident_id=None, **ASK)
    assert fake.calls == 0


async def test_the_budget_is_per_day_and_the_announcement_survives_a_restart(
        fake: AnthropicFake, db: Database) -> None:
    clock = Clock(datetime(2026, 11, 30, 10, 0, tzinfo=UTC))
    chat = Chat()
    fake.default = lambda body: priced_reply()
    gate = make_gate(fake, db, budget=0.004, chat=chat, clock=clock)
    await gate.create(purpose="triage", model="m", incident_id=None, **ASK)
    with pytest.raises(BudgetSpent):
        await gate.create(purpose="triage", model="m", incident_id=None, **ASK)
    restarted = make_gate(fake, db, budget=0.004, chat=chat, clock=clock)  # a new process, same database
    with pytest.raises(BudgetSpent):
        await restarted.create(purpose="triage", model="m", incident_id=None, **ASK)
    assert len(chat.said) == 1

    clock.now += timedelta(days=1)  # a new day: calls again, and a new announcement when spent again
    await restarted.create(purpose="triage", model="m", incident_id=None, **ASK)
    with pytest.raises(BudgetSpent):
        await restarted.create(purpose="triage", model="m", incident_id=None, **ASK)
    assert fake.calls == 2 and len(chat.said) == 2


@pytest.mark.parametrize(("reply", "reason"), [
    (error_reply(429, "Number of request tokens has exceeded your per-minute rate limit"), "rate limited (429)"),
    (error_reply(529, "Overloaded"), "overloaded (529)"),
    (error_reply(500, "Internal server error"), "server error (500)"),
    (error_reply(401, "invalid x-api-key"), "API key refused (401)"),
    (raw_reply(200, '{"type": "message", "content": [ {"type": "te'), "malformed answer"),
    (slow_reply(3, text_reply("late")), "timed out after 0.5 s"),
])
async def test_every_api_failure_is_a_plain_reason_and_is_recorded(
        fake: AnthropicFake, db: Database, reply: Any, reason: str) -> None:
    gate = make_gate(fake, db, timeout_s=0.5)
    fake.script(reply)
    with pytest.raises(ClaudeUnavailable) as failed:
        await gate.create(purpose="triage", model="claude-haiku-5-5", incident_id=7, **ASK)
    assert failed.value.reason == reason
    summary = await LlmUsageRepository(db).summary(datetime.now(UTC) - timedelta(hours=1))
    assert (summary.calls, summary.failed_calls, summary.cost_usd) == (1, 1, 0.0)


async def test_usage_and_cost_are_recorded_per_purpose(fake: AnthropicFake, db: Database) -> None:
    gate = make_gate(fake, db)
    fake.script(priced_reply(), priced_reply(), error_reply(529))
    await gate.create(purpose="triage", model="claude-haiku-5-5", incident_id=1, **ASK)
    await gate.create(purpose="investigate", model="claude-sonnet-5-5", incident_id=1, **ASK)
    with pytest.raises(ClaudeUnavailable):
        await gate.create(purpose="investigate", model="claude-sonnet-5-5", incident_id=1, **ASK)
    summary = await LlmUsageRepository(db).summary(datetime.now(UTC) - timedelta(hours=1))
    assert summary.calls == 3 and summary.failed_calls == 1
    assert (summary.input_tokens, summary.output_tokens) == (2000, 1000)
    assert summary.cost_usd == pytest.approx(0.008)
    assert summary.by_purpose == {"investigate": (2, pytest.approx(0.004)), "triage": (1, pytest.approx(0.004))}
    assert [r["model"] for r in fake.requests] == ["claude-haiku-5-5", "claude-sonnet-5-5", "claude-sonnet-5-5"]


async def test_from_settings_is_off_without_a_key_and_uses_the_settings_with_one(
        fake: AnthropicFake, db: Database, tmp_path: Path) -> None:
    assert ClaudeGate.from_settings(make_settings(tmp_path), db, None) is None
    prices = tmp_path / "prices.toml"
    prices.write_text('[default]\ninput = 1\noutput = 1\n[models."cheap"]\ninput = 0.5\noutput = 0.5\n')
    settings = make_settings(tmp_path, anthropic_api_key=SecretStr("sk-ant-secret-key"),
                             anthropic_base_url=fake.base_url, anthropic_triage_model="cheap",
                             llm_prices_file=prices)
    gate = ClaudeGate.from_settings(settings, db, None)
    assert gate is not None
    # The SDK's client with the settings' timeout and no retries (its http client made by bot.llm.gate).
    assert (gate.client.timeout, gate.client.max_retries) == (settings.anthropic_timeout_s, 0)
    assert (gate.models.triage, gate.models.investigate) == ("cheap", "claude-sonnet-5-5")
    assert gate.prices.price("cheap").input == 0.5
    fake.script(text_reply("hi"))
    await gate.create(purpose="triage", model=gate.models.triage, incident_id=None, **ASK)
    assert fake.headers[0]["authorization"] == "Bearer sk-ant-secret-key"
    assert "sk-ant-secret-key" not in repr(settings)
    await gate.close()


def test_the_shipped_prices_load_and_a_bad_prices_file_is_named(tmp_path: Path) -> None:
    shipped = load_prices()
    assert shipped.price("claude-haiku-5-5").input < shipped.price("some-future-model").input
    bad = tmp_path / "prices.toml"
    bad.write_text('[default]\ninput = "cheap"\noutput = 1\n')
    with pytest.raises(PricesError, match=r"prices.toml: \[default\]: input must be a number"):
        load_prices(bad)
