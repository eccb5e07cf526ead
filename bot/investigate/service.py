"""Investigations without any key: where in the code, what changed there, whether it happened before.

A press (🔎 Investigate, `/investigate <id>`) writes a queued row, its audit row, in one
transaction, and answers at once; the work runs in the background (at most CONCURRENCY at a
time). When it starts it re-checks the kill switch and moves queued → running (compare-and-set);
the report is stored and queued as a reply under the card in one transaction. A crash leaves the
row queued or running: the next start marks it **interrupted** and says so under the card, and a
new press starts a new one (re-running it by itself could flood the chat after a crash loop).

The report: with Claude (bot/investigate/claude.py) its tool-use loop over read-only tools; without
a key, or when Claude is unavailable (budget, timeout, caps, an invalid answer), the same report
shape built from the findings alone, saying so. The reply under the card is a short summary with
the full Markdown report attached as a document; the card says "investigating…" meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bot import killswitch
from bot.background import BackgroundTasks
from bot.callback_data import HELPFUL, CardPress, parse_id
from bot.card_publisher import CardPublisher
from bot.card_render import esc
from bot.glitchtip.details import Frame, IssueDetails, stored_issue_details
from bot.investigate.claude import ClaudeInvestigator
from bot.investigate.frames import RepoFiles, StackFrame, map_frames, parse_stack, safe_file, snippet
from bot.investigate.git import GitError, blame_line, recent_commits, tracked_files
from bot.investigate.markdown import render_markdown
from bot.investigate.model import InvestigationReport, keyfree_report
from bot.investigate.report import Findings, FrameFinding
from bot.investigate.similar import similar_incidents
from bot.investigate.summary import summary_html
from bot.investigate.tools import RepoTools
from bot.llm.gate import ClaudeUnavailable
from bot.models import Actor, Incident, utcnow
from storage.audit import AuditRepository
from storage.db import Database
from storage.glitchtip import GlitchTipRepository
from storage.incidents import IncidentRepository
from storage.investigations import InvestigationRepository

log = logging.getLogger(__name__)
CONCURRENCY = 2


@dataclass(frozen=True)
class Answer:
    """What to tell the person, whether it changed anything; the audit row is already written."""

    text: str
    changed: bool = False


def vote_buttons(incident_id: int, investigation_id: int,
                 extra_row: list[tuple[str, str]] | None = None) -> list[list[tuple[str, str]]]:
    """👍/👎 under a report, and `extra_row` under them (📝 File GitHub issue when GitHub is on)."""
    return [[("👍 Helpful", CardPress(HELPFUL, incident_id, f"{investigation_id}y").encode()),
             ("👎 Not helpful", CardPress(HELPFUL, incident_id, f"{investigation_id}n").encode())],
            *([extra_row] if extra_row else [])]


class Investigator:
    def __init__(
        self, db: Database, cards: CardPublisher, tasks: BackgroundTasks, *, repo_path: Path | None,
        redact: Callable[[str], str], suspect_days: float = 7.0, clock: Callable[[], datetime] = utcnow,
        claude: ClaudeInvestigator | None = None,
        report_row: Callable[[int, int], list[tuple[str, str]]] | None = None,
    ) -> None:
        self.db = db
        self.cards = cards
        self.tasks = tasks
        self.repo_path = repo_path
        self.redact = redact
        self.suspect_days = suspect_days
        self.clock = clock
        self.claude = claude  # None: no ANTHROPIC_API_KEY, the key-free report only
        self._slots = asyncio.Semaphore(CONCURRENCY)
        # (incident, investigation) -> one more button row under the report (bot/github/report_button.py)
        self.report_row = report_row

    # -- asking ----------------------------------------------------------------------------

    async def request(self, actor: Actor, incident_id: int, via: str) -> Answer:
        """Record an investigation and start it after the commit (the caller checked approver and stage)."""
        audit_args: dict[str, Any] = {"actor_id": actor.id, "actor_name": actor.name, "incident_id": incident_id}
        async with self.db.transaction() as tx:
            if await IncidentRepository(tx).get(incident_id) is None:
                await AuditRepository(tx).record("incident.investigate", "refused: unknown incident", **audit_args)
                return Answer(f"No incident #{incident_id}.")
            investigation_id = await InvestigationRepository(tx).create(incident_id, actor.name, actor.id, via)
            if investigation_id is None:
                await AuditRepository(tx).record("incident.investigate", "refused: one is already running",
                                                 **audit_args)
                return Answer(f"🔎 An investigation of #{incident_id} is already running: its report will reply "
                              "under the card.")
            await AuditRepository(tx).record("incident.investigate", "requested", detail={
                "investigation_id": investigation_id, "via": via}, **audit_args)
            await self.cards.publish(tx, incident_id)  # the card says "investigating…"
        self.tasks.spawn(self.run(investigation_id), name=f"investigation-{investigation_id}")
        return Answer("🔎 Investigation started and recorded: the report will reply under the card.", changed=True)

    async def recover_interrupted(self) -> int:
        """At start: investigations a crash cut short are marked interrupted, and said so in the chat."""
        async with self.db.transaction() as tx:
            cut_short = await InvestigationRepository(tx).interrupt_active()
            for inv in cut_short:
                incident = await IncidentRepository(tx).get(inv.incident_id)
                await AuditRepository(tx).record("investigation.interrupted", "interrupted by a restart",
                                                 incident_id=inv.incident_id, detail={"investigation_id": inv.id})
                await self.cards.say(
                    tx, f"🔎 The investigation of #{inv.incident_id} asked by {esc(inv.requested_by, 60)} was "
                        "interrupted by a restart. Press 🔎 Investigate again to run it.",
                    reply_to=incident.card_message_id if incident else None,
                )
                await self.cards.publish(tx, inv.incident_id)  # no longer "investigating…"
        return len(cut_short)

    # -- running ---------------------------------------------------------------------------

    async def run(self, investigation_id: int) -> None:
        async with self._slots:
            async with self.db.transaction() as tx:
                repo = InvestigationRepository(tx)
                inv = await repo.get(investigation_id)
                if inv is None or not await repo.start(investigation_id):
                    return
                incident = await IncidentRepository(tx).get(inv.incident_id)
                if incident is None or (await killswitch.read(tx)).on:
                    why = "the kill switch is on" if incident is not None else "the incident is gone"
                    await repo.fail(investigation_id, why)
                    await self.cards.say(tx, f"🔎 Investigation of #{inv.incident_id} not started: {why}.",
                                         reply_to=incident.card_message_id if incident else None)
                    if incident is not None:
                        await self.cards.publish(tx, incident.id)
                    return
                await self.cards.publish(tx, incident.id)  # "investigating…" (queued → running)
            try:
                findings = await self.findings(incident, investigation_id)
                report = await self.report(findings)
                markdown = render_markdown(report, findings, self.redact)
                html = summary_html(report, findings, self.redact)
            except Exception as exc:
                log.exception("investigation %s failed", investigation_id)
                await self._failed(investigation_id, incident, f"{type(exc).__name__}: {exc}")
                return
            report_json = json.dumps(_redacted(report.model_dump(), self.redact), ensure_ascii=False)
            async with self.db.transaction() as tx:
                if await InvestigationRepository(tx).finish(investigation_id, html, markdown, report_json):
                    fresh = await IncidentRepository(tx).get(incident.id)
                    await self.cards.send_file(
                        tx, kind="document", filename=f"investigation-{incident.id}-{investigation_id}.md",
                        content=markdown.encode("utf-8"), caption=html,
                        reply_to=(fresh or incident).card_message_id,
                        buttons=vote_buttons(incident.id, investigation_id, self.report_row(incident.id, investigation_id)
                                             if self.report_row is not None else None),
                    )
                    await AuditRepository(tx).record("investigation.done", "reported", incident_id=incident.id,
                                                     detail={"investigation_id": investigation_id,
                                                             "source": report.source,
                                                             "claude_unavailable": report.claude_unavailable,
                                                             "suspect": findings.suspect.blame.sha
                                                             if findings.suspect and findings.suspect.blame else None})
                    await self.cards.publish(tx, incident.id)  # no longer "investigating…"

    async def report(self, findings: Findings) -> InvestigationReport:
        """Claude's report when a key is set and Claude answers within its limits; else the key-free one."""
        if self.claude is None:
            return keyfree_report(findings)
        tools = RepoTools(self.repo_path, self.redact, similar=lambda: _similar_text(findings))
        try:
            return await self.claude.report(findings, tools, self.redact)
        except ClaudeUnavailable as exc:
            log.warning("investigation %s: Claude unavailable: %s", findings.investigation_id, exc.reason)
            return keyfree_report(findings, claude_unavailable=_one_line(self.redact(exc.reason)))
        except Exception as exc:  # a bug on Claude's path must not cost the key-free report
            log.exception("investigation %s: Claude's loop failed", findings.investigation_id)
            return keyfree_report(findings, claude_unavailable=f"internal error ({type(exc).__name__})")

    async def _failed(self, investigation_id: int, incident: Incident, error: str) -> None:
        error = self.redact(error)
        async with self.db.transaction() as tx:
            if await InvestigationRepository(tx).fail(investigation_id, error):
                await AuditRepository(tx).record("investigation.failed", error[:120], incident_id=incident.id,
                                                 detail={"investigation_id": investigation_id})
                await self.cards.say(tx, f"🔎 Investigation of #{incident.id} failed: {esc(error, 300)}",
                                     reply_to=incident.card_message_id)
                await self.cards.publish(tx, incident.id)

    async def findings(self, incident: Incident, investigation_id: int) -> Findings:
        """Everything the report shows, gathered read-only from the repository and the database."""
        enrichment = await self._enrichment(incident.id)
        frames = _frames(enrichment, incident.stacktrace)
        not_done: list[str] = []
        found: list[FrameFinding] = []
        if self.repo_path is None:
            not_done.append("REPO_PATH is not set: no code, no git history and no suspect commit.")
        elif not frames:
            not_done.append("No stack frames in this alert: nothing to map to the code.")
        else:
            found = await self._in_repo(self.repo_path, frames, not_done)
        now = self.clock()
        suspect = _suspect(found, now - timedelta(days=self.suspect_days))
        return Findings(
            incident=incident, investigation_id=investigation_id, frames=found, suspect=suspect,
            suspect_days=self.suspect_days, similar=await similar_incidents(self.db, incident),
            enrichment=enrichment, stack_frames_seen=len(frames), not_done=not_done, now=now,
        )

    async def _enrichment(self, incident_id: int) -> IssueDetails | None:
        return stored_issue_details(await GlitchTipRepository(self.db).link(incident_id))

    async def _in_repo(self, root: Path, frames: list[StackFrame], not_done: list[str]) -> list[FrameFinding]:
        try:
            files = await tracked_files(root)
        except GitError as exc:
            not_done.append(f"REPO_PATH {root} could not be read with git ({exc}).")
            return []
        mapped = map_frames(frames, RepoFiles(root, files))
        if not mapped:
            not_done.append(f"None of the {len(frames)} stack frames is a file of REPO_PATH "
                            "(library frames are skipped).")
            return []
        found = []
        for m in mapped:
            path = safe_file(root, m.file)
            line = m.frame.line
            lines = await asyncio.to_thread(snippet, path, line) if path is not None and line else []
            blame = history = None
            try:
                history = await recent_commits(root, m.file)
                blame = await blame_line(root, m.file, line) if lines and line else None
            except GitError as exc:
                not_done.append(f"git history of {m.file}: {exc}")
            found.append(FrameFinding(m, lines, blame, history or []))
        return found


