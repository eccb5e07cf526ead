"""GitHubIssueService: the worker of the durable queue that files GitHub issues and comments on them.

Three promises shape it:

* **Exactly once per incident.** GitHub has no idempotency key, so the intent is a row first
  (storage/github.py), `create_sent_at` is committed just before the create call, and the body
  ends with a hidden marker. Any try after one that may have reached GitHub (a crash between
  GitHub's answer and the commit, a timeout, a restart) first looks for that marker — with the
  search API, and, because its index lags behind by seconds to minutes, in the repository's
  recently updated issues too — and links what it finds instead of creating a second issue.
* **Nothing is lost.** A 5xx, a 429 or secondary rate limit (waited out for exactly as long as
  `Retry-After` or `X-RateLimit-Reset` say) or a network error leaves the job pending, the card
  saying why; it is tried again with backoff until GitHub answers, and reported in the chat only
  after `give_up_after_s`. An outage does not spend the job's attempts.
* **GitHub's own words.** A 4xx is final for that try: the card shows GitHub's message (e.g.
  "Resource not accessible by personal access token") and offers Approve again, so a person
  can fix the token and press once more.

Resolving the incident queues a comment ("resolved in chat by …"); the bot never closes or
reopens an issue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta

from bot.card_publisher import CardPublisher
from bot.card_render import esc
from bot.github.api import ApiIssue, FailureKind, GitHubClient, GitHubError
from bot.github.issue import LABELS, IssueContext, has_marker, prose, render_issue
from bot.glitchtip.details import stored_issue_details
from bot.http_jobs import OutagePause, guarded, idle_wait
from bot.models import Incident, ProposalState, utcnow
from bot.proposals import ProposalKind
from bot.proposer import github_issue_summary
from bot.redact import Redactor
from bot.rollout import RolloutPolicy
from bot.settings import Settings
from bot.worker import WakeableLoop
from storage.audit import AuditRepository
from storage.db import Database, Executor
from storage.github import GitHubIssueRepository, GitHubIssueRow, GitHubJob
from storage.glitchtip import GlitchTipRepository
from storage.incidents import IncidentRepository
from storage.investigations import InvestigationRepository
from storage.proposals import ProposalRepository

log = logging.getLogger(__name__)

#: the investigation report for an incident (issues 9/11), or None: the body and the
#: `auto-investigated` label carry it when there is one
ReportSource = Callable[[Executor, int], Awaitable[str | None]]
SEARCH_PAGES = 3  # pages of recently updated issues read when the search finds nothing
PAGE_SIZE = 100
COMMENT_WAIT_S = 300.0  # a comment whose issue is still on its way looks again this late (or when it is filed)
CLOCK_SKEW = timedelta(minutes=5)  # GitHub's clock against ours, for "created after the intent"


class GitHubIssueService(WakeableLoop):
    def __init__(
        self,
        db: Database,
        client: GitHubClient,
        redactor: Redactor,
        cards: CardPublisher,
        *,
        repo: str,
        policy: RolloutPolicy,
        proposal_expiry_hours: float = 24.0,
        give_up_after_s: float = 24 * 3600.0,
        max_attempts: int = 5,
        poll_s: float = 2.0,
        outage_backoff: tuple[float, float] = (2.0, 300.0),
        report_for: ReportSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.db = db
        self.client = client
        self.redactor = redactor
        self.cards = cards
        self.repo = repo
        self.policy = policy
        self.proposal_expiry = timedelta(hours=proposal_expiry_hours)
        self.give_up_after_s = give_up_after_s
        self.max_attempts = max_attempts
        self.poll_s = poll_s  # comments are queued by resolves elsewhere: looked for this often when idle
        self.outage_backoff = outage_backoff
        self.report_for = report_for  # the investigation report (issues 9/11): `latest_report` in the app
        self.clock = clock
        self._outage = OutagePause(lambda: self.outage_backoff, clock)  # an outage or a rate limit: no call until it ends
        self._labels_ready: set[tuple[str, str]] = set()  # (repo, label) known to exist

    @classmethod
    def from_settings(cls, settings: Settings, db: Database, redactor: Redactor, cards: CardPublisher,
                      policy: RolloutPolicy) -> GitHubIssueService | None:
        """The service, or None when GITHUB_TOKEN and GITHUB_REPO are not both set."""
        if not settings.github_on or settings.github_token is None or settings.github_repo is None:
            return None
        client = GitHubClient(settings.github_api_url, settings.github_token.get_secret_value(),
                              timeout_s=settings.github_timeout_s)
        return cls(db, client, redactor, cards, repo=settings.github_repo, policy=policy,
                   proposal_expiry_hours=settings.proposal_expiry_hours,
                   give_up_after_s=settings.github_retry_hours * 3600.0, report_for=latest_report)

    async def close(self) -> None:
        await self.client.aclose()

    def retry_now(self) -> None:
        """End an outage pause (GitHub said nothing about when to come back)."""
        self._outage.end()
        self.notify()

    # ------------------------------------------------------------------ the worker

    async def step(self) -> float:
        if paused := self._outage.left():
            return paused
        repo = GitHubIssueRepository(self.db)
        jobs = await repo.due_jobs(10)
        if not jobs:
            return idle_wait(await repo.next_due_at(), self.poll_s)
        waiting = False
        for job in jobs:  # one at a time: a filing is rare, and its label check must not race itself
            if self._outage.left():
                break
            waiting |= not await self._work(job)
        return 0.05 if waiting else 0.0

    async def _work(self, job: GitHubJob) -> bool:
        """Do one job; False when it must wait a moment (its approval is still being committed)."""
        done = await guarded(
            self._file(job) if job.kind == "create" else self._comment(job), error_type=GitHubError,
            failed=lambda error: self._failed(job, error), bug=lambda text: GitHubError(FailureKind.BAD_ANSWER, text),
            log=log, what=f"GitHub {job.kind} job #{job.id}",
        )
        if done is None:
            return True
        self._outage.answered()
        return done

    async def _load(self, job: GitHubJob) -> tuple[GitHubIssueRow, Incident] | None:
        row = await GitHubIssueRepository(self.db).issue(job.incident_id)
        incident = await IncidentRepository(self.db).get(job.incident_id)
        if row is None or incident is None:
            async with self.db.transaction() as tx:
                await GitHubIssueRepository(tx).finish_job(job.id, error="no such incident or issue row")
            return None
        return row, incident

    # ------------------------------------------------------------------ filing

    async def _file(self, job: GitHubJob) -> bool:
        loaded = await self._load(job)
        if loaded is None:
            return True
        row, incident = loaded
        if row.state != "pending":  # filed meanwhile (a second approval found it so), or failed
            async with self.db.transaction() as tx:
                await GitHubIssueRepository(tx).finish_job(job.id)
            return True
        if row.proposal_id is not None:
            proposal = await ProposalRepository(self.db).get(row.proposal_id)
            if proposal is not None and proposal.state is ProposalState.RUNNING:
                return False  # the executor commits `succeeded` in a moment: a refusal must come after
        if row.create_sent_at is not None:
            found = await self._find_filed(row)
            if found is not None:
                number, url, assignee = found
                await self._filed(job, row, number, url, assignee, found_existing=True)
                return True
        context = await self._context(row, incident, _pressed_investigation(job))
        draft = render_issue(incident, context, self.redactor)
        labels = await self._ready_labels(row.repo, draft.labels)
        async with self.db.transaction() as tx:
            await GitHubIssueRepository(tx).mark_create_sent(incident.id)
        try:
            issue = await self.client.create_issue(row.repo, draft.title, draft.body, labels=labels,
                                                   assignees=draft.assignees)
        except GitHubError as error:
            if not (error.kind is FailureKind.INVALID and draft.assignees and "assignee" in error.message.lower()):
                raise
            # GitHub accepted the assignee a moment ago and not now: file it with the owner mentioned.
            draft = render_issue(incident, replace(context, assignee=None), self.redactor)
            issue = await self.client.create_issue(row.repo, draft.title, draft.body, labels=labels, assignees=[])
        log.info("filed %s#%s for incident #%s", row.repo, issue.number, incident.id)
        assignee = draft.assignees[0] if draft.assignees else None
        await self._filed(job, row, issue.number, issue.html_url, assignee, found_existing=False)
        return True

    async def _context(self, row: GitHubIssueRow, incident: Incident, investigation_id: int | None) -> IssueContext:
        owner = incident.triage.owner
        assignee = None
        if owner is not None and owner.github and await self.client.can_be_assigned(row.repo, owner.github):
            assignee = owner.github
        tracker = stored_issue_details(await GlitchTipRepository(self.db).link(incident.id))
        earlier = await GitHubIssueRepository(self.db).issue_of_incident(incident.regression_of)
        report = await self._report(incident.id, investigation_id)
        return IssueContext(
            approved_by=row.approved_by or "an approver", approved_at=row.requested_at, assignee=assignee,
            tracker=tracker, earlier_issue=earlier.ref if earlier else None, report=report,
        )

    async def _report(self, incident_id: int, investigation_id: int | None) -> str | None:
        """The report the body carries: the one whose 📝 button was pressed, else (Approve, or that
        report gone) the incident's newest; None when reports are off."""
        if self.report_for is None:
            return None
        if investigation_id is not None:
            pressed = await report_of(self.db, incident_id, investigation_id)
            if pressed is not None:
                return pressed
        return await self.report_for(self.db, incident_id)

    async def _ready_labels(self, repo: str, wanted: list[str]) -> list[str]:
        """Create the labels that are missing; a label GitHub will not create is left off the issue
        (an issue without labels beats no issue)."""
        ready = []
        for name in wanted:
            if (repo, name) in self._labels_ready:
                ready.append(name)
                continue
            try:
                if not await self.client.has_label(repo, name):
                    color, description = LABELS.get(name, ("ededed", ""))
                    await self.client.create_label(repo, name, color, description)
            except GitHubError as error:
                if error.kind.transient:
                    raise
                log.warning("GitHub label %r could not be created (%s); filing without it", name, error)
                continue
            self._labels_ready.add((repo, name))
            ready.append(name)
        return ready

    async def _find_filed(self, row: GitHubIssueRow) -> tuple[int, str, str | None] | None:
        """The issue an earlier try filed for this incident, by its marker: the search first, then
        (the search index lags behind) the issues updated since the intent was recorded."""
        since = row.requested_at - CLOCK_SKEW
        query = f'repo:{row.repo} is:issue in:body "remediator-incident: {row.incident_id}"'
        try:
            found = _with_marker((await self.client.search_issues(query)).items, row.incident_id, since)
        except GitHubError as error:
            if error.kind.transient:
                raise
            found = None  # a search GitHub refuses (some tokens cannot search): the list still works
        for page in range(1, SEARCH_PAGES + 1):
            if found is not None:
                break
            issues = await self.client.recent_issues(row.repo, since, page=page, per_page=PAGE_SIZE)
            found = _with_marker(issues, row.incident_id, since)
            if len(issues) < PAGE_SIZE:
                break
        if found is None:
            return None
        return found.number, found.html_url, found.assignees[0].login if found.assignees else None

    async def _filed(self, job: GitHubJob, row: GitHubIssueRow, number: int, url: str, assignee: str | None,
                     *, found_existing: bool) -> None:
        async with self.db.transaction() as tx:
            repo = GitHubIssueRepository(tx)
            if await repo.mark_filed(row.incident_id, number, url, assignee, found_existing=found_existing):
                await AuditRepository(tx).record(
                    "github.issue", "linked existing" if found_existing else "filed", incident_id=row.incident_id,
                    proposal_id=row.proposal_id,
                    detail={"repo": row.repo, "number": number, "url": url, "assignee": assignee},
                )
            await repo.finish_job(job.id)
            await repo.wake(row.incident_id, "comment")  # a resolve while it was on its way: comment now
            await self.cards.publish(tx, row.incident_id)

    # ------------------------------------------------------------------ the comment of a resolve

    async def _comment(self, job: GitHubJob) -> bool:
        loaded = await self._load(job)
        if loaded is None:
            return True
        row, incident = loaded
        if row.state == "pending":  # its issue is not filed yet: the filing wakes this job when it is
            async with self.db.transaction() as tx:
                await GitHubIssueRepository(tx).retry_job(job.id, None, time.time() + COMMENT_WAIT_S, counts=False)
            return True
        if row.state != "filed" or row.number is None:
            await self._finish_comment(job, incident.id, "failed", "the issue was not filed")
            return True
        body = self.redactor.redact(resolved_comment(job.payload)) + "\n\n" + comment_marker(incident.id)
        if job.sent_at is not None and await self._comment_exists(row, incident.id):
            await self._finish_comment(job, incident.id, "done", None)
            return True
        async with self.db.transaction() as tx:
            await GitHubIssueRepository(tx).mark_job_sent(job.id)
        # A comment never reopens the issue: closed on GitHub stays closed (humans close issues).
        await self.client.comment(row.repo, row.number, body)
        await self._finish_comment(job, incident.id, "done", None)
        return True

    async def _comment_exists(self, row: GitHubIssueRow, incident_id: int) -> bool:
        assert row.number is not None
        comments = await self.client.comments(row.repo, row.number, since=row.requested_at - CLOCK_SKEW)
        return any(c.body and c.body.rstrip().endswith(comment_marker(incident_id)) for c in comments)

    async def _finish_comment(self, job: GitHubJob, incident_id: int, state: str, note: str | None) -> None:
        async with self.db.transaction() as tx:
            repo = GitHubIssueRepository(tx)
            await repo.finish_job(job.id, failed=state == "failed", error=note)
            if await repo.set_comment_state(incident_id, state, note):
                await AuditRepository(tx).record("github.comment", state, incident_id=incident_id,
                                                 detail={"note": note} if note else None)
                await self.cards.publish(tx, incident_id)

    # ------------------------------------------------------------------ failures

    async def _failed(self, job: GitHubJob, error: GitHubError) -> None:
        reason = self.redactor.redact(str(error))[:400]
        waited = time.time() - job.created_at.timestamp()
        if error.kind.transient and waited >= self.give_up_after_s:
            hours = self.give_up_after_s / 3600
            await self._final(job, f"GitHub did not answer for {hours:g} h; last: {reason}")
        elif error.kind is FailureKind.RATE_LIMITED:
            delay = self._outage.pause(at_least_s=error.retry_after_s or 60.0)
            await self._later(job, f"rate limited by GitHub for {delay:.0f} s: {reason}", delay)
        elif error.kind.transient:
            delay = self._outage.pause(at_least_s=error.retry_after_s or 0.0)
            await self._later(job, f"GitHub did not answer ({reason})", delay)
        elif error.kind is FailureKind.BAD_ANSWER and job.attempts + 1 < self.max_attempts:
            delay = min(self.outage_backoff[1], self.outage_backoff[0] * 2 ** (job.attempts + 1))
            await self._later(job, f"GitHub answered oddly ({reason})", delay, counts=True)
        else:
            await self._final(job, _refusal_text(error, reason))

    async def _later(self, job: GitHubJob, why: str, delay: float, *, counts: bool = False) -> None:
        log.info("GitHub %s job #%s: %s; retry in %.0f s", job.kind, job.id, why, delay)
        async with self.db.transaction() as tx:
            repo = GitHubIssueRepository(tx)
            await repo.retry_job(job.id, why, time.time() + delay, counts=counts)
            changed = (await repo.set_problem(job.incident_id, f"{why}; trying again") if job.kind == "create"
                       else await repo.set_comment_state(job.incident_id, "pending", f"{why}; trying again"))
            if changed:
                await self.cards.publish(tx, job.incident_id)

    async def _final(self, job: GitHubJob, why: str) -> None:
        log.warning("GitHub %s job #%s failed: %s", job.kind, job.id, why)
        if job.kind == "comment":
            await self._finish_comment(job, job.incident_id, "failed", why)
            return
        async with self.db.transaction() as tx:
            repo = GitHubIssueRepository(tx)
            await repo.finish_job(job.id, failed=True, error=why)
            row = await repo.issue(job.incident_id)
            if not await repo.mark_failed(job.incident_id, why):
                return
            await AuditRepository(tx).record("github.issue", "failed", incident_id=job.incident_id,
                                             proposal_id=row.proposal_id if row else None, detail={"error": why})
            retry = await self._offer_again(tx, job.incident_id, row, why)
            await self.cards.publish(tx, job.incident_id)
            incident = await IncidentRepository(tx).get(job.incident_id)
            where = esc(row.repo if row else self.repo, 140)
            if row is not None and row.proposal_id is None:  # asked for by the report's 📝 button
                then = " Press 📝 File GitHub issue under the report again once it is fixed."
            else:
                then = " Press Approve on the card to try again once it is fixed." if retry else ""
            await self.cards.say(
                tx, f"❌ #{job.incident_id}: the GitHub issue in {where} was not filed: {esc(why.rstrip('.'), 500)}.{then}",
                reply_to=incident.card_message_id if incident else None,
            )

    async def _offer_again(self, tx: Executor, incident_id: int, row: GitHubIssueRow | None, why: str) -> bool:
        """The approval that asked for it is recorded as failed, and — while the incident is open —
        a new proposal puts Approve back on the card (a person fixes the token, then presses)."""
        proposals = ProposalRepository(tx)
        if row is not None and row.proposal_id is not None:
            await proposals.transition(row.proposal_id, ProposalState.SUCCEEDED, ProposalState.FAILED,
                                       result=f"not filed: {why}"[:600])
        incident = await IncidentRepository(tx).get(incident_id)
        if incident is None or not incident.is_open or not self.policy.allows(ProposalKind.GITHUB_ISSUE):
            return False
        latest = await proposals.latest_for(incident_id)
        if latest is not None and latest.state in (ProposalState.PENDING, ProposalState.APPROVED,
                                                   ProposalState.RUNNING):
            return True  # one is already live
        await proposals.create(incident_id, ProposalKind.GITHUB_ISSUE, github_issue_summary(self.repo),
                               utcnow() + self.proposal_expiry, action={"repo": self.repo})
        return True


