"""The one door for every Claude call: the daily spend cap, usage recording, and errors made plain.

Every caller (triage, investigations) asks `ClaudeGate.create` instead of the SDK, so that

- no call starts once today's recorded spend has reached LLM_DAILY_BUDGET_USD (`BudgetSpent`,
  said once a day in the chat; the day is the TIMEZONE's calendar day);
- every call's tokens and estimated cost (prices from LLM_PRICES_FILE, never from code) are
  stored, ok or failed (storage/llm.py);
- every SDK failure arrives as `ClaudeUnavailable` with a short reason a person can read on a
  card ("rate limited (429)", "timed out after 20 s"), and the caller falls back to what works
  without Claude.

Calls already in flight when the cap is crossed still finish (their cost is known only after),
so the day's spend can pass the cap by at most what those calls cost.

The SDK is imported only when a gate is made (it takes seconds to import): without
ANTHROPIC_API_KEY the bot never loads it.
"""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from bot.llm.prices import Prices, load_prices
from storage.db import Database, Executor
from storage.kv import KeyValueRepository
from storage.llm import LlmUsageRepository

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import Message

    from bot.settings import Settings

log = logging.getLogger(__name__)

#: kv key holding the day (ISO date) the budget was last announced as spent
_ANNOUNCED_KEY = "llm_budget_announced_day"


def claude_client(
    api_key: str, *, base_url: str | None = None, timeout_s: float | None = None
) -> anthropic.AsyncAnthropic:
    """The SDK's client, without retries (a failure is reported at once and the caller falls back).

    Its http client shares one TLS context per process (the one the SDK would make, from the same
    CA bundle): each client the SDK builds for itself loads the bundle again, about 30 ms of CPU at
    every start. `timeout_s` None keeps the SDK's default timeout.
    """
    import anthropic

    http = anthropic.DefaultAsyncHttpxClient(verify=_tls_context())
    return anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0, http_client=http,
                                    timeout=anthropic.NOT_GIVEN if timeout_s is None else timeout_s)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    import httpx2  # the SDK's http library

    return httpx2.create_ssl_context()


class ClaudeUnavailable(Exception):
    """Claude did not answer usably; `reason` is short and fit for a card."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BudgetSpent(ClaudeUnavailable):
    """Today's Claude budget is spent: no call was made."""


class Announcer(Protocol):
    """Says something in the chat inside a transaction (CardPublisher.say)."""

    def say(self, tx: Executor, html_text: str) -> Awaitable[None]: ...


@dataclass(frozen=True)
class ClaudeModels:
    triage: str
    investigate: str


