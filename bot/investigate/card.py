"""What an investigation adds to its incident's card: "investigating…" while one is queued or running.

The card is published again when the investigation is asked for, starts, and ends (in the same
transactions), so the line appears and goes away with the row's state.
"""

from __future__ import annotations

from bot.card_render import CardExtras, esc
from bot.models import Incident
from storage.db import Executor
from storage.investigations import InvestigationRepository


async def investigation_card_extras(tx: Executor, incident: Incident) -> CardExtras | None:
    active = await InvestigationRepository(tx).active_for(incident.id)
    if active is None:
        return None
    waiting = "queued" if active.state == "queued" else "running"
    return CardExtras(state=(f"🔎 Investigating… ({waiting}, asked by {esc(active.requested_by, 60)})",))
