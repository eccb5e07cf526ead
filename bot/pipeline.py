"""The pipeline worker: drains the inbox into incidents and cards.

Each inbox row is processed inside a savepoint of a batch transaction: the incident change,
its card in the outbox and the row's `done` mark commit together, so a crash at any point
either leaves the row pending (processed again after restart) or fully done, never half.
A row that fails is retried with backoff and, after `max_attempts`, parked as failed and
reported in chat: never dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from bot.card import esc, test_notification_text
from bot.cards import CardPublisher
from bot.ingest import ParsedPayload, PayloadError, parse_payload
from bot.models import Alert, AlertKind, Triage, utcnow
from bot.recurrence import check_recurrence, has_fix_watches, muted_until
from bot.redact import Redactor
from bot.worker import WakeableLoop
from storage.audit import AuditRepository
from storage.db import Database, Executor, Transaction
from storage.inbox import InboxItem, InboxRepository
from storage.incidents import IncidentRepository
from storage.kv import KeyValueRepository

log = logging.getLogger(__name__)


class Triager(Protocol):
    def triage(self, alert: Alert) -> Triage: ...


class Proposer(Protocol):
    async def propose(
        self, tx: Executor, incident_id: int, alert: Alert, triage: Triage
    ) -> tuple[int, bool] | None: ...


def redact_alert(redactor: Redactor, alert: Alert) -> Alert:
    """The alert with secrets masked in every text field, before anything else sees it."""
    r = redactor.redact

    def opt(value: str | None) -> str | None:
        return r(value) if value else value

    return dataclasses.replace(
        alert,
        title=r(alert.title),
        message=r(alert.message),
        stacktrace=r(alert.stacktrace),
        url=opt(alert.url),
        release=opt(alert.release),
        server=opt(alert.server),
        project=opt(alert.project),
        environment=opt(alert.environment),
        level=opt(alert.level),
        tags={k: r(v) for k, v in alert.tags.items()},
    )


class PipelineWorker(WakeableLoop):
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
        batch_size: int = 500,
        gather_s: float = 0.05,
        max_new_per_tx: int = 25,
    ) -> None:
        super().__init__()
        self.db = db
        self.triager = triager
        self.redactor = redactor
        self.cards = cards
        self.proposer = proposer
        self.max_attempts = max_attempts
        self.on_committed = on_committed or (lambda: None)
        self.on_auto_approved = on_auto_approved
        self.batch_size = batch_size
        self.gather_s = gather_s
        self.max_new_per_tx = max_new_per_tx

    async def step(self) -> float:
        """Drain a batch; when idle, sleep until notified or the next retry is due."""
        processed = await self.drain_once()
        if processed >= self.batch_size:
            return 0.0  # a backlog: keep going
        if processed:
            # Under a steady stream, gather a little before the next batch: each batch holds the
            # database lock that webhook requests wait for, so fewer, larger batches keep the
            # webhook fast. A card appears at most this much later.
            await asyncio.sleep(self.gather_s)
            return 0.0
        next_due = await InboxRepository(self.db).next_due_at()
        return 5.0 if next_due is None else max(0.05, min(5.0, next_due - time.time()))

    async def drain_once(self) -> int:
        items = await InboxRepository(self.db).due(self.batch_size)
        if not items:
            return 0
        try:
            await self._drain(items)
        except _ChunkFailed as failed:
            # One transaction of the batch failed as a whole (e.g. while writing its results): take
            # its rows one by one, so a single bad row is counted, retried and finally parked alone.
            log.error("pipeline transaction of %s rows failed (%s); retrying them one by one",
                      len(failed.items), failed.error)
            for item in failed.items:
                try:
                    if len(failed.items) == 1:
                        raise failed
                    await self._drain([item])
                except _ChunkFailed as alone:
                    async with self.db.transaction() as tx:
                        await self._failed(tx, item, alone.error)
        return len(items)

    async def _drain(self, items: list[InboxItem]) -> None:
        # Parsing is CPU work: done before the transaction so the database lock (which webhook
        # requests wait for) is held only for the statements.
        parsed = []
        for n, item in enumerate(items, 1):
            parsed.append((item, _parse(item)))
            if n % 50 == 0:
                await asyncio.sleep(0)  # let webhook requests in between: a big batch must not stall them
        position = 0
        while position < len(parsed):
            # A transaction ends early after `max_new_per_tx` new incidents (triage, card, proposal
            # each): repeats are cheap, new incidents are not, and webhook requests wait for the lock.
            batch = _Batch()
            start = position
            try:
                async with self.db.transaction() as tx:
                    batch.watching = await has_fix_watches(tx)
                    while position < len(parsed) and batch.created < self.max_new_per_tx:
                        item, payload = parsed[position]
                        position += 1
                        await self._process(tx, item, payload, batch)
                    await self._flush(tx, batch)
            except Exception as exc:
                raise _ChunkFailed([item for item, _ in parsed[start:position]], exc) from exc
            self.on_committed()
            # Started only after the commit: the approval is recorded before the action runs.
            for proposal_id in batch.auto_approved:
                if self.on_auto_approved is not None:
                    self.on_auto_approved(proposal_id)
            await asyncio.sleep(0)

    async def _flush(self, tx: Transaction, batch: _Batch) -> None:
        """Write what the batch's repeats add up to, then each touched card once."""
        incidents = IncidentRepository(tx)
        now = utcnow()
        for incident_id, count in batch.repeats.items():
            if count:
                await incidents.record_repeat(incident_id, count, now)
        if batch.done:
            await InboxRepository(tx).mark_done_many(batch.done)
            await KeyValueRepository(tx).set("last_alert_at", now.isoformat())
        for incident_id in batch.dirty:
            await self.cards.publish(tx, incident_id)

    async def _process(
        self, tx: Transaction, item: InboxItem, payload: ParsedPayload | Exception, batch: _Batch
    ) -> None:
        item_tx = _LazySavepoint(tx)
        changes = batch.child()
        try:
            if isinstance(payload, Exception):
                raise payload
            await self._handle(item_tx, item, payload, changes)
            await item_tx.release()
        except Exception as exc:
            await item_tx.rollback()
            await self._failed(tx, item, exc)
            return
        batch.merge(changes)
        batch.done.append(item.id)

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

    async def _handle(self, tx: Executor, item: InboxItem, parsed: ParsedPayload, changes: _Batch) -> None:
        if parsed.test_notification is not None:
            await self.cards.say(tx, test_notification_text(self.redactor.redact(parsed.test_notification)))
            await AuditRepository(tx).record("alert.test", "answered", detail={"inbox_id": item.id})
        for alert in parsed.alerts:
            await self._handle_alert(tx, alert, changes)

    async def _open_id(self, tx: Executor, fingerprint: str, changes: _Batch) -> int | None:
        known = changes.open_id(fingerprint)
        if known is not _UNKNOWN:
            return known  # type: ignore[return-value]
        latest = await IncidentRepository(tx).latest_for_fingerprint(fingerprint)
        open_id = latest[0] if latest and latest[1] else None
        changes.open_ids[fingerprint] = open_id
        if latest and not latest[1]:
            changes.resolved_ids[fingerprint] = latest[0]
        return open_id

    async def _handle_alert(self, tx: Executor, alert: Alert, changes: _Batch) -> None:
        incidents = IncidentRepository(tx)
        now = utcnow()
        current_id = await self._open_id(tx, alert.fingerprint, changes)
        if alert.kind is AlertKind.UPTIME_UP:
            if current_id is not None:
                await self._flush_repeats_of(tx, current_id, changes)
                if await incidents.resolve(current_id, "uptime monitor (back up)", now):
                    await AuditRepository(tx).record(
                        "incident.resolved", "resolved", actor_name="glitchtip", incident_id=current_id,
                        detail={"reason": "monitor back up"},
                    )
                    changes.open_ids[alert.fingerprint] = None
                    changes.resolved_ids[alert.fingerprint] = current_id
                    changes.dirty.add(current_id)
            return
        if changes.watching and alert.fingerprint not in changes.recurrence_checked:
            changes.recurrence_checked.add(alert.fingerprint)
            await check_recurrence(tx, alert.fingerprint, self.cards)
        if current_id is not None:
            changes.repeats[current_id] = changes.repeats.get(current_id, 0) + alert.count
            changes.dirty.add(current_id)
            return
        # Only a new incident stores the alert's text: redacted here, before triage and storage.
        alert = redact_alert(self.redactor, alert)
        known = changes.resolved_id(alert.fingerprint)
        regression_of: int | None = (
            await incidents.latest_resolved_id(alert.fingerprint) if known is _UNKNOWN else known  # type: ignore[assignment]
        )
        triage = self.triager.triage(alert)
        incident = await incidents.create(alert, triage, now, self.cards.chat_id, regression_of)
        changes.open_ids[alert.fingerprint] = incident.id
        if regression_of and (until := await muted_until(tx, alert.fingerprint)):
            await incidents.mute(incident.id, until)
        await AuditRepository(tx).record(
            "incident.regression" if regression_of else "incident.opened", "opened", incident_id=incident.id,
            detail={"priority": triage.priority.value, "category": triage.category.value, "rule": triage.rule_id,
                    "fingerprint": alert.fingerprint},
        )
        if self.proposer is not None:
            proposed = await self.proposer.propose(tx, incident.id, alert, triage)
            if proposed is not None and proposed[1]:
                changes.auto_approved.append(proposed[0])
        changes.dirty.add(incident.id)
        changes.created += 1

    async def _flush_repeats_of(self, tx: Executor, incident_id: int, changes: _Batch) -> None:
        """Write pending repeats of one incident now (before it is resolved mid-batch)."""
        count = changes.pending_repeats(incident_id)
        if count:
            await IncidentRepository(tx).record_repeat(incident_id, count, utcnow())
            # Cancels them in the batch when this row is merged; a rollback discards it with the write.
            changes.repeats[incident_id] = changes.repeats.get(incident_id, 0) - count