async def _similar_text(findings: Findings) -> str:
    """The similar_incidents tool's answer: the past incidents already found, and how each ended."""
    if not findings.similar:
        return "No similar incidents in this bot's history."
    lines = []
    for p in findings.similar:
        ended = f"resolved by {p.resolved_by or 'someone'}" if p.status == "resolved" else "still open"
        if p.proposal_summary and p.proposal_state:
            ended += f"; last proposal: {p.proposal_summary} ({p.proposal_state})"
        if p.github_url:
            ended += f"; GitHub issue {p.github_url}"
        lines.append(f"#{p.id} {p.title[:200]} — {ended}")
    return "\n".join(lines)


def _redacted(value: Any, redact: Callable[[str], str]) -> Any:
    """Every string inside, redacted (the JSON stays JSON: text is redacted before it is encoded)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redacted(v, redact) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v, redact) for k, v in value.items()}
    return value


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()[:300]


def _frames(enrichment: IssueDetails | None, stack: str) -> list[StackFrame]:
    """GlitchTip's crashing frames first (when its API gave them), then the alert's own stack text."""
    api: tuple[Frame, ...] = enrichment.frames if enrichment is not None else ()
    return [StackFrame(f.file, f.line, f.function) for f in api] + parse_stack(stack)


def _suspect(found: list[FrameFinding], since: datetime) -> FrameFinding | None:
    """The frame whose crashing line was changed most recently, if that was after `since`."""
    recent = [f for f in found if f.blame is not None and f.blame.at >= since]
    return max(recent, key=lambda f: f.blame.at if f.blame else since, default=None)


async def vote(db: Database, actor: Actor, press: CardPress) -> Answer:
    """👍/👎 on a report: one vote per person, changeable; audited (the caller checked the approver)."""
    investigation_id = parse_id(press.arg[:-1]) if press.arg[-1:] in ("y", "n") else None
    helpful = press.arg.endswith("y")
    async with db.transaction() as tx:
        repo = InvestigationRepository(tx)
        inv = await repo.get(investigation_id) if investigation_id is not None else None
        if inv is None or inv.incident_id != press.incident_id or inv.state != "done":
            await AuditRepository(tx).record("investigation.vote", "refused: unknown report", actor_id=actor.id,
                                             actor_name=actor.name, incident_id=press.incident_id)
            return Answer("Unknown report: nothing changed.")
        before = await repo.vote(inv.id, actor.id, actor.name, helpful)
        up, down = await repo.votes(inv.id)
        said = "helpful" if helpful else "not helpful"
        outcome = "voted" if before is None else ("unchanged" if before == helpful else "changed")
        await AuditRepository(tx).record("investigation.vote", outcome, actor_id=actor.id, actor_name=actor.name,
                                         incident_id=inv.incident_id,
                                         detail={"investigation_id": inv.id, "helpful": helpful})
    if before == helpful:
        return Answer(f"You already said {said} ({up} 👍 / {down} 👎).")
    verb = "Changed to" if before is not None else "Thanks: recorded as"
    return Answer(f"{verb} {said} ({up} 👍 / {down} 👎).", changed=True)
