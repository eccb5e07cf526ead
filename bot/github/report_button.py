"""The investigation report's "📝 File GitHub issue" button (issue 12, with issues 9/11's report).

A press records the intent to file through the same exactly-once path as Approve on a
`github_issue` proposal — `GitHubIssueRepository.request_issue`, one row and one job per
incident, the hidden marker in the body — so the worker (bot/github/service.py) files it with
the pressed report (kept in the create job, not the incident's newest) in the body and the
`auto-investigated` label, whatever the card proposes (a pattern fix too). A second press, or an Approve, links the issue already filed. The caller
(bot/decisions.py) has checked the approver's right and the rollout stage; the kill switch is
read here, inside the transaction that records the intent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot import killswitch
from bot.callback_data import FILE_ISSUE, CardPress, parse_id
from bot.card_publisher import CardPublisher
from bot.models import Actor
from storage.audit import AuditRepository
from storage.db import Database
from storage.github import GitHubIssueRepository
from storage.investigations import InvestigationRepository

BUTTON_LABEL = "📝 File GitHub issue"
AUDIT_ACTION = "github.request"


def file_issue_row(incident_id: int, investigation_id: int) -> list[tuple[str, str]]:
    """The button row under a report: `gi:<incident>:<investigation>`, well under 64 bytes."""
    return [(BUTTON_LABEL, CardPress(FILE_ISSUE, incident_id, str(investigation_id)).encode())]


@dataclass(frozen=True)
class Filing:
    """What to tell the person (plain text, a toast); the audit row is already written."""

    text: str
    changed: bool = False


class ReportIssueFiler:
    def __init__(self, db: Database, cards: CardPublisher, repo: str, on_queued: Callable[[], None]) -> None:
        self.db = db
        self.cards = cards
        self.repo = repo
        self.on_queued = on_queued  # wakes the GitHub worker

    async def press(self, actor: Actor, press: CardPress) -> Filing:
        investigation_id = parse_id(press.arg)
        audit_args: dict[str, Any] = {"actor_id": actor.id, "actor_name": actor.name, "incident_id": press.incident_id}
        async with self.db.transaction() as tx:
            audit = AuditRepository(tx)
            inv = await InvestigationRepository(tx).get(investigation_id) if investigation_id is not None else None
            if inv is None or inv.incident_id != press.incident_id or inv.state != "done":
                await audit.record(AUDIT_ACTION, "refused: unknown report", **audit_args)
                return Filing("Unknown report: nothing changed.")
            # Read inside the transaction: a /killswitch on cannot slip in before the intent lands.
            if (await killswitch.read(tx)).on:
                await audit.record(AUDIT_ACTION, "refused: kill switch on", **audit_args)
                return Filing("🛑 The kill switch is on: no issue is filed. Nothing changed.")
            # The pressed report goes in the body, not the newest one: the person read this one.
            before, row = await GitHubIssueRepository(tx).request_issue(press.incident_id, self.repo, None, actor.name,
                                                                        investigation_id=inv.id)
            detail = {"repo": self.repo, "github": before, "investigation_id": inv.id, "via": "report button"}
            if before == "filed" and row is not None:
                await audit.record(AUDIT_ACTION, "already filed", detail={**detail, "number": row.number,
                                                                         "url": row.html_url}, **audit_args)
                return Filing(f"Already filed: #{row.number} {row.html_url or row.ref}")
            outcome = "already being filed" if before == "pending" else "requested"
            await audit.record(AUDIT_ACTION, outcome, detail=detail, **audit_args)
            if before != "pending":
                await self.cards.publish(tx, press.incident_id)  # the card says "Filing a GitHub issue…"
        self.on_queued()
        if before == "pending":
            return Filing(f"Already being filed in {self.repo}: its link will be on the card.")
        return Filing(f"📝 Filing a GitHub issue in {self.repo} with this report: its link will be on the card.",
                      changed=True)
