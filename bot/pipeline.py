"""The pipeline worker: drains the inbox into incidents and cards.

Each inbox row is processed inside a savepoint of a batch transaction: the incident change,
its card in the outbox and the row's `done` mark commit together, so a crash at any point
either leaves the row pending (processed again after restart) or fully done, never half.
A row that fails is retried with backoff and, after `max_attempts`, parked as failed and
reported in chat: never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Protocol

from bot.card import esc, test_notification_text
from bot.cards import CardPublisher
from bot.ingest import PayloadError, parse_payload
from bot.models import Alert, AlertKind, Triage, utcnow
from bot.recurrence import check_recurrence
from bot.redact import Redactor
from storage.audit import AuditRepository
from storage.db import Database, Transaction
from storage.inbox import InboxItem, InboxRepository
from storage.incidents import IncidentRepository
from storage.kv import KeyValueRepository

log = logging.getLogger(__name__)


class Triager(Protocol):
    def triage(self, alert: Alert) -> Triage: ...


class Proposer(Protocol):
    async def propose(
        self, tx: Transaction, incident_id: int, alert: Alert, triage: Triage
    ) -> tuple[int, bool] | None: ...


def redact_alert(redactor: Redactor, alert: Alert) -> Alert:
    """The alert with secrets masked in every free-text field, before anything else sees it."""
    r = redactor.redact
    return dataclasses.replace(
        alert,
        title=r(alert.title),
        message=r(alert.message),
        stacktrace=r(alert.stacktrace),
        url=r(alert.url) if alert.url else None,
        release=r(alert.release) if alert.release else None,
        server=r(alert.server) if alert.server else None,
        tags={k: r(v) for k, v in alert.tags.items()},
    )


class PipelineWorker:
    def __init__(
        self,
        db: Database,
        triager: Triager,
        redactor: Redactor,
        cards: CardPublisher,
        *,
        proposer: Proposer | None = None,
        max_attempts: int = 5,
        on_committed: Callable[[], None] | None = None,
        on_auto_approved: Callable[[int], None] | None = None,
        batch_size: int = 200,
    ) -> None:
        self.db = db
        self.triager = triager
        self.redactor = redactor
        self.cards = cards
        self.proposer = proposer
        self.max_attempts = max_attempts
        self.on_committed = on_committed or (lambda: None)
        self.on_auto_approved = on_auto_approved
        self.batch_size = batch_size
        self._auto_approved: list[int] = []
        self.wake = asyncio.Event()
        self._stopping = False

    def notify(self) -> None:
        """Called by the web server after an inbox insert commits."""
        self.wake.set()

    def stop(self) -> None:
        self._stopping = True
        self.wake.set()

    async def run(self) -> None:
        """Drain until stopped; a batch in flight finishes before the loop exits."""
        while not self._stopping:
            # Cleared before looking for work, so a notify during the drain is not lost.
            self.wake.clear()
            try:
                processed = await self.drain_once()
            except Exception:  # the loop must survive anything; the rows stay pending
                log.exception("pipeline batch failed; retrying shortly")
                processed = 0
                await asyncio.sleep(1)
            if processed or self._stopping:
                continue
            timeout = 5.0
            next_due = await InboxRepository(self.db).next_due_at()
            if next_due is not None:
                timeout = max(0.05, min(timeout, next_due - _now()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def drain_once(self) -> int:
        items = await InboxRepository(self.db).due(self.batch_size)
        if not items:
            return 0
        self._auto_approved = []
        async with self.db.transaction() as tx:
            for item in items:
                await self._process(tx, item)
        self.on_committed()
        # Started only after the commit: the approval is recorded before the action runs.
        for proposal_id in self._auto_approved:
            if self.on_auto_approved is not None:
                self.on_auto_approved(proposal_id)
        return len(items)

    async def _process(self, tx: Transaction, item: InboxItem) -> None:
        await tx.execute("SAVEPOINT item")
        auto_before = len(self._auto_approved)
        try:
            await self._handle(tx, item)
            await InboxRepository(tx).mark_done(item.id)
            await tx.execute("RELEASE item")
        except Exception as exc:
            await tx.execute("ROLLBACK TO item")
            del self._auto_approved[auto_before:]
            await tx.execute("RELEASE item")
            await self._failed(tx, item, exc)

    async def _failed(self, tx: Transaction, item: InboxItem, exc: Exception) -> None:
        error = self.redactor.redact(f"{type(exc).__name__}: {exc}")[:500]
        attempts = item.attempts + 1
        inbox = InboxRepository(tx)
        # A body that no longer parses (schema changed between versions) cannot get better by waiting.
        if attempts >= self.max_attempts or isinstance(exc, PayloadError):
            log.error("inbox #%s parked after %s attempts: %s", item.id, attempts, error)
            await inbox.park(item.id, error)
            await AuditRepository(tx).record("inbox.parked", "failed", detail={"inbox_id": item.id, "error": error})
            await self.cards.say(
                tx,
                f"⚠️ An incoming alert (inbox #{item.id}) could not be processed after {attempts} "
                f"tries and was set aside:\n<code>{esc(error, 400)}</code>\nIt is kept in the database.",
            )
        else:
            delay = min(300.0, 2.0**attempts)
            log.warning("inbox #%s failed (attempt %s), retry in %.0fs: %s", item.id, attempts, delay, error)
            await inbox.retry_later(item.id, error, delay)

    async def _handle(self, tx: Transaction, item: InboxItem) -> None:
        parsed = parse_payload(item.source, item.body)
        if parsed.test_notification is not None:
            await self.cards.say(tx, test_notification_text(self.redactor.redact(parsed.test_notification)))
            await AuditRepository(tx).record("alert.test", "answered", detail={"inbox_id": item.id})
        for alert in parsed.alerts:
            await self._handle_alert(tx, redact_alert(self.redactor, alert))
        await KeyValueRepository(tx).set("last_alert_at", utcnow().isoformat())

    async def _handle_alert(self, tx: Transaction, alert: Alert) -> None:
        incidents = IncidentRepository(tx)
        now = utcnow()
        current = await incidents.find_open(alert.fingerprint)
        if alert.kind is AlertKind.UPTIME_UP:
            if current is not None and await incidents.resolve(current.id, "uptime monitor (back up)", now):
                await AuditRepository(tx).record(
                    "incident.resolved", "resolved", actor_name="glitchtip", incident_id=current.id,
                    detail={"reason": "monitor back up"},
                )
                await self.cards.publish(tx, current.id)
            return
        await check_recurrence(tx, alert.fingerprint, self.cards)
        if current is not None:
            await incidents.record_repeat(current.id, alert.count, now)
            await self.cards.publish(tx, current.id)
            return
        regression_of = await incidents.latest_resolved_id(alert.fingerprint)
        triage = self.triager.triage(alert)
        incident = await incidents.create(alert, triage, now, self.cards.chat_id, regression_of)
        await AuditRepository(tx).record(
            "incident.regression" if regression_of else "incident.opened", "opened", incident_id=incident.id,
            detail={"priority": triage.priority.value, "category": triage.category.value, "rule": triage.rule_id,
                    "fingerprint": alert.fingerprint},
        )
        if self.proposer is not None:
            proposed = await self.proposer.propose(tx, incident.id, alert, triage)
            if proposed is not None and proposed[1]:
                self._auto_approved.append(proposed[0])
        await self.cards.publish(tx, incident.id)


def _now() -> float:
    import time

    return time.time()