class ClaudeGate:
    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        db: Database,
        *,
        models: ClaudeModels,
        prices: Prices,
        daily_budget_usd: float,
        timeout_s: float,
        announcer: Announcer | None = None,
        timezone: str = "UTC",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.db = db
        self.models = models
        self.prices = prices
        self.daily_budget_usd = daily_budget_usd
        self.timeout_s = timeout_s
        self.announcer = announcer
        self.tz = ZoneInfo(timezone)
        self.clock = clock
        self._announced_day: str | None = None  # the day the spent budget was said (also kept in the database)

    @classmethod
    def from_settings(cls, settings: Settings, db: Database, cards: Announcer | None) -> ClaudeGate | None:
        """The gate, or None without ANTHROPIC_API_KEY (everything then works without Claude)."""
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else ""
        if not key:
            return None
        client = claude_client(key, base_url=settings.anthropic_base_url or None, timeout_s=settings.anthropic_timeout_s)
        models = ClaudeModels(
            triage=settings.anthropic_triage_model or settings.anthropic_model,
            investigate=settings.anthropic_investigate_model or settings.anthropic_model,
        )
        return cls(client, db, models=models, prices=load_prices(settings.llm_prices_file),
                   daily_budget_usd=settings.llm_daily_budget_usd, timeout_s=settings.anthropic_timeout_s,
                   announcer=cards, timezone=settings.timezone)

    async def close(self) -> None:
        await self.client.close()

    # ---- the budget

    def day_start(self) -> datetime:
        """Midnight today in TIMEZONE (the budget's day)."""
        local = self.clock().astimezone(self.tz)
        return datetime.combine(local.date(), time(0), tzinfo=self.tz)

    async def spent_today(self) -> float:
        return await LlmUsageRepository(self.db).spent_since(self.day_start())

    async def budget_left(self) -> float:
        return max(0.0, self.daily_budget_usd - await self.spent_today())

    async def _check_budget(self) -> None:
        spent = await self.spent_today()
        if spent >= self.daily_budget_usd:
            await self._announce_spent_once(spent)
            raise BudgetSpent(f"daily budget spent (${self.daily_budget_usd:.2f})")

    async def _announce_spent_once(self, spent: float) -> None:
        if self.announcer is None:
            return
        today = self.day_start().date().isoformat()
        if self._announced_day == today:
            return  # every later call of the day: no write transaction just to find it was said
        tomorrow = self.day_start() + timedelta(days=1)
        async with self.db.transaction() as tx:
            kv = KeyValueRepository(tx)
            said = await kv.get(_ANNOUNCED_KEY) == today
            if not said:
                await kv.set(_ANNOUNCED_KEY, today)
                await self.announcer.say(tx, html.escape(self._spent_text(spent, tomorrow), quote=False))
        self._announced_day = today  # in the database too: a restart does not say it again
        if said:
            return
        log.warning("Claude's daily budget is spent ($%.2f of $%.2f)", spent, self.daily_budget_usd)

    def _spent_text(self, spent: float, until: datetime) -> str:
        if self.daily_budget_usd <= 0:
            return ("💸 LLM_DAILY_BUDGET_USD is 0: no Claude calls are made. Triage uses the rules and "
                    "investigations run without AI (raise it to use Claude).")
        return (f"💸 Claude's daily budget is spent (${spent:.2f} of LLM_DAILY_BUDGET_USD "
                f"${self.daily_budget_usd:.2f}): no Claude calls until {until:%Y-%m-%d %H:%M} {self.tz.key}. "
                "Triage uses the rules and investigations run without AI until then.")

    # ---- the call

    async def create(self, *, purpose: str, model: str, incident_id: int | None,
                     **messages_create_kwargs: Any) -> Message:
        """`client.messages.create(model=model, **kwargs)` within the budget; every outcome recorded.

        Raises BudgetSpent before the call when today's budget is spent, ClaudeUnavailable(reason)
        when the call fails. `timeout` in the kwargs overrides ANTHROPIC_TIMEOUT_S for this call."""
        await self._check_budget()
        timeout_s = float(messages_create_kwargs.pop("timeout", self.timeout_s))
        try:
            # The SDK's timeout is per network read; asyncio's bounds the whole answer.
            async with asyncio.timeout(timeout_s):
                message = await self.client.messages.create(model=model, timeout=timeout_s,
                                                            **messages_create_kwargs)
        except BaseException as exc:
            reason = failure_reason(exc, timeout_s)
            if reason is None:
                raise  # cancellation, or a bug of ours: not Claude's failure
            await self._record(purpose, model, incident_id, 0, 0, ok=False, error=reason)
            log.warning("Claude call (%s) failed: %s", purpose, reason)
            raise ClaudeUnavailable(reason) from exc
        usage = getattr(message, "usage", None)
        input_tokens = int(getattr(usage, "input_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "output_tokens", 0) or 0)
        await self._record(purpose, model, incident_id, input_tokens, output_tokens, ok=True, error=None)
        return message

    async def _record(self, purpose: str, model: str, incident_id: int | None, input_tokens: int,
                      output_tokens: int, *, ok: bool, error: str | None) -> None:
        await LlmUsageRepository(self.db).record(
            purpose=purpose, model=model, incident_id=incident_id, input_tokens=input_tokens,
            output_tokens=output_tokens, cost_usd=self.prices.cost(model, input_tokens, output_tokens), ok=ok,
            error=error, at=self.clock(),
        )


def failure_reason(exc: BaseException, timeout_s: float) -> str | None:
    """A short reason for a failed call, or None when `exc` is not a failure of the call itself."""
    import anthropic  # loaded already: a call was made

    if isinstance(exc, anthropic.APITimeoutError | TimeoutError):
        return f"timed out after {timeout_s:g} s"
    if isinstance(exc, anthropic.APIConnectionError):
        return "cannot connect to the API"
    if isinstance(exc, anthropic.APIStatusError):
        return _status_reason(exc.status_code)
    if isinstance(exc, anthropic.APIResponseValidationError | ValueError):
        return "malformed answer"  # not JSON, or not a message
    if isinstance(exc, anthropic.AnthropicError):
        return f"API error ({type(exc).__name__})"
    return None


def _status_reason(status: int) -> str:
    named = {
        400: "request refused (400)",
        401: "API key refused (401)",
        403: "permission denied (403)",
        404: "model or endpoint not found (404)",
        413: "request too large (413)",
        429: "rate limited (429)",
        529: "overloaded (529)",
    }
    if status in named:
        return named[status]
    if status >= 500:
        return f"server error ({status})"
    return f"API error ({status})"
