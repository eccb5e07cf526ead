"""Resolving an incident: the one function every path goes through.

The ✔️ Resolve button, `/resolve <id>` and an uptime monitor's "back up" all end here, so a
resolved incident is always left the same way: its open proposal closed as superseded (no
live Approve on a closed card), its fix block cleared, one audit row, and its card re-rendered,
all inside the caller's transaction.

The fix *watch* (bot/recurrence.py `watch_key`) is deliberately left alone: it is how a fix that
did not hold is found out, and "fix ran, person resolved, error back five minutes later" is
exactly the case it exists for. It expires with its recurrence window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from bot.card_publisher import CardPublisher
from bot.models import Incident, utcnow
from bot.recurrence import clear_block
from storage.audit import AuditRepository
from storage.db import Executor
from storage.github import GitHubIssueRepository
from storage.glitchtip import GlitchTipRepository
from storage.incidents import IncidentRepository
from storage.proposals import ProposalRepository

# What bot/fingerprint.py `glitchtip_fingerprint(host, "monitor", id)` makes, and nothing else does
# (other sources' fingerprints start with "title:" or "given:").
_MONITOR_FINGERPRINT = re.compile(r"glitchtip:[^\s]+:monitor:[0-9]+")


def is_monitor_fingerprint(fingerprint: str) -> bool:
    """Whether a fingerprint stands for a GlitchTip uptime monitor (the only thing "back up" may resolve)."""
    return _MONITOR_FINGERPRINT.fullmatch(fingerprint) is not None


@dataclass(frozen=True)
class Resolver:
    """Who or what resolves: a person (Telegram id and name) or the uptime monitor."""

    name: str
    id: int | None = None
    human: bool = True


MONITOR_BACK_UP = Resolver("uptime monitor (back up)", human=False)


class ResolveResult(StrEnum):
    RESOLVED = "resolved"
    NOT_FOUND = "not found"
    ALREADY_RESOLVED = "already resolved"


@dataclass(frozen=True)
class Resolution:
    result: ResolveResult
    incident: Incident | None = None  # as it was just before (for "already resolved by …")


async def resolve_incident(
    tx: Executor, cards: CardPublisher, incident_id: int, by: Resolver, *, via: str
) -> Resolution:
    """Resolve one incident (compare-and-set open -> resolved) and close what hangs on it.

    `via` says which path it came through (button, command, uptime) for the audit row.
    """
    incidents = IncidentRepository(tx)
    incident = await incidents.get(incident_id)
    if incident is None:
        return Resolution(ResolveResult.NOT_FOUND)
    now = utcnow()
    if not await incidents.resolve(incident_id, by.name, now):
        return Resolution(ResolveResult.ALREADY_RESOLVED, incident)
    superseded = await ProposalRepository(tx).supersede_pending(incident_id)
    await clear_block(tx, incident.fingerprint)
    # GlitchTip hears it too (PUT status=resolved, by bot/glitchtip/service.py), so it alerts again
    # when the error comes back. Only incidents linked to a GlitchTip issue (API configured) have a
    # link; for the rest this does nothing. Mute has no counterpart there (see that module).
    await GlitchTipRepository(tx).request_resolve(incident_id)
    # Its GitHub issue, if one was filed (or is on its way), gets "resolved in chat by …" as a
    # comment (bot/github/service.py); the bot never closes it. No issue: this does nothing.
    await GitHubIssueRepository(tx).request_comment(
        incident_id, {"by": by.name, "via": via, "at": f"{now:%Y-%m-%d %H:%M} UTC"}
    )
    await AuditRepository(tx).record(
        "incident.resolve", "resolved", actor_id=by.id, actor_name=by.name, incident_id=incident_id,
        detail={"time_to_resolution_s": round((now - incident.first_seen).total_seconds(), 1),
                "human_intervention": by.human, "via": via, "superseded_proposals": superseded},
    )
    await cards.publish(tx, incident_id)
    return Resolution(ResolveResult.RESOLVED, incident)