async def latest_report(db: Executor, incident_id: int) -> str | None:
    """The newest finished investigation report of the incident (Markdown, stored redacted)."""
    return await InvestigationRepository(db).latest_report_markdown(incident_id)


async def report_of(db: Executor, incident_id: int, investigation_id: int) -> str | None:
    """One finished investigation's report (Markdown, stored redacted), if it is this incident's."""
    found = await InvestigationRepository(db).get(investigation_id)
    if found is None or found.incident_id != incident_id or found.state != "done":
        return None
    return found.report_markdown


def _pressed_investigation(job: GitHubJob) -> int | None:
    """The investigation whose 📝 button queued this create job (storage/github.py `request_issue`)."""
    value = job.payload.get("investigation_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _with_marker(issues: list[ApiIssue], incident_id: int, since: datetime) -> ApiIssue | None:
    """The issue (not a pull request) filed for this incident after its intent was recorded: an
    older one with the same marker belongs to another database's incident with the same number."""
    for issue in issues:
        recent = issue.created_at is None or issue.created_at >= since
        if issue.pull_request is None and recent and has_marker(issue.body, incident_id):
            return issue
    return None


def _refusal_text(error: GitHubError, reason: str) -> str:
    """GitHub's own message, with what it usually means for this bot."""
    hint = {
        FailureKind.UNAUTHORIZED: "GitHub does not accept GITHUB_TOKEN (expired, revoked or mistyped)",
        FailureKind.FORBIDDEN: "the token lacks a permission: it needs Issues: read and write on the repository",
        FailureKind.NOT_FOUND: "no such repository, or the token cannot see it: check GITHUB_REPO and the "
                               "token's repository access",
        FailureKind.REFUSED: "GitHub refused it (are issues enabled in the repository?)",
    }.get(error.kind)
    return f"GitHub said: {reason}" + (f" — {hint}" if hint else "")


def comment_marker(incident_id: int) -> str:
    return f"<!-- remediator-incident: {incident_id} resolved -->"


def resolved_comment(payload: dict[str, object]) -> str:
    """What a resolve in chat says on the issue."""
    who = prose(str(payload.get("by") or "someone"), 100)
    via = {"button": "the ✔️ Resolve button", "command": "/resolve", "uptime": "its uptime monitor coming back up"}
    how = via.get(str(payload.get("via") or ""), str(payload.get("via") or "chat"))
    at = str(payload.get("at") or "")
    return (f"Resolved in chat by {who} ({how}{', ' + at if at else ''}). The bot leaves this issue open: "
            "close it here once the fix is confirmed.")
