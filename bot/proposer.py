"""Which next step a new incident's card proposes, by rollout stage.

Stage 1 proposes nothing (monitor only); stage 2 and 3 propose "acknowledge"; stage 4
proposes a matching allow-listed fix, unless a fix for this fingerprint recently failed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.models import Alert, ProposalState, Triage, utcnow
from bot.recurrence import blocked_key
from storage.audit import AuditRepository
from storage.db import Executor
from storage.kv import KeyValueRepository
from storage.proposals import ProposalRepository

ACKNOWLEDGE = "acknowledge"
PATTERN = "pattern"


class Proposer:
    def __init__(self, stage: int, expiry_hours: float, patterns: Any | None = None, auto_fix: bool = False) -> None:
        self.stage = stage
        self.auto_fix = auto_fix
        self.expiry = timedelta(hours=expiry_hours)
        self.patterns = patterns

    async def propose(self, tx: Executor, incident_id: int, alert: Alert, triage: Triage) -> tuple[int, bool] | None:
        """Create the incident's proposal; returns (proposal id, auto-approved) or None."""
        if self.stage < 2:
            return None
        proposals = ProposalRepository(tx)
        expires = utcnow() + self.expiry
        if self.stage >= 4 and self.patterns is not None:
            blocked = await KeyValueRepository(tx).get(blocked_key(alert.fingerprint))
            match = None if blocked else self.patterns.match(alert, triage.category)
            if match is not None:
                pattern = match.pattern
                proposal_id = await proposals.create(
                    incident_id, PATTERN, match.summary(), expires, pattern_id=pattern.id,
                    action={"argv": match.argv, "verify": match.verify, "values": match.values},
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
        proposal_id = await proposals.create(incident_id, ACKNOWLEDGE, "acknowledge: I own this incident", expires)
        return proposal_id, False
