"""The pipeline worker: drains the inbox into incidents and cards.

Each inbox row is processed inside a savepoint of a batch transaction: the incident change,
its card in the outbox and the row's `done` mark commit together, so a crash at any point
either leaves the row pending (processed again after restart) or fully done, never half.
A row that fails is retried with backoff and, after `max_attempts`, parked as failed and
reported in chat: never dropped.

No alert can stall the bot: the CPU work of a row (parse, fingerprint, redact, triage) runs
in a worker thread under a time budget, before the transaction, so neither the event loop
(webhook, polling, the kill switch) nor the database lock waits for it. Each attempt is
committed before its work starts; a row whose attempt never ended (a crash, a blown budget)
is retried alone and parked after `max_attempts`, so a poison alert cannot freeze a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from bot.card_publisher import CardPublisher
from bot.card_render import esc, test_notification_text
from bot.ingest import ParsedPayload, PayloadError, parse_payload
from bot.models import Alert, AlertKind, Incident, Triage, utcnow
from bot.overrides import with_override
from bot.recurrence import check_recurrence, has_fix_watches, muted_until
from bot.redact import Redactor
from bot.resolution import MONITOR_BACK_UP, ResolveResult, is_monitor_fingerprint, resolve_incident
from bot.storm import WINDOW_S as STORM_WINDOW_S
from bot.storm import StormGate, storm_summary
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


class SecondOpinion(Protocol):
    """Triage asked of Claude after the incident is recorded (bot/triage/claude.py)."""

    def wanted(self, alert: Alert) -> bool: ...

    async def hold(self, tx: Executor, incident_id: int) -> None: ...

    def start(self, incident_ids: list[int]) -> None: ...


class Tracker(Protocol):
    """An error tracker's API that knows more than its webhook (GlitchTip's: bot/glitchtip/service.py)."""

    async def prefetch(self, alerts: list[Alert]) -> dict[str, Alert]:
        """For alerts about to open incidents: fingerprint -> the richer alert, within a short budget."""
        ...

    async def on_opened(self, tx: Executor, incident: Incident) -> None: ...

    async def on_repeat(self, tx: Executor, incident_id: int) -> None: ...


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


class RowTooSlow(Exception):
    """A row's CPU work took longer than its time budget."""


class NotPrepared(Exception):
    """A row would open an incident its preparation did not foresee: retried, and prepared then."""


#: bodies the webhook parsed and handed over, waiting for the worker (beyond this they are parsed again)
MAX_HANDED_OVER = 5000