_UNKNOWN = object()


class _ChunkFailed(Exception):
    """A batch transaction rolled back: these rows are exactly as they were before it."""

    def __init__(self, items: list[InboxItem], error: Exception) -> None:
        super().__init__(str(error))
        self.items = items
        self.error = error


def _parse(item: InboxItem) -> ParsedPayload | Exception:
    try:
        return parse_payload(item.source, item.body)
    except Exception as exc:  # reported per row by _process
        return exc


class _LazySavepoint:
    """A row's view of the batch transaction: the savepoint is taken at its first statement.

    Most rows in a storm are repeats handled in memory: they cost no statement at all.
    """

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self.started = False

    async def _begin(self) -> None:
        if not self.started:
            self.started = True
            await self._tx.savepoint("item")

    async def execute(self, sql: str, params: Any = ()) -> int:
        await self._begin()
        return await self._tx.execute(sql, params)

    async def insert(self, sql: str, params: Any = ()) -> int:
        await self._begin()
        return await self._tx.insert(sql, params)

    async def executemany(self, sql: str, rows: Any) -> None:
        await self._begin()
        await self._tx.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Any = ()) -> Any:
        await self._begin()
        return await self._tx.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Any = ()) -> Any:
        await self._begin()
        return await self._tx.fetchall(sql, params)

    async def release(self) -> None:
        if self.started:
            await self._tx.release("item")

    async def rollback(self) -> None:
        if self.started:
            await self._tx.rollback_to("item")


