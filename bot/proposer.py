"""Which next step a new incident's card proposes, as the rollout policy allows.

Nothing at the monitor stage; otherwise "acknowledge", or, where fixes are proposed, a matching
allow-listed fix, unless a fix for this fingerprint recently failed. When no fix applies and
GitHub issues are on (GITHUB_TOKEN + GITHUB_REPO), an error's card proposes filing one instead
of "acknowledge" (bot/github/).

A fix runs on the bot's own host, so at stage 4 the proposal also says where: the card
shows "runs on <host>" (noting when the alert names no server), or, for an error from a
server outside ``FIX_HOSTS``, "no local fix: the error came from web-03" with the
acknowledge proposal. That line is kept in the proposal's action JSON as ``where``.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from bot.models import Alert, AlertKind, ProposalState, Triage, utcnow
from bot.proposals import ProposalKind
from bot.recurrence import blocked_key
from bot.rollout import RolloutPolicy
from patterns.engine import PatternMatch, this_host
from storage.audit import AuditRepository
from storage.db import Executor
from storage.kv import KeyValueRepository
from storage.proposals import ProposalRepository


class Proposer:
    def __init__(self, policy: RolloutPolicy, expiry_hours: float, patterns: Any | None = None,
                 auto_fix: bool = False, fix_hosts: Collection[str] | None = None,
                 github_repo: str | None = None) -> None:
        self.policy = policy
        self.github_repo = github_repo  # GITHUB_REPO when GitHub issues are on (bot/github/)
        self.auto_fix = auto_fix
        self.expiry = timedelta(hours=expiry_hours)
        self.patterns = patterns
        self.fix_hosts = fix_hosts  # FIX_HOSTS; None: the pattern set's own (this machine's names)

    async def propose(self, tx: Executor, incident_id: int, alert: Alert, triage: Triage) -> tuple[int, bool] | None:
        """Create the incident's proposal; returns (proposal id, auto-approved) or None."""
        if not self.policy.proposes:
            return None
        expires = utcnow() + self.expiry
        note: dict[str, Any] | None = None  # "no local fix: ..." shown with the acknowledge proposal
        if self.policy.proposes_fixes and self.patterns is not None:
            blocked = await KeyValueRepository(tx).get(blocked_key(alert.fingerprint))
            found = None if blocked else self.patterns.evaluate(alert, triage.category, hosts=self.fix_hosts)
            if found is not None and found.runnable:
                return await self._propose_fix(tx, incident_id, alert, found, expires)
            if found is not None and found.elsewhere:
                note = {"where": found.refused}
        if self.github_repo and alert.kind is AlertKind.ERROR and self.policy.allows(ProposalKind.GITHUB_ISSUE):
            # No safe fix applies: the useful next step is an issue in the team's repository.
            proposal_id = await ProposalRepository(tx).create(
                incident_id, ProposalKind.GITHUB_ISSUE, github_issue_summary(self.github_repo), expires,
                action={"repo": self.github_repo, **(note or {})},
            )
            return proposal_id, False
        proposal_id = await ProposalRepository(tx).create(
            incident_id, ProposalKind.ACKNOWLEDGE, "acknowledge: I own this incident", expires, action=note
        )
        return proposal_id, False

    async def _propose_fix(
        self, tx: Executor, incident_id: int, alert: Alert, match: PatternMatch, expires: datetime
    ) -> tuple[int, bool]:
        pattern = match.pattern
        proposals = ProposalRepository(tx)
        proposal_id = await proposals.create(
            incident_id, ProposalKind.PATTERN, match.summary(), expires, pattern_id=pattern.id,
            action={"argv": match.argv, "verify": match.verify, "precheck": match.precheck,
                    "values": match.values, "where": where_it_runs(alert)},
            approvals_required=pattern.approvals_required,
            requires_approval=pattern.requires_approval,
        )
        # AUTO_FIX=on and a pattern that does not require approval: approved by the bot itself,
        # still subject to the kill switch and rate limits when it starts, and said on the card.
        if not pattern.requires_approval and self.auto_fix and await proposals.transition(
            proposal_id, ProposalState.PENDING, ProposalState.APPROVED, by="auto-fix (AUTO_FIX=on)", by_id=-1
        ):
            await AuditRepository(tx).record(
                "proposal.approve", "auto-approved", actor_id=-1, actor_name="auto-fix",
                incident_id=incident_id, proposal_id=proposal_id, detail={"summary": match.summary()},
            )
            return proposal_id, True
        return proposal_id, False


def github_issue_summary(repo: str) -> str:
    """The card's proposal line for a GitHub issue (a retry after GitHub refused says the same)."""
    return f"file a GitHub issue in {repo}"


def where_it_runs(alert: Alert) -> str:
    """The card's line saying on which machine the fix's commands will run."""
    if not alert.server:
        return f"the alert names no server; runs on {this_host()}"
    return f"runs on {this_host()}"
