"""After a fix: did it hold? A repeat inside the pattern's recurrence window says it did not.

Kept apart from the patterns engine so the pipeline and the decision service can use it
without loading the allow-list.
"""

from __future__ import annotations

import time
from datetime import datetime

from bot.card_publisher import CardPublisher
from bot.card_render import esc
from bot.models import ProposalState, utcnow
from storage.audit import AuditRepository
from storage.db import Executor
from storage.kv import KeyValueRepository
from storage.proposals import ProposalRepository


def watch_key(fingerprint: str) -> str:
    """kv key: a fix for this fingerprint succeeded; a repeat before `until` means it did not hold."""
    return f"fix_watch:{fingerprint}"


def mute_key(fingerprint: str) -> str:
    """kv key: the error is muted until this time, across regressions of it."""
    return f"mute:{fingerprint}"


async def muted_until(tx: Executor, fingerprint: str) -> datetime | None:
    value = await KeyValueRepository(tx).get(mute_key(fingerprint))
    until = datetime.fromisoformat(value) if value else None
    return until if until and until > utcnow() else None


def blocked_key(fingerprint: str) -> str:
    """kv key marking a fingerprint whose automatic fix failed: no automatic proposal until cleared."""
    return f"fix_blocked:{fingerprint}"


async def watch_for_recurrence(tx: Executor, fingerprint: str, proposal_id: int, window_s: float) -> None:
    await KeyValueRepository(tx).set(watch_key(fingerprint), {"proposal_id": proposal_id, "until": time.time() + window_s})


async def has_fix_watches(tx: Executor) -> bool:
    """Whether any fix is being watched now: lets the pipeline skip per-alert checks in storms."""
    return await KeyValueRepository(tx).has_prefix("fix_watch:")


async def check_recurrence(tx: Executor, fingerprint: str, cards: CardPublisher) -> None:
    """The same error fired again inside a fix's recurrence window: the fix did not hold.

    The proposal becomes failed (a false positive for the metrics), the card says so, and no
    automatic fix is proposed for this fingerprint until a human resolves the incident.
    """
    kv = KeyValueRepository(tx)
    watch = await kv.get(watch_key(fingerprint))
    if not watch:
        return
    await kv.delete(watch_key(fingerprint))
    if time.time() > float(watch["until"]):
        return
    proposals = ProposalRepository(tx)
    proposal = await proposals.get(int(watch["proposal_id"]))
    if proposal is None:
        return
    reason = ("the error came back within the recurrence window: the fix did not hold; no automatic fix "
              "is proposed for this error until a human resolves the incident")
    if await proposals.transition(proposal.id, ProposalState.SUCCEEDED, ProposalState.FAILED, result=reason):
        await kv.set(blocked_key(fingerprint), {"proposal_id": proposal.id, "at": utcnow().isoformat()})
        await AuditRepository(tx).record(
            "fix.recurred", "failed (false positive)", incident_id=proposal.incident_id, proposal_id=proposal.id,
            detail={"pattern": proposal.pattern_id},
        )
        await cards.publish(tx, proposal.incident_id)
        await cards.say(tx, f"⚠️ #{proposal.incident_id}: the fix <b>{esc(proposal.pattern_id or '')}</b> did not "
                            "hold (the error came back). Marked failed; automatic fixes paused for this error.")


async def clear_block(tx: Executor, fingerprint: str) -> None:
    """The incident was resolved (bot/resolution.py): automatic proposals may be made again for it."""
    await KeyValueRepository(tx).delete(blocked_key(fingerprint))