@dataclasses.dataclass
class _Batch:
    """What a batch of inbox rows adds up to, written once at its end.

    Each row works on a `child()`; only a row that succeeded is merged in, so a row rolled back
    to its savepoint leaves no trace in the batch either.
    """

    parent: _Batch | None = None
    open_ids: dict[str, int | None] = dataclasses.field(default_factory=dict)  # fingerprint -> open incident
    resolved_ids: dict[str, int] = dataclasses.field(default_factory=dict)  # fingerprint -> last resolved
    repeats: dict[int, int] = dataclasses.field(default_factory=dict)  # incident -> repeats to add
    dirty: set[int] = dataclasses.field(default_factory=set)  # incidents whose card must be re-rendered
    recurrence_checked: set[str] = dataclasses.field(default_factory=set)
    auto_approved: list[int] = dataclasses.field(default_factory=list)
    done: list[int] = dataclasses.field(default_factory=list)
    watching: bool = False
    created: int = 0  # new incidents in this transaction

    def child(self) -> _Batch:
        return _Batch(parent=self, watching=self.watching)

    def open_id(self, fingerprint: str) -> object:
        if fingerprint in self.open_ids:
            return self.open_ids[fingerprint]
        return self.parent.open_id(fingerprint) if self.parent else _UNKNOWN

    def resolved_id(self, fingerprint: str) -> object:
        """The newest resolved incident of a fingerprint, as far as this batch has seen."""
        if fingerprint in self.resolved_ids:
            return self.resolved_ids[fingerprint]
        if fingerprint in self.open_ids:  # looked up, and nothing was resolved at the time
            return None
        return self.parent.resolved_id(fingerprint) if self.parent else _UNKNOWN

    def pending_repeats(self, incident_id: int) -> int:
        own = self.repeats.get(incident_id, 0)
        return own + (self.parent.pending_repeats(incident_id) if self.parent else 0)

    def merge(self, child: _Batch) -> None:
        self.open_ids.update(child.open_ids)
        self.resolved_ids.update(child.resolved_ids)
        for incident_id, count in child.repeats.items():
            self.repeats[incident_id] = self.repeats.get(incident_id, 0) + count
        self.dirty |= child.dirty
        self.recurrence_checked |= child.recurrence_checked
        self.auto_approved += child.auto_approved
        self.created += child.created

