"""GlitchTip's worker (bot/glitchtip/service.py) driven step by step on a clock the test moves,
against the fake GlitchTip on 127.0.0.1: no Bot API emulator, no waiting for real minutes.

The end-to-end tests (tests/test_glitchtip_e2e.py) prove the wire and the cards with a pause of a
second; these prove the worker keeps to what GlitchTip asked for, however long that is.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.card_publisher import CardPublisher
from bot.glitchtip.api import GlitchTipClient
from bot.glitchtip.card import glitchtip_card_extras
from bot.glitchtip.service import GlitchTipService
from bot.models import Alert, AlertKind, Category, Priority, Triage, utcnow
from bot.redact import Redactor
from bot.rollout import RolloutPolicy, Stage
from storage.db import Database
from storage.incidents import IncidentRepository
from storage.outbox import OutboxRepository
from tests.conftest import CHAT_ID
from tests.glitchtip_fake import TOKEN, FakeGlitchTip

ISSUE_URL = "http://127.0.0.1:8000/test-org/issues/1"  # the host the fake's permalinks name


class Clock:
    """The service's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    db: Database
    fake: FakeGlitchTip
    clock: Clock
    service: GlitchTipService

    async def open_incident(self) -> int:
        """A GlitchTip incident as the pipeline leaves it when the first card could not wait: an
        `enrich` job queued with it."""
        alert = Alert(source="glitchtip", kind=AlertKind.ERROR, title="ConnectionRefusedError: probe",
                      fingerprint="glitchtip:127.0.0.1:8000:issue:1", external_id="1", url=ISSUE_URL)
        triage = Triage(priority=Priority.P2, category=Category.CODE, likely_cause="a refused connection")
        async with self.db.transaction() as tx:
            incident = await IncidentRepository(tx).create(alert, triage, utcnow(), CHAT_ID, None)
            await self.service.on_opened(tx, incident)
            await self.service.cards.publish(tx, incident.id)
        return incident.id

    async def job(self) -> tuple[str, int, float, str | None]:
        [row] = await self.db.fetchall("SELECT state, attempts, next_attempt_at, last_error FROM glitchtip_jobs")
        return row["state"], row["attempts"], row["next_attempt_at"], row["last_error"]

    async def card_text(self, incident_id: int) -> str:
        [item] = [i for i in await OutboxRepository(self.db).pending() if i.incident_id == incident_id]
        return str(item.payload["text"])


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    fake = await FakeGlitchTip().start()
    fake.add_issue("1")
    db = await Database(tmp_path / "glitchtip.db").connect()
    clock = Clock()
    cards = CardPublisher(CHAT_ID, RolloutPolicy(Stage(2)), extras=glitchtip_card_extras)
    service = GlitchTipService(db, GlitchTipClient(fake.base_url, TOKEN, timeout_s=5.0), Redactor([]), cards,
                               clock=clock)
    yield Rig(db, fake, clock, service)
    await service.close()
    await db.close()
    await fake.stop()


async def test_a_429_stops_every_call_for_as_long_as_retry_after_says_and_spends_no_attempt(rig):
    incident_id = await rig.open_incident()
    rig.fake.fail(429, retry_after="60")  # the job's first read
    assert await rig.service.step() == 0.0  # the round that met the limit
    calls = len(rig.fake.seen)
    assert await rig.service.step() == 60.0  # then it sleeps as long as GlitchTip asked, not its 5 s backoff
    state, attempts, due_at, error = await rig.job()
    assert (state, attempts) == ("pending", 0)  # a limit is GlitchTip's, not the job's failure
    assert due_at == pytest.approx(time.time() + 60.0, abs=5.0)
    assert error is not None and "429" in error
    assert "rate limited by GlitchTip (429" in await rig.card_text(incident_id)

    rig.clock.now += 59.0
    assert await rig.service.step() == 1.0  # a second before the end: still no call
    assert len(rig.fake.seen) == calls

    rig.clock.now += 1.0
    assert await rig.service.step() > 0  # the pause is over: it looks (the row is due in wall time)
    assert rig.service._outage.left() == 0.0


async def test_after_the_pause_the_job_reads_glitchtip_and_the_card_gets_its_details(rig):
    incident_id = await rig.open_incident()
    rig.fake.fail(429, retry_after="60")
    await rig.service.step()
    rig.clock.now += 60.0
    # The row's due time is wall-clock time: read it as due, as the worker will in a minute.
    await rig.db.execute("UPDATE glitchtip_jobs SET next_attempt_at = ?", (time.time(),))
    assert await rig.service.step() == 0.0
    state, attempts, _, _ = await rig.job()
    assert (state, attempts) == ("done", 0)
    text = await rig.card_text(incident_id)
    assert "send_event.py:6 in connect" in text and "rate limited" not in text
