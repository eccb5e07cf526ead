"""Queue an incident's card (new or edited) in the outbox, rendered from what is stored now.

Every path that changes an incident or its proposal (pipeline, buttons, commands, executor)
calls `CardPublisher.publish` inside its own transaction, so the card and the change commit
together and the outbox coalesces rapid changes into one edit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.card_render import CardExtras, render_card
from bot.models import Incident, utcnow
from bot.rollout import RolloutPolicy
from storage.db import Executor
from storage.incidents import IncidentRepository
from storage.outbox import MESSAGE_PRIORITY, OutboxRepository
from storage.proposals import ProposalRepository

#: what integrations add to an incident's card, read inside the publishing transaction
ExtrasSource = Callable[[Executor, Incident], Awaitable[CardExtras | None]]


class CardPublisher:
    def __init__(self, chat_id: int, policy: RolloutPolicy, on_queued: Callable[[], None] | None = None,
                 extras: ExtrasSource | None = None) -> None:
        self.chat_id = chat_id
        self.policy = policy
        # Wakes the outbox sender. Safe inside a transaction: the sender's read waits for the
        # database lock, so it sees the rows only once they are committed.
        self.on_queued = on_queued or (lambda: None)
        self.extras = extras  # e.g. GlitchTip's API lines (bot/glitchtip/card.py); None: none

    async def publish(self, tx: Executor, incident_id: int, *, held_back_too: bool = False) -> None:
        """Queue the card as it is now. A card held back in a storm (bot/storm.py) stays held back
        unless `held_back_too`: a human asked for it."""
        incident = await IncidentRepository(tx).get(incident_id)
        if incident is None:
            return
        if incident.card_deferred and incident.card_message_id is None and not held_back_too:
            return
        proposal = await ProposalRepository(tx).latest_for(incident_id)
        now = utcnow()
        extras = await self.extras(tx, incident) if self.extras is not None else None
        card = render_card(incident, proposal=proposal, policy=self.policy, now=now, extras=extras)
        payload = card.payload()
        payload["silent"] = incident.muted(now)  # a muted error's cards arrive without a notification
        await OutboxRepository(tx).put_card(
            incident.chat_id or self.chat_id, incident_id, payload,
            has_message=incident.card_message_id is not None, priority=incident.priority.rank,
        )
        self.on_queued()

    async def say(
        self, tx: Executor, html_text: str, reply_to: int | None = None, chat_id: int | None = None,
        priority: int = MESSAGE_PRIORITY, buttons: list[list[tuple[str, str]]] | None = None,
    ) -> None:
        """Queue a plain chat message (already-escaped HTML); `priority` 0 goes ahead of every card;
        `buttons`: rows of (label, callback data), e.g. 👍/👎 under an investigation report."""
        rows = [[list(b) for b in row] for row in buttons or []]
        await OutboxRepository(tx).add(
            chat_id or self.chat_id, {"text": html_text, "parse_mode": "HTML", "buttons": rows}, reply_to=reply_to,
            priority=priority,
        )
        self.on_queued()
