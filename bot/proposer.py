"""Which next step a new incident's card proposes, by rollout stage.

Stage 1 proposes nothing (monitor only); stage 2 and 3 propose "acknowledge"; stage 4
proposes a matching allow-listed fix, unless a fix for this fingerprint recently failed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.models import Alert, Triage, utcnow
from storage.db import Executor
from storage.kv import KeyValueRepository
from storage.proposals import ProposalRepository

ACKNOWLEDGE = "acknowledge"
PATTERN = "pattern"


def blocked_key(fingerprint: str) -> str:
    """kv key marking a fingerprint whose automatic fix failed: no automatic proposal until cleared."""
    return f"fix_blocked:{fingerprint}"


class Proposer:
    def __init__(self, stage: int, expiry_hours: float, patterns: Any | None = None) -> None:
        self.stage = stage
        self.expiry = timedelta(hours=expiry_hours)
        self.patterns = patterns

    async def propose(self, tx: Executor, incident_id: int, alert: Alert, triage: Triage) -> int | None:
        if self.stage < 2:
            return None
        proposals = ProposalRepository(tx)
        expires = utcnow() + self.expiry
        if self.stage >= 4 and self.patterns is not None:
            blocked = await KeyValueRepository(tx).get(blocked_key(alert.fingerprint))
            match = None if blocked else self.patterns.match(alert, triage.category)
            if match is not None:
                pattern = match.pattern
                return await proposals.create(
                    incident_id, PATTERN, match.summary(), expires, pattern_id=pattern.id,
                    action={"argv": match.argv, "verify": match.verify, "values": match.values},
                    approvals_required=pattern.approvals_required,
                    requires_approval=pattern.requires_approval,
                )
        return await proposals.create(incident_id, ACKNOWLEDGE, "acknowledge: I own this incident", expires)
