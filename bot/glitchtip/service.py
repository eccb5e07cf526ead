"""GlitchTipService: the pipeline's hooks into GlitchTip's API and the worker of its job queue.

Three promises shape it:

* **The first card never waits long.** For the new incidents of a batch the pipeline asks
  `prefetch` first; whatever GlitchTip answers within `enrich_budget_s` goes on the first card
  (and triage reads the stack). The rest is an `enrich` job committed with the incident, and the
  card is edited when it lands.
* **Nothing is lost.** Enrich, refresh and resolve are rows in SQLite (storage/glitchtip.py).
  An outage (no answer, 5xx, 429) delays them without spending their attempts: the worker checks
  whether the API answers at all, and if not it waits (backing off) and tries again. Only a
  failure of the job's own (a bad answer while the API is up) spends one of `max_attempts`.
* **A wrong token is said once.** A 401, or a 403 for a missing scope, is reported once in the
  chat with what to fix; jobs needing that scope wait (re-checked every `AUTH_RECHECK_S`), and
  the cards say why their details or their resolve are missing.

GlitchTip alerts once per issue while it stays unresolved, so the live counts come from a
refresh on a schedule (`schedule_refresh`), and a resolve here is written back so GlitchTip
alerts again when the error returns. Mute maps to nothing in GlitchTip: GlitchTip's "ignored"
would silence the issue there for everyone, while a mute here is the chat's own business.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from bot.card_publisher import CardPublisher
from bot.card_render import esc
from bot.glitchtip.api import FailureKind, GlitchTipClient, GlitchTipError
from bot.glitchtip.details import (
    IssueDetails,
    MonitorDetails,
    enriched_alert,
    issue_details,
    monitor_details,
    stack_text,
)
from bot.http_jobs import OutagePause, guarded, idle_wait
from bot.models import Alert, AlertKind, Incident, utcnow
from bot.redact import Redactor
from bot.settings import Settings
from bot.worker import WakeableLoop
from storage.audit import AuditRepository
from storage.db import Database, Executor
from storage.glitchtip import JOB_KINDS, GlitchTipJob, GlitchTipLink, GlitchTipRepository
from storage.incidents import IncidentRepository
from storage.kv import KeyValueRepository

log = logging.getLogger(__name__)

AUTH_REPORTED_KEY = "glitchtip:auth_reported"  # kv: which token failure was said in the chat
AUTH_RECHECK_S = 15 * 60.0  # a refused scope is tried again after this (org membership can change)
REFRESH_BATCH = 500  # open issues refreshed per scheduled round, most recently seen first
PREFETCH_MAX = 20  # new incidents per batch whose details may go on the first card
PREFETCHED_TTL_S = 120.0
HEALTH_TTL_S = 5.0
FINISHED_JOBS_KEPT = timedelta(days=1)  # then deleted (the audit log keeps what matters)
_FINGERPRINT = re.compile(r"glitchtip:(?P<host>[^\s|]+):(?P<kind>issue|monitor):(?P<id>[0-9]{1,20})(?:\|.*)?",
                          re.DOTALL)
_ORG_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
# Which jobs need which scope of the token.
_SCOPE_OF = {"enrich": "read", "refresh": "read", "resolve": "write"}
_SCOPE_NAME = {"read": "event:read", "write": "event:write"}


@dataclass(frozen=True)
class Target:
    """What an incident stands for in GlitchTip."""

    kind: str  # issue | monitor
    external_id: str
    org: str | None = None  # monitors are read per organisation


def target_of(source: str, kind: AlertKind, fingerprint: str, external_id: str | None,
              url: str | None) -> Target | None:
    """The GlitchTip issue or monitor behind an alert or incident, or None (not GlitchTip's, an
    uptime "back up", a link we cannot read)."""
    if source != "glitchtip" or kind not in (AlertKind.ERROR, AlertKind.UPTIME_DOWN):
        return None
    match = _FINGERPRINT.fullmatch(fingerprint)
    if match is None:
        return None
    org = None
    if match["kind"] == "monitor" and url:
        first = urlsplit(url).path.strip("/").split("/", 1)[0]
        org = first if _ORG_SLUG.fullmatch(first) else None
    return Target(match["kind"], external_id or match["id"], org)


def _incident_target(incident: Incident) -> Target | None:
    return target_of(incident.source, incident.kind, incident.fingerprint, incident.external_id, incident.url)


@dataclass(frozen=True)
class FetchedIssue:
    details: IssueDetails
    stack: str  # the latest event's stack as text (for triage), "" without an event


@dataclass(frozen=True)
class FetchedMonitor:
    details: MonitorDetails


Fetched = FetchedIssue | FetchedMonitor


def _host(url: str | None) -> str | None:
    try:
        parts = urlsplit(url or "")
        return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    except ValueError:
        return None


def same_glitchtip(permalink: str | None, alert_link: str | None) -> bool:
    """Both links are made by GlitchTip from its own GLITCHTIP_URL: a different host means the id
    belongs to another GlitchTip than the one GLITCHTIP_URL points at (then nothing is read or
    resolved). However the bot reaches the API (an internal address), these two agree."""
    mine, theirs = _host(permalink), _host(alert_link)
    return mine is None or theirs is None or mine == theirs


class GlitchTipService(WakeableLoop):
    def __init__(
        self,
        db: Database,
        client: GlitchTipClient,
        redactor: Redactor,
        cards: CardPublisher,
        *,
        enrich_budget_s: float = 2.0,
        refresh_days: float = 7.0,
        concurrency: int = 4,
        max_attempts: int = 6,
        requests_per_s: float = 5.0,
        poll_s: float = 2.0,
        outage_backoff: tuple[float, float] = (5.0, 300.0),
        job_backoff: tuple[float, float] = (10.0, 600.0),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.db = db
        self.client = client
        self.redactor = redactor
        self.cards = cards
        self.enrich_budget_s = enrich_budget_s
        self.refresh_days = refresh_days
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.requests_per_s = requests_per_s
        self.poll_s = poll_s  # resolves are queued by other services: looked for this often when idle
        self.outage_backoff = outage_backoff
        self.job_backoff = job_backoff
        self.clock = clock
        self._calls = asyncio.Semaphore(concurrency)  # API calls in flight, prefetch and jobs together
        self._next_call_at = 0.0  # pacing of the jobs' calls
        self._outage = OutagePause(lambda: self.outage_backoff, clock)  # an outage or a 429: no job until it ends
        self._outage_note: str | None = None  # what a card says while the API does not answer
        # scope -> (until when its jobs wait, what their cards say): a refused token
        self._blocked: dict[str, tuple[float, str]] = {}
        self._auth_reported: str | None = None
        self._health: tuple[float, bool] | None = None
        self._health_lock = asyncio.Lock()
        self._prefetched: dict[str, tuple[Fetched, float]] = {}  # fingerprint -> what the budget brought
        self._resolved_upstream: set[int] = set()  # open incidents GlitchTip had resolved: a new alert is a comeback

    @classmethod
    def from_settings(cls, settings: Settings, db: Database, redactor: Redactor,
                      cards: CardPublisher) -> GlitchTipService | None:
        """The service, or None when GLITCHTIP_URL and GLITCHTIP_TOKEN are not both set."""
        if not settings.glitchtip_api_on or settings.glitchtip_url is None or settings.glitchtip_token is None:
            return None
        client = GlitchTipClient(settings.glitchtip_url, settings.glitchtip_token.get_secret_value(),
                                 timeout_s=settings.glitchtip_timeout_s)
        return cls(db, client, redactor, cards, enrich_budget_s=settings.glitchtip_enrich_budget_s,
                   refresh_days=settings.glitchtip_refresh_days)

    async def start(self) -> None:
        self._resolved_upstream = set(await GlitchTipRepository(self.db).open_resolved_upstream())
        self._auth_reported = await KeyValueRepository(self.db).get(AUTH_REPORTED_KEY)

    async def close(self) -> None:
        await self.client.aclose()

    def retry_now(self) -> None:
        """End an outage pause (the scheduled refresh does this too, so a long backoff never
        outlasts a refresh interval); a refused token stays refused until its re-check."""
        self._outage.end()
        self._health = None
        self.notify()

    # ------------------------------------------------------------------ the pipeline's hooks

    async def prefetch(self, alerts: list[Alert]) -> dict[str, Alert]:
        """Read GlitchTip for alerts that open incidents, waiting at most the budget in total.

        Returns fingerprint -> the alert as triage should read it (culprit, stack, level); what
        came back is kept for `on_opened`. Nothing is waited for during an outage or while the
        token is refused: those incidents get an `enrich` job instead.
        """
        now = self.clock()
        self._forget_stale_prefetches(now)
        if self.enrich_budget_s <= 0 or self._outage.left() or self._is_blocked("read", now):
            return {}
        wanted: dict[asyncio.Task[Fetched], Alert] = {}
        for alert in alerts:
            target = target_of(alert.source, alert.kind, alert.fingerprint, alert.external_id, alert.url)
            if target is None or alert.fingerprint in self._prefetched or len(wanted) >= PREFETCH_MAX:
                continue
            task = asyncio.ensure_future(self._fetch(target, alert.url))
            wanted[task] = alert
        if not wanted:
            return {}
        done, pending = await asyncio.wait(wanted, timeout=self.enrich_budget_s)
        for task in pending:
            task.cancel()  # its enrich job will read it again
        richer: dict[str, Alert] = {}
        for task in done:
            alert = wanted[task]
            error = task.exception()
            if error is not None:
                if isinstance(error, GlitchTipError) and error.kind.transient:
                    # The next batches do not wait for an API that is down; their cards say so.
                    self._note_outage(_outage_note(error, self.redactor.redact(str(error))[:300]),
                                      at_least_s=min(600.0, error.retry_after_s or 0.0))
                continue
            fetched = task.result()
            self._prefetched[alert.fingerprint] = (fetched, now)
            if isinstance(fetched, FetchedIssue):
                richer[alert.fingerprint] = enriched_alert(alert, fetched.details, fetched.stack)
        return richer

    async def on_opened(self, tx: Executor, incident: Incident) -> None:
        """A new incident (inside the pipeline's transaction): link it to its GlitchTip issue or
        monitor, with what `prefetch` brought, or with an `enrich` job for the worker."""
        target = _incident_target(incident)
        if target is None:
            return
        links = GlitchTipRepository(tx)
        await links.add_link(incident.id, target.kind, target.external_id, target.org)
        if target.kind == "monitor" and target.org is None:
            await links.set_problem(incident.id, "the alert's link names no organisation, so the monitor "
                                                 "cannot be read")
            return
        cached = self._prefetched.pop(incident.fingerprint, None)
        if cached is not None:
            await self._store(tx, incident.id, cached[0])
            self._track_upstream(incident.id, cached[0], incident.is_open)
            return
        # The first card says at once why its details will be late (not "on the way", then edited).
        now = self.clock()
        if self._is_blocked("read", now):
            await links.set_problem(incident.id, self._blocked["read"][1])
        elif self._outage.left() and self._outage_note:
            await links.set_problem(incident.id, self._outage_note)
        await links.enqueue(incident.id, "enrich")
        self.notify()  # the worker's read waits for the lock: it sees the job once committed

    async def on_repeat(self, tx: Executor, incident_id: int) -> None:
        """Another GlitchTip alert for an open incident. GlitchTip alerts once per issue while it
        stays unresolved, so after GlitchTip had it resolved this alert means it came back."""
        if incident_id not in self._resolved_upstream:
            return  # the common case costs no statement
        self._resolved_upstream.discard(incident_id)
        if await GlitchTipRepository(tx).mark_comeback(incident_id, utcnow()):
            await AuditRepository(tx).record("glitchtip.comeback", "came back in GlitchTip", incident_id=incident_id,
                                             detail={"seen_by": "alert"})

    # ------------------------------------------------------------------ the schedule

    async def schedule_refresh(self) -> int:
        """Queue a refresh of the open GlitchTip issues seen in the last `refresh_days` (run by
        the scheduler every GLITCHTIP_REFRESH_MINUTES); returns how many were queued."""
        now = utcnow()
        async with self.db.transaction() as tx:
            links = GlitchTipRepository(tx)
            ids = await links.refresh_candidates(now - timedelta(days=self.refresh_days), REFRESH_BATCH)
            for incident_id in ids:
                await links.enqueue(incident_id, "refresh")
            await links.purge_finished(now - FINISHED_JOBS_KEPT)
        self.retry_now()
        return len(ids)

    # ------------------------------------------------------------------ the worker

    async def step(self) -> float:
        if paused := self._outage.left():
            return paused
        now = self.clock()
        kinds = tuple(k for k in JOB_KINDS if not self._is_blocked(_SCOPE_OF[k], now))
        links = GlitchTipRepository(self.db)
        if len(kinds) < len(JOB_KINDS):
            await self._hold_for_token(tuple(k for k in JOB_KINDS if k not in kinds))
        jobs = await links.due_jobs(self.concurrency * 2, kinds)
        if not jobs:
            return idle_wait(await links.next_due_at(kinds), self.poll_s)
        await asyncio.gather(*(self._work(job) for job in jobs))
        return 0.0

    async def _work(self, job: GlitchTipJob) -> None:
        if self._outage.left():
            return  # an outage was noticed by a job of this round: the rest wait
        done = await guarded(
            self._do(job), error_type=GlitchTipError, failed=lambda error: self._failed(job, error),
            bug=lambda text: GlitchTipError(FailureKind.BAD_ANSWER, text), log=log,
            what=f"GlitchTip {job.kind} job #{job.id}",
        )
        if done:
            self._outage.answered()

    async def _do(self, job: GlitchTipJob) -> bool:
        if job.kind == "resolve":
            await self._resolve(job)
        elif job.kind == "refresh":
            await self._refresh(job)
        else:
            await self._enrich(job)
        return True

    async def _load(self, job: GlitchTipJob) -> tuple[GlitchTipLink, Incident] | None:
        link = await GlitchTipRepository(self.db).link(job.incident_id)
        incident = await IncidentRepository(self.db).get(job.incident_id)
        if link is None or incident is None:
            async with self.db.transaction() as tx:
                await GlitchTipRepository(tx).finish_job(job.id, error="no such incident or link")
            return None
        return link, incident

    async def _enrich(self, job: GlitchTipJob) -> None:
        loaded = await self._load(job)
        if loaded is None:
            return
        link, incident = loaded
        fetched = await self._fetch(Target(link.kind, link.external_id, link.org), incident.url, paced=True)
        await self._auth_ok("read")
        async with self.db.transaction() as tx:
            await self._store(tx, incident.id, fetched)
            await GlitchTipRepository(tx).finish_job(job.id)
            await self.cards.publish(tx, incident.id)
        self._track_upstream(incident.id, fetched, incident.is_open)

    async def _refresh(self, job: GlitchTipJob) -> None:
        loaded = await self._load(job)
        if loaded is None:
            return
        link, incident = loaded
        if link.details is None or link.kind != "issue":
            await self._enrich(job)  # never read yet: read it all
            return
        if not incident.is_open or link.api_status == "gone":
            async with self.db.transaction() as tx:
                await GlitchTipRepository(tx).finish_job(job.id)
            return
        await self._pace()
        async with self._calls:
            issue = await self.client.issue(link.external_id)
        await self._auth_ok("read")
        old = IssueDetails.from_dict(link.details)
        new = old.with_issue(issue_details(issue, None, self.redactor))
        changed = (new.count, new.last_seen, new.status) != (old.count, old.last_seen, old.status)
        # Resolved in GlitchTip, and now unresolved with a newer event: GlitchTip reopened it.
        came_back = (link.api_status == "resolved" and new.status == "unresolved" and new.last_seen is not None
                     and (old.last_seen is None or new.last_seen > old.last_seen))
        async with self.db.transaction() as tx:
            links = GlitchTipRepository(tx)
            if came_back and await links.mark_comeback(incident.id, utcnow()):
                await AuditRepository(tx).record("glitchtip.comeback", "came back in GlitchTip",
                                                 incident_id=incident.id, detail={"seen_by": "api", "count": new.count})
            if changed:
                await links.store_details(incident.id, new.to_dict(), api_status=new.status,
                                          api_last_seen=new.last_seen)
            await links.finish_job(job.id)
            if changed or came_back:
                await self.cards.publish(tx, incident.id)  # coalesced with any pending edit
        self._track_upstream(incident.id, FetchedIssue(new, ""), incident.is_open)

    async def _resolve(self, job: GlitchTipJob) -> None:
        loaded = await self._load(job)
        if loaded is None:
            return
        link, incident = loaded
        newer = await GlitchTipRepository(self.db).newer_open_incident(incident.id)
        if link.api_status == "gone" or newer is not None:
            # Resolving now would silence GlitchTip about an error that is back (or unknown there).
            why = (f"the error came back as #{newer} before GlitchTip could be told" if newer is not None
                   else "GlitchTip's API does not know this issue")
            await self._finish_resolve(job, incident.id, "skipped", why)
            return
        await self._pace()
        async with self._calls:
            issue = await self.client.issue(link.external_id)
            if not same_glitchtip(issue.permalink, incident.url):
                raise GlitchTipError(FailureKind.NOT_FOUND, "that issue id belongs to another GlitchTip")
            if issue.status != "resolved":
                await self.client.resolve(link.external_id)
        await self._auth_ok("write")
        await self._finish_resolve(job, incident.id, "done", f"({utcnow():%Y-%m-%d %H:%M} UTC)")

    async def _finish_resolve(self, job: GlitchTipJob, incident_id: int, state: str, note: str) -> None:
        async with self.db.transaction() as tx:
            links = GlitchTipRepository(tx)
            await links.set_resolve_state(incident_id, state, note)
            if state == "done":
                await links.set_api_status(incident_id, "resolved")
            await AuditRepository(tx).record("glitchtip.resolve", "resolved in GlitchTip" if state == "done" else state,
                                             incident_id=incident_id, detail={"note": note})
            await links.finish_job(job.id, failed=state == "failed", error=None if state == "done" else note)
            await self.cards.publish(tx, incident_id)

    # ------------------------------------------------------------------ reading GlitchTip

    async def _fetch(self, target: Target, alert_link: str | None, *, paced: bool = False) -> Fetched:
        if paced:
            await self._pace()
        async with self._calls:
            if target.kind == "monitor":
                if target.org is None:
                    raise GlitchTipError(FailureKind.NOT_FOUND, "the alert's link names no organisation")
                monitor = await self.client.monitor(target.org, target.external_id)
                return FetchedMonitor(monitor_details(monitor, self.redactor))
            issue = await self.client.issue(target.external_id)
            if not same_glitchtip(issue.permalink, alert_link):
                raise GlitchTipError(FailureKind.NOT_FOUND, "that issue id belongs to another GlitchTip than "
                                                            "GLITCHTIP_URL (its link names another host)")
            try:
                event = await self.client.latest_event(target.external_id)
            except GlitchTipError as error:
                if error.kind is not FailureKind.NOT_FOUND:
                    raise
                event = None  # an issue with no event left (retention): the issue's own fields still help
        stack = stack_text(event, self.redactor) if event is not None else ""
        return FetchedIssue(issue_details(issue, event, self.redactor), stack)

    async def _store(self, tx: Executor, incident_id: int, fetched: Fetched) -> None:
        links = GlitchTipRepository(tx)
        if isinstance(fetched, FetchedMonitor):
            await links.store_details(incident_id, fetched.details.to_dict())
        else:
            await links.store_details(incident_id, fetched.details.to_dict(), api_status=fetched.details.status,
                                      api_last_seen=fetched.details.last_seen)

    def _track_upstream(self, incident_id: int, fetched: Fetched, is_open: bool) -> None:
        if isinstance(fetched, FetchedIssue) and fetched.details.status == "resolved" and is_open:
            self._resolved_upstream.add(incident_id)
        else:
            self._resolved_upstream.discard(incident_id)

    def _forget_stale_prefetches(self, now: float) -> None:
        # An incident that was not opened after all (rolled back, or opened by another row).
        for fingerprint, (_, at) in list(self._prefetched.items()):
            if now - at > PREFETCHED_TTL_S:
                del self._prefetched[fingerprint]

    async def _pace(self) -> None:
        """At most `requests_per_s` job calls a second: a refresh of hundreds of issues is a
        trickle, not a burst GlitchTip answers with 429."""
        now = self.clock()
        slot = max(now, self._next_call_at)
        self._next_call_at = slot + 1.0 / self.requests_per_s
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _api_answers(self) -> bool:
        """Whether GlitchTip's API answers at all (GET /api/0/ needs no scope); cached briefly so
        a round of failing jobs asks once."""
        async with self._health_lock:
            now = self.clock()
            if self._health is not None and now - self._health[0] < HEALTH_TTL_S:
                return self._health[1]
            try:
                await self.client.root()
                answers = True
            except GlitchTipError as error:
                answers = not error.kind.transient
            self._health = (now, answers)
            return answers

    def _note_outage(self, note: str, at_least_s: float = 0.0) -> float:
        """No job until the API may answer again (backing off); returns the wait."""
        self._outage_note = note
        return self._outage.pause(at_least_s)

    def _is_blocked(self, scope: str, now: float) -> bool:
        blocked = self._blocked.get(scope)
        if blocked is None:
            return False
        if now >= blocked[0]:
            del self._blocked[scope]  # re-check: membership or scopes may have been fixed
            return False
        return True

    async def _auth_ok(self, scope: str) -> None:
        """A call needing `scope` worked: a refusal said in the chat before is over (a new one
        will be said again)."""
        self._blocked.pop(scope, None)
        if self._auth_reported is not None and scope in self._auth_reported.split(":", 1)[-1].split(","):
            self._auth_reported = None
            await KeyValueRepository(self.db).delete(AUTH_REPORTED_KEY)

    # ------------------------------------------------------------------ failures

    async def _failed(self, job: GlitchTipJob, error: GlitchTipError) -> None:
        reason = self.redactor.redact(str(error))[:300]
        if error.kind.auth:
            await self._auth_failed(job, error, reason)
        elif error.kind is FailureKind.NOT_FOUND:
            if error.status == 404:
                reason = ("GlitchTip's API does not have it (404): deleted, or in a project the token's user "
                          "cannot see")
            await self._final(job, reason, gone=True)
        elif error.kind is FailureKind.RATE_LIMITED:
            why = _outage_note(error, reason)
            delay = self._note_outage(why, at_least_s=min(600.0, error.retry_after_s or 30.0))
            await self._later(job, why, delay, counts=False)
        elif error.kind.transient and not await self._api_answers():
            why = _outage_note(error, reason)
            await self._later(job, why, self._note_outage(why), counts=False)
        elif job.attempts + 1 >= self.max_attempts:
            await self._final(job, f"gave up after {job.attempts + 1} tries: {reason}")
        else:
            first, longest = self.job_backoff
            delay = min(longest, first * 2 ** job.attempts)
            await self._later(job, f"GlitchTip's API answered badly ({reason}); trying again", delay, counts=True)

    async def _later(self, job: GlitchTipJob, why: str, delay: float, *, counts: bool) -> None:
        """Try the job again later; the card says what is missing meanwhile (once: no churn)."""
        log.info("GlitchTip %s job #%s: %s; retry in %.0fs", job.kind, job.id, why, delay)
        async with self.db.transaction() as tx:
            links = GlitchTipRepository(tx)
            await links.retry_job(job.id, why, time.time() + delay, counts=counts)
            await self._say_on_card(tx, job, why, pending=True)

    async def _final(self, job: GlitchTipJob, why: str, *, gone: bool = False) -> None:
        log.warning("GlitchTip %s job #%s failed: %s", job.kind, job.id, why)
        async with self.db.transaction() as tx:
            links = GlitchTipRepository(tx)
            await links.finish_job(job.id, failed=True, error=why)
            if gone:
                await links.set_api_status(job.incident_id, "gone")
            await self._say_on_card(tx, job, why, pending=False)

    async def _say_on_card(self, tx: Executor, job: GlitchTipJob, why: str, *, pending: bool) -> None:
        links = GlitchTipRepository(tx)
        if job.kind == "resolve":
            link = await links.link(job.incident_id)
            state = "pending" if pending else "failed"
            if link is not None and (link.resolve_state, link.resolve_note) != (state, why):
                await links.set_resolve_state(job.incident_id, state, why)
                await self.cards.publish(tx, job.incident_id)
        elif job.kind == "enrich" and await links.set_problem(job.incident_id, why):
            await self.cards.publish(tx, job.incident_id)
        # a refresh that fails leaves the card as it was: its details are only a little older

    async def _hold_for_token(self, kinds: tuple[str, ...]) -> None:
        """Jobs queued while their scope is refused wait for the re-check without a call, and their
        cards say why at once (not only the card whose job found out)."""
        jobs = await GlitchTipRepository(self.db).due_jobs(50, kinds)
        for job in jobs:
            blocked = self._blocked.get(_SCOPE_OF[job.kind])
            if blocked is None:
                continue
            until, why = blocked
            async with self.db.transaction() as tx:
                wait = max(0.0, until - self.clock())
                await GlitchTipRepository(tx).retry_job(job.id, why, time.time() + wait, counts=False)
                await self._say_on_card(tx, job, why, pending=True)

    async def _auth_failed(self, job: GlitchTipJob, error: GlitchTipError, reason: str) -> None:
        """Report once in the chat what to fix; the jobs needing that scope wait for a re-check."""
        scopes = ["read", "write"] if error.kind is FailureKind.UNAUTHORIZED else [_SCOPE_OF[job.kind]]
        if error.kind is FailureKind.UNAUTHORIZED:
            why = "GlitchTip refused the API token (401); see the message in the chat"
        else:
            why = f"the API token lacks {_SCOPE_NAME[scopes[0]]} (403); see the message in the chat"
        until = self.clock() + AUTH_RECHECK_S
        for scope in scopes:
            self._blocked[scope] = (until, why)
        signature = f"{error.status}:{','.join(scopes)}"
        async with self.db.transaction() as tx:
            await GlitchTipRepository(tx).retry_job(job.id, reason, time.time() + AUTH_RECHECK_S, counts=False)
            await self._say_on_card(tx, job, why, pending=True)
            kv = KeyValueRepository(tx)
            if await kv.get(AUTH_REPORTED_KEY) != signature:
                await kv.set(AUTH_REPORTED_KEY, signature)
                await AuditRepository(tx).record("glitchtip.auth", "refused", detail={"status": error.status,
                                                 "scopes": scopes, "error": reason})
                await self.cards.say(tx, auth_message(error, scopes, self.redactor.redact(self.client.base_url)))
        self._auth_reported = signature


def _outage_note(error: GlitchTipError, reason: str) -> str:
    """What a card says while its details wait for GlitchTip's API to answer again."""
    if error.kind is FailureKind.RATE_LIMITED:
        return f"rate limited by GlitchTip ({reason}); trying again"
    return f"GlitchTip's API did not answer ({reason}); trying again"


def auth_message(error: GlitchTipError, scopes: list[str], base_url: str) -> str:
    """The one chat message about a refused token: what happened, what still works, what to do."""
    where = esc(base_url, 200)
    if error.kind is FailureKind.UNAUTHORIZED:
        head = f"🔑 <b>GlitchTip refused the API token</b> (401 at {where})."
        effect = "Cards keep coming without GlitchTip's details, and resolves are not sent to GlitchTip."
    elif scopes == ["write"]:
        head = f"🔑 <b>The GlitchTip token cannot resolve issues</b> (403 at {where}): it lacks <code>event:write</code>."
        effect = "Resolves wait in the queue and the cards say so; details and counts still work."
    else:
        head = f"🔑 <b>The GlitchTip token cannot read issues</b> (403 at {where}): it lacks <code>event:read</code>."
        effect = "Cards keep coming without GlitchTip's details."
    return (f"{head}\n{effect}\nFix: in GlitchTip, <i>Profile → Auth Tokens → Create New Token</i> with the scopes "
            "<code>event:read</code> and <code>event:write</code>, put it in <code>GLITCHTIP_TOKEN</code> and restart; "
            "<code>remediator glitchtip check</code> tests it. Waiting work is kept and tried again.")