@dataclasses.dataclass
class _Prepared:
    """An inbox row after its CPU work: the parsed payload (or why not), and for each fingerprint
    it opens, the redacted alert and its triage."""

    item: InboxItem
    payload: ParsedPayload | Exception
    opened: dict[str, tuple[Alert, Triage]] = dataclasses.field(default_factory=dict)


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
        identify: Callable[[Alert], Alert] | None = None,
        storm: StormGate | None = None,
        row_budget_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        tracker: Tracker | None = None,
        second_opinion: SecondOpinion | None = None,
        after_resolve: Callable[[], None] | None = None,
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
        # Refines an alert's fingerprint with what decides its fix (bot/fix_identity.py).
        self.identify = identify
        self.storm = storm
        self.row_budget_s = row_budget_s
        self.clock = clock
        self.tracker = tracker  # GlitchTip's API when configured: richer first cards, links, comebacks
        # Claude's triage (ANTHROPIC_API_KEY): asked in the background after the commit, never waited on here.
        self.second_opinion = second_opinion
        # A monitor back up resolved an incident: the hook a human's resolve calls too (DecisionService),
        # so GlitchTip's PUT and the GitHub comment go once it is committed, not at the workers' next look.
        self.after_resolve = after_resolve
        self._handed_over: dict[int, ParsedPayload] = {}
        self._cpu = ThreadPoolExecutor(1, thread_name_prefix="pipeline-cpu")
        self._summary_due: float | None = None  # when the current storm's summary is due
        self._held_back_checked = False  # cards held back before a restart are summarised at the first step

    def accept_parsed(self, inbox_id: int, payload: ParsedPayload) -> None:
        """The webhook parsed this body already: keep the result so it is parsed once, not twice.
        (After a restart the worker parses the stored body.)"""
        if len(self._handed_over) < MAX_HANDED_OVER:
            self._handed_over[inbox_id] = payload
        self.notify()

    async def step(self) -> float:
        """Drain a batch; when idle, sleep until notified or the next retry (or storm summary) is due."""
        if not self._held_back_checked:
            self._held_back_checked = True
            await self.summarise_storm()
        processed = await self.drain_once()
        await self.summarise_storm(due_only=True)
        if processed >= self.batch_size:
            return 0.0  # a backlog: keep going
        if processed:
            # Under a steady stream, gather a little before the next batch: each batch holds the
            # database lock that webhook requests wait for, so fewer, larger batches keep the
            # webhook fast. A card appears at most this much later.
            await asyncio.sleep(self.gather_s)
            return 0.0
        next_due = await InboxRepository(self.db).next_due_at()
        wait = 5.0 if next_due is None else max(0.05, min(5.0, next_due - time.time()))
        if self._summary_due is not None:
            wait = min(wait, max(0.05, self._summary_due - self.clock()))
        return wait

    def close(self) -> None:
        self._cpu.shutdown(wait=False, cancel_futures=True)

    async def drain_once(self) -> int:
        items = await InboxRepository(self.db).due(self.batch_size)
        if not items:
            return 0
        interrupted = [item for item in items if item.started]
        if interrupted:
            # Their last attempt never ended (the process died, or a budget was blown): each goes
            # alone, so a poison row costs no other row an attempt.
            for item in interrupted:
                await self._drain_rows([item])
            return len(interrupted)
        await self._drain_rows(items)
        return len(items)

    async def _drain_rows(self, items: list[InboxItem]) -> None:
        spent = [item for item in items if item.attempts >= self.max_attempts]
        if spent:
            async with self.db.transaction() as tx:
                for item in spent:
                    await self._park(tx, item, f"its processing never finished in {item.attempts} attempts "
                                               "(the process stopped, or it exceeded its time budget)")
            self.on_committed()
            items = [item for item in items if item not in spent]
            if not items:
                return
        # The attempt is committed before the work starts: if the work never ends, it still counts.
        async with self.db.transaction() as tx:
            await InboxRepository(tx).claim([item.id for item in items])
        items = [dataclasses.replace(item, attempts=item.attempts + 1) for item in items]
        prepared = await self._prepare(items)
        try:
            await self._commit(prepared)
        except _ChunkFailed as failed:
            # One transaction of the batch failed as a whole (e.g. while writing its results): take
            # its rows one by one, so a single bad row is counted, retried and finally parked alone.
            log.error("pipeline transaction of %s rows failed (%s); retrying them one by one",
                      len(failed.rows), failed.error)
            for row in failed.rows:
                try:
                    if len(failed.rows) == 1:
                        raise failed
                    await self._commit([row])
                except _ChunkFailed as alone:
                    async with self.db.transaction() as tx:
                        await self._failed(tx, row.item, alone.error)
                    self.on_committed()

    # ------------------------------------------------------------------ CPU work, off the event loop

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn` in the worker thread within the row budget."""
        future = asyncio.get_running_loop().run_in_executor(self._cpu, fn, *args)
        try:
            return await asyncio.wait_for(future, self.row_budget_s)
        except TimeoutError:
            # A thread cannot be stopped: leave it to finish on its own and carry on with a new one.
            self._cpu.shutdown(wait=False, cancel_futures=True)
            self._cpu = ThreadPoolExecutor(1, thread_name_prefix="pipeline-cpu")
            raise RowTooSlow(f"its processing took longer than its {self.row_budget_s:g} s budget") from None

    def _parse(self, item: InboxItem, handed_over: ParsedPayload | None) -> ParsedPayload:
        payload = handed_over if handed_over is not None else parse_payload(item.source, item.body)
        if self.identify is None:
            return payload
        return dataclasses.replace(payload, alerts=[self.identify(alert) for alert in payload.alerts])

    def _redact_and_triage(self, alerts: list[Alert]) -> dict[str, tuple[Alert, Triage]]:
        """Only a new incident stores the alert's text: redacted here, before triage and storage."""
        opened = {}
        for alert in alerts:
            redacted = redact_alert(self.redactor, alert)
            opened[alert.fingerprint] = (redacted, self.triager.triage(redacted))
        return opened

    async def _prepare(self, items: list[InboxItem]) -> list[_Prepared]:
        prepared: list[_Prepared] = []
        for item in items:
            handed_over = self._handed_over.pop(item.id, None)
            payload: ParsedPayload | Exception
            try:
                if handed_over is not None and self.identify is None:
                    payload = handed_over  # nothing left to compute
                else:
                    payload = await self._off_loop(self._parse, item, handed_over)
            except Exception as exc:  # reported per row when the batch is committed
                payload = exc
            prepared.append(_Prepared(item, payload))
        # The first alert of each fingerprint without an open incident will open one: its
        # redaction and triage are done here too, so the transaction holds the lock only for SQL.
        fingerprints = {
            alert.fingerprint for row in prepared if not isinstance(row.payload, Exception)
            for alert in row.payload.alerts if alert.kind is not AlertKind.UPTIME_UP
        }
        states = await IncidentRepository(self.db).fingerprint_states(sorted(fingerprints))
        seen: set[str] = set()
        back_up: set[str] = set()  # a monitor "back up" earlier in the batch: its next "down" reopens
        for row in prepared:
            if isinstance(row.payload, Exception):
                continue
            opening = []
            for alert in row.payload.alerts:
                fingerprint = alert.fingerprint
                if alert.kind is AlertKind.UPTIME_UP:
                    back_up.add(fingerprint)
                    continue
                reopening = fingerprint in back_up
                if not reopening and (states.get(fingerprint, (None, None))[0] is not None or fingerprint in seen):
                    continue
                back_up.discard(fingerprint)
                seen.add(fingerprint)
                opening.append(alert)
            if opening:
                try:
                    row.opened = await self._off_loop(self._redact_and_triage, opening)
                except Exception as exc:
                    row.payload = exc
        if self.tracker is not None:
            await self._ask_tracker(prepared)
        return prepared

    async def _ask_tracker(self, prepared: list[_Prepared]) -> None:
        """New incidents' first cards carry what the tracker's API adds (culprit, stack, level) when
        it answers within its budget, and triage runs again on that richer text: a stack often
        decides the category. Whatever comes later edits the card instead."""
        assert self.tracker is not None
        try:
            richer = await self.tracker.prefetch([alert for row in prepared for alert, _ in row.opened.values()])
        except Exception:  # the tracker is a bonus: the cards go out without it
            log.exception("asking the error tracker's API failed")
            return
        for row in prepared:
            again = [richer[fingerprint] for fingerprint in row.opened if fingerprint in richer]
            if again:
                try:
                    row.opened.update(await self._off_loop(self._triage_again, again))
                except Exception:
                    log.exception("triage of the enriched alerts failed; the webhook's triage stands")

    def _triage_again(self, alerts: list[Alert]) -> dict[str, tuple[Alert, Triage]]:
        """Triage of alerts that are already redacted (the tracker redacts what it adds)."""
        return {alert.fingerprint: (alert, self.triager.triage(alert)) for alert in alerts}

    # ------------------------------------------------------------------ SQL, in batch transactions

    async def _commit(self, prepared: list[_Prepared]) -> None:
        position = 0
        while position < len(prepared):
            # A transaction ends early after `max_new_per_tx` new incidents: repeats are cheap, new
            # incidents are not, and webhook requests wait for the lock.
            batch = _Batch()
            start = position
            try:
                async with self.db.transaction() as tx:
                    batch.watching = await has_fix_watches(tx)
                    while position < len(prepared) and batch.created < self.max_new_per_tx:
                        row = prepared[position]
                        position += 1
                        await self._process(tx, row, batch)
                    await self._flush(tx, batch)
            except Exception as exc:
                raise _ChunkFailed(prepared[start:position], exc) from exc
            self.on_committed()
            if batch.resolved and self.after_resolve is not None:
                self.after_resolve()
            if batch.second_opinion and self.second_opinion is not None:
                self.second_opinion.start(batch.second_opinion)  # the incidents are committed: Claude may read them
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

    async def _process(self, tx: Transaction, row: _Prepared, batch: _Batch) -> None:
        item_tx = _LazySavepoint(tx)
        changes = batch.child()
        changes.opening = row.opened
        try:
            if isinstance(row.payload, Exception):
                raise row.payload
            await self._handle(item_tx, row.item, row.payload, changes)
            await item_tx.release()
        except Exception as exc:
            await item_tx.rollback()
            await self._failed(tx, row.item, exc)
            return
        batch.merge(changes)
        batch.done.append(row.item.id)

    async def summarise_storm(self, *, due_only: bool = False) -> int:
        """Post one message naming the incidents whose cards a storm held back; returns how many."""
        if due_only and (self._summary_due is None or self.clock() < self._summary_due):
            return 0
        self._summary_due = None
        try:
            held = await self._post_storm_summary()
        except Exception:
            # Nothing was committed: try again a little later, or the held-back cards stay unseen.
            self._summary_due = self.clock() + 30.0
            raise
        if held:
            self.on_committed()
        return held

    async def _post_storm_summary(self) -> int:
        async with self.db.transaction() as tx:
            incidents = IncidentRepository(tx)
            held = await incidents.held_back()
            if not held:
                return 0
            span = (utcnow() - min(h.first_seen for h in held)).total_seconds()
            per_minute = self.storm.per_minute if self.storm else 0
            await self.cards.say(tx, storm_summary(held, per_minute, span))
            await incidents.mark_summarised([h.id for h in held])
            await AuditRepository(tx).record(
                "storm.summarised", f"{len(held)} cards held back",
                detail={"incidents": [h.id for h in held][:200], "limit_per_minute": per_minute},
            )
        return len(held)

    async def _failed(self, tx: Transaction, item: InboxItem, exc: Exception) -> None:
        """This attempt failed (`item.attempts` already counts it): retry later, or park and say so."""
        error = self.redactor.redact(f"{type(exc).__name__}: {exc}"[:2000])[:500]
        # A body that no longer parses (schema changed between versions) cannot get better by waiting.
        if item.attempts >= self.max_attempts or isinstance(exc, PayloadError):
            await self._park(tx, item, error)
        else:
            delay = min(300.0, 2.0**item.attempts)
            log.warning("inbox #%s failed (attempt %s), retry in %.0fs: %s", item.id, item.attempts, delay, error)
            await InboxRepository(tx).retry_later(item.id, error, delay)

    async def _park(self, tx: Executor, item: InboxItem, error: str) -> None:
        log.error("inbox #%s parked after %s attempts: %s", item.id, item.attempts, error)
        await InboxRepository(tx).park(item.id, error)
        await AuditRepository(tx).record("inbox.parked", "failed", detail={"inbox_id": item.id, "error": error})
        await self.cards.say(
            tx,
            f"⚠️ An incoming alert (inbox #{item.id}) could not be processed after {item.attempts} "
            f"tries and was set aside:\n<code>{esc(error, 400)}</code>\nIt is kept in the database.",
        )

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
            # A "back up" resolves only its monitor's own incident: a body can claim anything.
            if current_id is not None and is_monitor_fingerprint(alert.fingerprint):
                await self._flush_repeats_of(tx, current_id, changes)
                resolution = await resolve_incident(tx, self.cards, current_id, MONITOR_BACK_UP, via="uptime")
                if resolution.result is ResolveResult.RESOLVED:  # its card is already re-rendered
                    changes.open_ids[alert.fingerprint] = None
                    changes.resolved_ids[alert.fingerprint] = current_id
                    changes.resolved += 1
            return
        if changes.watching and alert.fingerprint not in changes.recurrence_checked:
            changes.recurrence_checked.add(alert.fingerprint)
            await check_recurrence(tx, alert.fingerprint, self.cards)
        if current_id is not None:
            changes.repeats[current_id] = changes.repeats.get(current_id, 0) + alert.count
            changes.dirty.add(current_id)
            if self.tracker is not None and alert.source == "glitchtip":
                await self.tracker.on_repeat(tx, current_id)  # came back in GlitchTip?
            return
        # Only a new incident stores the alert's text, redacted before triage and storage, off the
        # loop in _prepare. If this row was not prepared to open one (the incident was resolved, or
        # the row meant to open it rolled back, since), it fails this attempt and is prepared again:
        # CPU work never runs here, under the database lock.
        opened = changes.opening.get(alert.fingerprint)
        if opened is None:
            raise NotPrepared("the incident this alert belonged to changed while it was processed; retrying")
        alert, triage = opened
        # The one place a new incident's triage is settled: a priority override learnt from human
        # corrections of this rule in this project replaces the rules' priority (kept as the original).
        triage = await with_override(tx, triage, alert.project)
        known = changes.resolved_id(alert.fingerprint)
        regression_of: int | None = (
            await incidents.latest_resolved_id(alert.fingerprint) if known is _UNKNOWN else known  # type: ignore[assignment]
        )
        held_back = self.storm is not None and not self.storm.admit(alert.source, triage.priority)
        incident = await incidents.create(
            alert, triage, now, self.cards.chat_id, regression_of, card_deferred=held_back
        )
        if held_back and self._summary_due is None:
            self._summary_due = self.clock() + STORM_WINDOW_S
        changes.open_ids[alert.fingerprint] = incident.id
        if self.tracker is not None:
            await self.tracker.on_opened(tx, incident)  # before its card: the card shows what it adds
        if regression_of and (until := await muted_until(tx, alert.fingerprint)):
            await incidents.mute(incident.id, until)
        await AuditRepository(tx).record(
            "incident.regression" if regression_of else "incident.opened", "opened", incident_id=incident.id,
            detail={"priority": triage.priority.value, "category": triage.category.value, "rule": triage.rule_id,
                    "fingerprint": alert.fingerprint, "override": triage.override_id},
        )
        if self.proposer is not None:
            proposed = await self.proposer.propose(tx, incident.id, alert, triage)
            if proposed is not None and proposed[1]:
                changes.auto_approved.append(proposed[0])
        if not held_back and self.second_opinion is not None and self.second_opinion.wanted(alert):
            # Its first card waits (briefly) for Claude's triage: published by the second opinion.
            await self.second_opinion.hold(tx, incident.id)
            changes.second_opinion.append(incident.id)
        elif not held_back:
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

    def __init__(self, rows: list[_Prepared], error: Exception) -> None:
        super().__init__(str(error))
        self.rows = rows
        self.error = error


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
    resolved: int = 0  # incidents this transaction resolves (a monitor back up)
    opening: dict[str, tuple[Alert, Triage]] = dataclasses.field(default_factory=dict)  # prepared off the loop
    second_opinion: list[int] = dataclasses.field(default_factory=list)  # new incidents Claude triages after commit

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
        self.resolved += child.resolved
        self.second_opinion += child.second_opinion

