"""The runner of `github_issue` proposals: Approve records the intent and hands it to the queue.

Filing is GitHub's business and may take as long as an outage lasts, so the proposal does not
wait for it: `run` commits the intent row and its job (storage/github.py) and returns at once,
and the card follows the filing through its GitHub line (bot/github/card.py) — "being filed",
the issue's link, or GitHub's refusal with Approve offered again. A crash can therefore never
leave a filing half-way inside a `running` proposal: the queue resumes it at the next start.

A second approval for an incident that has its issue links that issue; one still on its way is
not queued twice.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.execution import ActionResult
from bot.models import Proposal
from storage.db import Database, Executor
from storage.github import GitHubIssueRepository


class GitHubIssueRunner:
    """The `KindRunner` (bot/execution.py) for "file a GitHub issue in owner/name"."""

    def __init__(self, db: Database, repo: str, on_queued: Callable[[], None]) -> None:
        self.db = db
        self.repo = repo
        self.on_queued = on_queued  # wakes the GitHub worker (bot/github/service.py)

    async def start_check(self, tx: Executor, proposal: Proposal) -> str | None:
        shown = (proposal.action or {}).get("repo")
        if shown and shown != self.repo:
            return f"the card said {shown}, but GITHUB_REPO is now {self.repo}"
        return None

    async def run(self, proposal: Proposal) -> ActionResult:
        async with self.db.transaction() as tx:
            before, row = await GitHubIssueRepository(tx).request_issue(
                proposal.incident_id, self.repo, proposal.id, proposal.decided_by
            )
        self.on_queued()
        detail = {"repo": self.repo, "github": before}
        if before == "filed" and row is not None:
            return ActionResult(True, f"already filed as {row.ref}: {row.html_url}",
                                detail={**detail, "number": row.number, "url": row.html_url})
        if before == "pending":
            return ActionResult(True, "already being filed", detail=detail)
        # The card's GitHub line says how the filing goes; the proposal line needs no outcome.
        return ActionResult(True, "", detail=detail)
