"""Triage that learns from corrections (issue 13): priority overrides per rule + project.

The metrics name the rule + project pairs whose priority humans corrected most, and which way
(bot/metrics.py `corrections`). When a pair was corrected the same way at least
OVERRIDE_AFTER_CORRECTIONS times, the digest and /stats offer an Apply button; an approver's press
adds an override, and from then on new incidents that rule triages in that project get the
corrected priority, the card saying so. `/overrides` lists them, each with a Remove button. Each
message's Apply buttons are its own offers (one recorded showing each): an Apply under a message
shown before a person's later change to that pair (a removal, or another override applied) changes
nothing and says who changed it, however often the pair was shown since; the next /stats or digest
offers it anew.

`apply_override` is the one function that changes a triage result: the pipeline calls it right
after the rules (through `with_override`, bot/pipeline.py `_handle_alert`), Claude's triage when it
replaces the rules' (bot/triage/claude.py `_settle`), and `remediator triage` with the overrides
read from the database (bot/cli.py). Any other step that replaces a triage must call it too.
The rules' own priority is kept as the incident's original, so the metrics keep judging the rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.callback_data import OVERRIDE_APPLY, OVERRIDE_REMOVE, CardPress, is_valid_id
from bot.card_publisher import CardPublisher
from bot.card_render import esc
from bot.metrics import NO_RULE, Correction, Metrics
from bot.models import Actor, Priority, Triage
from storage.audit import AuditRepository
from storage.db import Database, Executor
from storage.overrides import OverrideOffer, OverrideRepository, PriorityOverride

#: corrections the same way before the digest offers an override (OVERRIDE_AFTER_CORRECTIONS)
DEFAULT_THRESHOLD = 3
MAX_OFFERS = 5
MAX_LISTED = 15  # /overrides lines (and Remove buttons) in one message
Button = tuple[str, str]


# -- the triage result (pure) --------------------------------------------------------------------


def apply_override(triage: Triage, project: str | None, overrides: Iterable[PriorityOverride]) -> Triage:
    """`triage` with the priority of the live override for its rule and `project`, else unchanged.

    Idempotent: calling it again (after another step re-triaged) keeps the first triage's priority
    as the one the override replaced. A triage without a rule (Claude's own, or none matched) or an
    incident without a project is never overridden: an override names both.
    """
    if triage.rule_id is None or not project:
        return triage
    found = next((o for o in overrides if o.live and o.rule_id == triage.rule_id and o.project == project), None)
    if found is None:
        return triage
    return dataclasses.replace(
        triage, priority=Priority(found.priority),
        priority_before_override=triage.priority_before_override or triage.priority,
        override_id=found.id, override_corrections=found.corrections,
    )


def override_text(triage: Triage) -> str | None:
    """ "P0 by override from 4 corrections (the rules said P2)", or None when no override applied."""
    if triage.priority_before_override is None:
        return None
    n = triage.override_corrections or 0
    return (f"{triage.priority.value} by override from {n} correction{'s' if n != 1 else ''} "
            f"(the rules said {triage.priority_before_override.value})")


async def with_override(db: Executor, triage: Triage, project: str | None) -> Triage:
    """The pipeline's step right after triage: the live override of this rule + project, if any."""
    if triage.rule_id is None or not project:
        return triage  # nothing to look up
    found = await OverrideRepository(db).live_for(triage.rule_id, project)
    return apply_override(triage, project, [found] if found is not None else [])


# -- offers: which pairs earn an Apply button ------------------------------------------------


def offerable(corrections: Iterable[Correction], threshold: int, live: Iterable[PriorityOverride]) -> list[Correction]:
    """Rule + project pairs corrected the same way at least `threshold` times, unless a live
    override already gives them that priority."""
    applied = {(o.rule_id, o.project, o.priority) for o in live}
    return [
        c for c in corrections
        if c.project and c.rule_id != NO_RULE and c.times >= threshold and (c.rule_id, c.project, c.to) not in applied
    ][:MAX_OFFERS]


@dataclass(frozen=True)
class Offer:
    id: int
    correction: Correction


def offer_lines(offers: list[Offer], threshold: int) -> list[str]:
    """Telegram HTML: what each Apply button below the message would do."""
    if not offers:
        return []
    lines = [f"<b>Overrides to apply</b> (corrected the same way {threshold}+ times; approvers press Apply)"]
    for offer in offers:
        c = offer.correction
        lines.append(f"• Apply: new <code>{esc(c.rule_id, 60)}</code> incidents in "
                     f"<code>{esc(c.project, 60)}</code> get {esc(c.to, 4)} (corrected to it {c.times} times)")
    return lines


def offer_buttons(offers: list[Offer]) -> list[list[Button]]:
    """One Apply button a row; the callback data carries only the offer's id (under 64 bytes)."""
    return [[(_button_text(f"✅ Apply {o.correction.to}: {o.correction.rule_id} · {o.correction.project}"),
              CardPress(OVERRIDE_APPLY, o.id).encode())] for o in offers]


def _button_text(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def stale_offer_text(later: PriorityOverride) -> str:
    """Why an Apply under an older message changed nothing: who changed the pair since, and when."""
    what = f"Override #{later.id} ({later.priority} for {later.rule_id} in {later.project})"
    if later.removed_at is not None:
        done = f"was removed by {later.removed_by or 'someone'} at {later.removed_at:%Y-%m-%d %H:%M} UTC"
    else:
        done = f"was applied by {later.applied_by} at {later.applied_at:%Y-%m-%d %H:%M} UTC"
    return (f"{what} {done}, after this offer was made: nothing changed. "
            "If it should apply anyway, send /stats for a fresh offer and press Apply there.")


# -- the service: offers, apply, remove, the list ------------------------------------------------


@dataclass(frozen=True)
class OverrideAnswer:
    """What to answer the person (plain text) and whether anything changed; always audited."""

    text: str
    changed: bool = False


class OverrideService:
    """Records offers, applies and removes overrides. The approver's right is checked by the
    caller (bot/decisions.py); each change, its audit row and its chat notice commit together."""

    def __init__(self, db: Database, cards: CardPublisher, *, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.db = db
        self.cards = cards
        self.threshold = threshold

    async def offers(self, tx: Executor, metrics: Metrics) -> list[Offer]:
        """The Apply offers for a window's figures, recorded as this showing's own (one id each, for
        the buttons of the one message that shows them)."""
        repo = OverrideRepository(tx)
        found = offerable(metrics.corrected_rule_projects, self.threshold, await repo.live())
        return [
            Offer(await repo.offer(c.rule_id, c.project or "", c.to, c.times, c.of), c) for c in found
        ]

    async def apply(self, actor: Actor, offer_id: int) -> OverrideAnswer:
        async with self.db.transaction() as tx:
            repo = OverrideRepository(tx)
            offer = await repo.get_offer(offer_id) if is_valid_id(offer_id) else None
            audit = AuditRepository(tx)
            who: dict[str, Any] = {"actor_id": actor.id, "actor_name": actor.name}
            if offer is None:
                await audit.record("override.apply", "refused: unknown offer", detail={"offer_id": offer_id}, **who)
                return OverrideAnswer("Unknown override offer: nothing changed.")
            pair = {"offer_id": offer.id, "rule": offer.rule_id, "project": offer.project, "priority": offer.priority}
            live = await repo.live_for(offer.rule_id, offer.project)
            if live is not None and live.priority == offer.priority:
                await audit.record("override.apply", "already applied", detail={**pair, "override_id": live.id}, **who)
                return OverrideAnswer(f"Already applied (override #{live.id}, by {live.applied_by}).")
            # A button under an older message must not undo a person's later decision on this pair
            # (a removal, or another override applied), even when a newer message showed the same
            # offer since: that message has buttons of its own. A fresh /stats or digest offers it again.
            later = await self._changed_since_shown(repo, offer)
            if later is not None:
                await audit.record("override.apply", "refused: stale offer",
                                   detail={**pair, "override_id": later.id}, **who)
                return OverrideAnswer(stale_offer_text(later))
            if live is not None:  # humans now correct it another way: the newer evidence replaces it
                await repo.remove(live.id, actor.name, actor.id)
                await audit.record("override.remove", "replaced", detail={"override_id": live.id, **pair}, **who)
            override_id = await repo.add(offer, actor.name, actor.id)
            await audit.record("override.apply", "applied", detail={
                **pair, "override_id": override_id, "corrections": offer.corrections,
                "replaced": live.id if live is not None else None, "human_intervention": True,
            }, **who)
            await self.cards.say(tx, (
                f"⚖️ Override #{override_id} by {esc(actor.name, 80)}: new <code>{esc(offer.rule_id, 60)}</code> "
                f"incidents in <code>{esc(offer.project, 60)}</code> get <b>{esc(offer.priority, 4)}</b> "
                f"(from {offer.corrections} corrections). Undo: /overrides remove {override_id}"))
        return OverrideAnswer(f"Applied: {offer.rule_id} in {offer.project} is {offer.priority} from now on.",
                              changed=True)

    @staticmethod
    async def _changed_since_shown(repo: OverrideRepository, offer: OverrideOffer) -> PriorityOverride | None:
        """The pair's latest override change when people changed it after `offer` was shown, else None."""
        if await repo.pair_changes(offer.rule_id, offer.project) == offer.pair_changes:
            return None
        return await repo.latest_change(offer.rule_id, offer.project)

    async def remove(self, actor: Actor, override_id: int, *, via: str) -> OverrideAnswer:
        async with self.db.transaction() as tx:
            repo = OverrideRepository(tx)
            found = await repo.get(override_id) if is_valid_id(override_id) else None
            audit = AuditRepository(tx)
            who: dict[str, Any] = {"actor_id": actor.id, "actor_name": actor.name}
            if found is None:
                await audit.record("override.remove", "not found", detail={"override_id": override_id, "via": via},
                                   **who)
                return OverrideAnswer(f"No override #{override_id}.")
            detail = {"override_id": found.id, "rule": found.rule_id, "project": found.project,
                      "priority": found.priority, "via": via}
            if not await repo.remove(found.id, actor.name, actor.id):
                await audit.record("override.remove", "already removed", detail=detail, **who)
                return OverrideAnswer(f"Override #{found.id} was already removed (by {found.removed_by or 'someone'}).")
            await audit.record("override.remove", "removed", detail=detail, **who)
            await self.cards.say(tx, (
                f"⚖️ Override #{found.id} removed by {esc(actor.name, 80)}: <code>{esc(found.rule_id, 60)}</code> "
                f"in <code>{esc(found.project, 60)}</code> is triaged by the rules again."))
        return OverrideAnswer(f"Override #{found.id} removed.", changed=True)

    async def list_html(self) -> tuple[str, list[list[Button]]]:
        """/overrides: each live override (id, rule, project, priority, corrections, who, when) and its Remove button."""
        live = await OverrideRepository(self.db).live()
        if not live:
            return (f"No priority overrides. The digest and /stats offer one when a rule's priority in a project "
                    f"was corrected the same way {self.threshold} times."), []
        lines = ["⚖️ <b>Priority overrides</b> (new incidents of the rule in the project get the priority)"]
        shown = live[:MAX_LISTED]  # each line is at most ~250 characters: the message stays under 4096
        for o in shown:
            lines.append(f"#{o.id} <code>{esc(o.rule_id, 60)}</code> · <code>{esc(o.project, 60)}</code> → "
                         f"<b>{esc(o.priority, 4)}</b>, from {o.corrections} corrections, by {esc(o.applied_by, 60)} "
                         f"at {o.applied_at:%Y-%m-%d %H:%M} UTC")
        if len(live) > len(shown):
            lines.append(f"… and {len(live) - len(shown)} more, not shown (the oldest are listed first)")
        lines.append("Remove: the buttons, or /overrides remove &lt;id&gt;")
        buttons = [[(f"🗑 Remove #{o.id}", CardPress(OVERRIDE_REMOVE, o.id).encode())] for o in shown]
        return "\n".join(lines), buttons
