"""Everything a person decides: card presses, and the commands that change something
(resolve, mute, the kill switch).

The service layer the Telegram handlers (through bot/chat_commands.py for commands) call; it
never imports aiogram. Each operation takes an `Actor`, checks the approver's right itself, and
makes its change, its audit row and its card edit or chat message in one transaction (a
compare-and-set where two presses could race), so two presses, two people or two processes can
never run an action twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot import killswitch
from bot.background import BackgroundTasks
from bot.callback_data import (
    APPROVE,
    FILE_ISSUE,
    HELPFUL,
    INVESTIGATE,
    MUTE,
    OVERRIDE_ACTIONS,
    OVERRIDE_APPLY,
    PRIORITY,
    REJECT,
    RESOLVE,
    CardPress,
    is_valid_id,
    parse_id,
)
from bot.card_publisher import CardPublisher
from bot.card_render import esc
from bot.github.report_button import ReportIssueFiler
from bot.investigate.service import Investigator
from bot.investigate.service import vote as vote_on_report
from bot.models import Actor, Incident, Priority, Proposal, ProposalState, utcnow
from bot.overrides import OverrideService
from bot.recurrence import mute_key
from bot.resolution import Resolver, ResolveResult, resolve_incident
from bot.rollout import RolloutPolicy
from storage.audit import AuditRepository
from storage.db import Database, Executor
from storage.incidents import IncidentRepository
from storage.kv import KeyValueRepository
from storage.proposals import ProposalRepository

log = logging.getLogger(__name__)

MUTE_DURATIONS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
NOT_ALLOWED = "⛔ Not allowed: only approvers can do this."


@dataclass(frozen=True)
class Outcome:
    """What to answer the person (plain text: a toast or a reply) and whether it changed anything."""

    answer: str
    changed: bool = False
    audited: bool = False  # its audit row is already written


def parse_duration(text: str) -> timedelta | None:
    """`30m`, `1h`, `24h`, `2d` -> timedelta; None when it is not a duration."""
    text = text.strip().lower()
    units = {"m": 60, "h": 3600, "d": 86400}
    number = text[:-1]
    # ASCII digits only: "²".isdigit() is true but int("²") fails.
    if not 1 <= len(number) <= 9 or text[-1] not in units or not (number.isascii() and number.isdigit()):
        return None
    seconds = int(number) * units[text[-1]]
    return timedelta(seconds=seconds) if 0 < seconds <= 30 * 86400 else None


def _already_resolved(incident: Incident) -> str:
    return f"Incident #{incident.id} is already resolved (by {incident.resolved_by or 'someone'})."


def _past(proposal: Proposal) -> str:
    """What already happened to a proposal, for the second press."""
    who = proposal.decided_by or "someone"
    return {
        ProposalState.APPROVED: f"Already approved by {who}; it is starting.",
        ProposalState.RUNNING: f"Already approved by {who}; it is running.",
        ProposalState.SUCCEEDED: f"Already done (approved by {who}).",
        ProposalState.FAILED: f"Already approved by {who}; it failed.",
        ProposalState.REJECTED: f"Already rejected by {who}.",
        ProposalState.EXPIRED: "This proposal expired without a decision.",
        ProposalState.SUPERSEDED: "This proposal was replaced by a newer one.",
    }.get(proposal.state, "Nothing to decide.")


def _set_aside(incident: Incident, new: Priority) -> str:
    """What a press on an overridden card did to the override, for the answer."""
    t = incident.triage
    if t.override_id is None or incident.priority is not t.priority:
        return ""
    if new is incident.priority_original:
        return f", the rules' own priority (override #{t.override_id} set aside for this incident)"
    return f" (override #{t.override_id} set aside for this incident)"


class DecisionService:
    def __init__(
        self,
        db: Database,
        cards: CardPublisher,
        *,
        approvers: set[int],
        policy: RolloutPolicy,
        tasks: BackgroundTasks,
        start_action: Callable[[int, Actor], Coroutine[Any, Any, None]] | None = None,
        clock: Callable[[], datetime] = utcnow,
        investigator: Investigator | None = None,
        overrides: OverrideService | None = None,
        report_filer: ReportIssueFiler | None = None,
        after_resolve: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        # Wakes the workers that act on a resolve (GlitchTip's PUT, the GitHub comment) once it is
        # committed, instead of leaving the job to their next look.
        self.after_resolve = after_resolve
        # Priority overrides learnt from corrections (bot/overrides.py): Apply and Remove presses.
        self.overrides = overrides or OverrideService(db, cards)
        self.cards = cards
        self.approvers = approvers
        self.policy = policy
        self.tasks = tasks
        self.start_action = start_action
        # 🔎 Investigate's work (bot/investigate/); None: presses are only recorded.
        self.investigator = investigator
        # 📝 File GitHub issue under a report (bot/github/report_button.py); None: GitHub is off.
        self.report_filer = report_filer
        # "Now" for expiry and mute times: injected so tests can move time instead of sleeping.
        self.clock = clock

    def is_approver(self, user_id: int) -> bool:
        return user_id in self.approvers

    async def refuse(self, actor: Actor, what: str, incident_id: int | None = None) -> Outcome:
        """Someone who is not an approver pressed or typed something only approvers may."""
        await self.audit_refusal(actor, what, "not an approver", incident_id=incident_id)
        return Outcome(NOT_ALLOWED, audited=True)

    async def audit_refusal(
        self, actor: Actor, what: str, reason: str, *, incident_id: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """One audit row for a refusal, saying its true reason (not an approver, wrong chat, unknown button…)."""
        await AuditRepository(self.db).record(
            what, f"refused: {reason}", actor_id=actor.id, actor_name=actor.name, incident_id=incident_id,
            detail=detail,
        )

    async def press(self, actor: Actor, press: CardPress) -> Outcome:
        """A card button was pressed."""
        if press.action in OVERRIDE_ACTIONS:  # its number is an offer's or an override's, not an incident's
            return await self._override_press(actor, press)
        action_name = f"button.{press.action}"
        if not self.is_approver(actor.id):
            return await self.refuse(actor, action_name, press.incident_id)
        stage_refusal = self.policy.press_refusal(press.action)
        if stage_refusal:
            await AuditRepository(self.db).record(
                action_name, f"refused: rollout stage {int(self.policy.stage)}", actor_id=actor.id,
                actor_name=actor.name, incident_id=press.incident_id,
            )
            return Outcome(stage_refusal, audited=True)
        handler = {
            APPROVE: self._approve, REJECT: self._reject, INVESTIGATE: self._investigate,
            PRIORITY: self._priority, MUTE: self._mute_press, RESOLVE: self._resolve_press,
            HELPFUL: self._helpful, FILE_ISSUE: self._file_issue,
        }[press.action]
        outcome = await handler(actor, press)
        await self.audit_outcome(actor, action_name, press.incident_id, outcome)
        return outcome

    async def audit_outcome(self, actor: Actor, action: str, incident_id: int | None, outcome: Outcome) -> None:
        """Every press or command leaves one audit row: refusals and no-ops included."""
        if not outcome.audited:
            await AuditRepository(self.db).record(
                action, outcome.answer[:120], actor_id=actor.id, actor_name=actor.name, incident_id=incident_id
            )

    # -- approve / reject -------------------------------------------------------------------

    async def _stale(self, tx: Executor, press: CardPress) -> tuple[Incident | None, Proposal | None, str | None]:
        """Load the incident and proposal a press refers to, or say why the card is stale."""
        incident = await IncidentRepository(tx).get(press.incident_id)
        if incident is None:
            return None, None, "Unknown incident."
        proposal_id = parse_id(press.arg)
        proposal = await ProposalRepository(tx).get(proposal_id) if proposal_id is not None else None
        if proposal is None or proposal.incident_id != incident.id:
            return incident, None, "This card is out of date."
        if proposal.state is not ProposalState.PENDING:
            if proposal.state is ProposalState.SUPERSEDED and not incident.is_open:
                return incident, proposal, _already_resolved(incident)  # closed by the resolve, not replaced
            return incident, proposal, _past(proposal)
        if proposal.expires_at <= self.clock():
            if await ProposalRepository(tx).transition(proposal.id, ProposalState.PENDING, ProposalState.EXPIRED):
                await AuditRepository(tx).record("proposal.expire", "expired", incident_id=incident.id,
                                                 proposal_id=proposal.id)
                await self.cards.publish(tx, incident.id)
            return incident, proposal, "This proposal expired without a decision."
        if not incident.is_open:
            return incident, proposal, _already_resolved(incident)
        latest = await ProposalRepository(tx).latest_for(incident.id)
        if latest is not None and latest.id != proposal.id:
            return incident, proposal, "This proposal was replaced by a newer one."
        return incident, proposal, None

    async def _approve(self, actor: Actor, press: CardPress) -> Outcome:
        audit_args: dict[str, Any] = {"actor_id": actor.id, "actor_name": actor.name, "incident_id": press.incident_id}
        start = False
        async with self.db.transaction() as tx:
            audit = AuditRepository(tx)
            # Read inside the transaction: a /killswitch on cannot slip in before the approval lands.
            if (await killswitch.read(tx)).on:
                await audit.record("proposal.approve", "refused: kill switch on", proposal_id=parse_id(press.arg),
                                   **audit_args)
                return Outcome("🛑 The kill switch is on: no action starts. Nothing changed.", audited=True)
            incident, proposal, stale = await self._stale(tx, press)
            if stale or proposal is None:
                await audit.record("proposal.approve", f"refused: {stale}", proposal_id=parse_id(press.arg), **audit_args)
                return Outcome(stale or "Nothing to decide.", audited=True)
            kind_refusal = self.policy.kind_refusal(proposal.kind)
            if kind_refusal:
                await audit.record("proposal.approve", "refused: stage", proposal_id=proposal.id, **audit_args)
                return Outcome(f"{kind_refusal[0].upper()}{kind_refusal[1:]}.", audited=True)
            repo = ProposalRepository(tx)
            if not await repo.add_approval(proposal.id, actor.id, actor.name):
                count = await repo.approval_count(proposal.id)
                await audit.record("proposal.approve", "refused: already approved by this person",
                                   proposal_id=proposal.id, **audit_args)
                return Outcome(f"You already approved ({count}/{proposal.approvals_required}).", audited=True)
            count = await repo.approval_count(proposal.id)
            if count < proposal.approvals_required:
                await audit.record(
                    "proposal.approve", f"approval {count}/{proposal.approvals_required}", proposal_id=proposal.id,
                    **audit_args,
                )
                await self.cards.publish(tx, proposal.incident_id)
                return Outcome(f"Approval recorded ({count}/{proposal.approvals_required}).", changed=True,
                               audited=True)
            if not await repo.transition(
                proposal.id, ProposalState.PENDING, ProposalState.APPROVED, by=actor.name, by_id=actor.id
            ):
                fresh = await repo.get(proposal.id)
                return Outcome(_past(fresh) if fresh else "Nothing to decide.")
            await audit.record("proposal.approve", "approved", proposal_id=proposal.id, detail={
                "summary": proposal.summary, "approvers": [n for _, n in proposal.approvals] + [actor.name],
            }, **audit_args)
            await self.cards.publish(tx, proposal.incident_id)
            start = True
        if start:
            self.start(proposal.id, actor)
        return Outcome("✅ Approved.", changed=True, audited=True)

    def start(self, proposal_id: int, actor: Actor) -> None:
        """Start an approved proposal in the background (after its approval was committed)."""
        if self.start_action is not None:
            self.tasks.spawn(self.start_action(proposal_id, actor), name=f"proposal-{proposal_id}")

    async def wait_idle(self) -> None:
        """Let actions in flight finish (used at shutdown and by tests)."""
        await self.tasks.wait_idle()

    async def _reject(self, actor: Actor, press: CardPress) -> Outcome:
        audit_args: dict[str, Any] = {"actor_id": actor.id, "actor_name": actor.name, "incident_id": press.incident_id}
        async with self.db.transaction() as tx:
            _incident, proposal, stale = await self._stale(tx, press)
            audit = AuditRepository(tx)
            if stale or proposal is None:
                await audit.record("proposal.reject", f"refused: {stale}", proposal_id=parse_id(press.arg), **audit_args)
                return Outcome(stale or "Nothing to decide.", audited=True)
            if not await ProposalRepository(tx).transition(
                proposal.id, ProposalState.PENDING, ProposalState.REJECTED, by=actor.name, by_id=actor.id
            ):
                fresh = await ProposalRepository(tx).get(proposal.id)
                return Outcome(_past(fresh) if fresh else "Nothing to decide.")
            await audit.record("proposal.reject", "rejected", proposal_id=proposal.id,
                               detail={"summary": proposal.summary}, **audit_args)
            await self.cards.publish(tx, proposal.incident_id)
        return Outcome("🚫 Rejected.", changed=True, audited=True)

    # -- investigate, priority, mute, resolve ----------------------------------------------

    async def _investigate(self, actor: Actor, press: CardPress) -> Outcome:
        if self.investigator is not None:
            answer = await self.investigator.request(actor, press.incident_id, via="button")
            return Outcome(answer.text, changed=answer.changed, audited=True)
        await AuditRepository(self.db).record(
            "incident.investigate", "requested", actor_id=actor.id, actor_name=actor.name,
            incident_id=press.incident_id,
        )
        return Outcome("🔎 Investigation requested and recorded. Automatic investigation is not available yet.", audited=True)

    async def investigate(self, actor: Actor, incident_id: int) -> Outcome:
        """`/investigate <id>`: the same as the button (approver, stage, one at a time per incident)."""
        if not self.is_approver(actor.id):
            return await self.refuse(actor, "incident.investigate", incident_id)
        stage_refusal = self.policy.press_refusal(INVESTIGATE)
        if stage_refusal:
            await self.audit_refusal(actor, "incident.investigate", f"rollout stage {int(self.policy.stage)}",
                                     incident_id=incident_id)
            return Outcome(stage_refusal, audited=True)
        if not is_valid_id(incident_id):
            return Outcome(f"No incident #{incident_id}.")
        if self.investigator is None:
            return await self._investigate(actor, CardPress(INVESTIGATE, incident_id))
        answer = await self.investigator.request(actor, incident_id, via="command")
        return Outcome(answer.text, changed=answer.changed, audited=True)

    async def _helpful(self, actor: Actor, press: CardPress) -> Outcome:
        """👍/👎 under an investigation report."""
        answer = await vote_on_report(self.db, actor, press)
        return Outcome(answer.text, changed=answer.changed, audited=True)

    async def _file_issue(self, actor: Actor, press: CardPress) -> Outcome:
        """📝 File GitHub issue under an investigation report: once per incident, like Approve."""
        if self.report_filer is None:  # a button drawn before GITHUB_TOKEN/GITHUB_REPO were removed
            return Outcome("GitHub is not configured (GITHUB_TOKEN and GITHUB_REPO): nothing changed.")
        filing = await self.report_filer.press(actor, press)
        return Outcome(filing.text, changed=filing.changed, audited=True)

    async def _priority(self, actor: Actor, press: CardPress) -> Outcome:
        try:
            new = Priority(press.arg)
        except ValueError:
            return Outcome("Unknown priority.")
        async with self.db.transaction() as tx:
            incidents = IncidentRepository(tx)
            incident = await incidents.get(press.incident_id)
            if incident is None:
                return Outcome("Unknown incident.")
            if incident.priority is new:
                return Outcome(f"Already {new.value}.")
            await incidents.set_priority(incident.id, new)
            # Measured against the triage's own priority (the rules' when an override replaced it):
            # a row with original == corrected, e.g. an override put back to the rules' P1, is a
            # human intervention but no correction of the rules (storage/metrics.py reads it so).
            await ProposalRepository(tx).record_priority_correction(
                incident.id, incident.priority_original.value, new.value, actor.id, actor.name
            )
            detail: dict[str, Any] = {"original": incident.priority_original.value, "from": incident.priority.value,
                                      "to": new.value, "human_intervention": True}
            if incident.triage.override_id is not None:  # the override this press sets aside (or restores)
                detail["override_id"] = incident.triage.override_id
            await AuditRepository(tx).record(
                "incident.priority", "corrected", actor_id=actor.id, actor_name=actor.name, incident_id=incident.id,
                detail=detail,
            )
            await self.cards.publish(tx, incident.id)
        return Outcome(f"Priority set to {new.value}{_set_aside(incident, new)}.", changed=True, audited=True)

    # -- priority overrides (any stage: they change only how the bot triages) -------------------

    async def _override_press(self, actor: Actor, press: CardPress) -> Outcome:
        if press.action == OVERRIDE_APPLY:
            return await self.apply_override(actor, press.incident_id)
        return await self.remove_override(actor, press.incident_id, via="button")

    async def apply_override(self, actor: Actor, offer_id: int) -> Outcome:
        """Apply under the digest or /stats: the offered rule + project gets its corrected priority."""
        if not self.is_approver(actor.id):
            await self.audit_refusal(actor, "override.apply", "not an approver", detail={"offer_id": offer_id})
            return Outcome(NOT_ALLOWED, audited=True)
        answer = await self.overrides.apply(actor, offer_id)
        return Outcome(answer.text, changed=answer.changed, audited=True)

    async def remove_override(self, actor: Actor, override_id: int, *, via: str) -> Outcome:
        """Remove (a button under /overrides, or `/overrides remove <id>`)."""
        if not self.is_approver(actor.id):
            await self.audit_refusal(actor, "override.remove", "not an approver",
                                     detail={"override_id": override_id, "via": via})
            return Outcome(NOT_ALLOWED, audited=True)
        answer = await self.overrides.remove(actor, override_id, via=via)
        return Outcome(answer.text, changed=answer.changed, audited=True)

    async def _mute_press(self, actor: Actor, press: CardPress) -> Outcome:
        duration = MUTE_DURATIONS.get(press.arg)
        if duration is None:
            return Outcome("Unknown duration.")
        return await self.mute(actor, press.incident_id, duration)

    async def mute(self, actor: Actor, incident_id: int, duration: timedelta) -> Outcome:
        if not self.is_approver(actor.id):
            return await self.refuse(actor, "incident.mute", incident_id)
        if not is_valid_id(incident_id):
            return Outcome(f"No incident #{incident_id}.")
        until = self.clock() + duration
        async with self.db.transaction() as tx:
            incidents = IncidentRepository(tx)
            incident = await incidents.get(incident_id)
            if incident is None:
                return Outcome(f"No incident #{incident_id}.")
            if not incident.is_open:
                return Outcome(f"Incident #{incident_id} is already resolved.")
            await incidents.mute(incident_id, until)
            # Kept by fingerprint too: a regression or a flapping monitor stays quiet until then.
            await KeyValueRepository(tx).set(mute_key(incident.fingerprint), until.isoformat())
            await AuditRepository(tx).record(
                "incident.mute", "muted", actor_id=actor.id, actor_name=actor.name, incident_id=incident_id,
                detail={"until": until.isoformat(), "human_intervention": True},
            )
            await self.cards.publish(tx, incident_id)
        return Outcome(f"🔕 Muted until {until:%Y-%m-%d %H:%M} UTC.", changed=True, audited=True)

    async def _resolve_press(self, actor: Actor, press: CardPress) -> Outcome:
        return await self.resolve(actor, press.incident_id, via="button")

    async def resolve(self, actor: Actor, incident_id: int, *, via: str = "command") -> Outcome:
        if not self.is_approver(actor.id):
            return await self.refuse(actor, "incident.resolve", incident_id)
        if not is_valid_id(incident_id):
            return Outcome(f"No incident #{incident_id}.")
        async with self.db.transaction() as tx:
            resolution = await resolve_incident(
                tx, self.cards, incident_id, Resolver(actor.name, actor.id, human=True), via=via
            )
        if resolution.result is ResolveResult.NOT_FOUND:
            return Outcome(f"No incident #{incident_id}.")
        if resolution.result is ResolveResult.ALREADY_RESOLVED:
            who = resolution.incident.resolved_by if resolution.incident else None
            return Outcome(f"Incident #{incident_id} was already resolved by {who or 'someone'}.")
        if self.after_resolve is not None:
            self.after_resolve()
        return Outcome(f"✔️ Incident #{incident_id} resolved.", changed=True, audited=True)

    async def set_killswitch(self, actor: Actor, on: bool, reason: str | None) -> Outcome:
        """Turn the kill switch on or off: the state, its audit row and the announcement in the
        alert chat commit together. The answer is the announcement's text (HTML)."""
        if not self.is_approver(actor.id):
            return await self.refuse(actor, "killswitch.on" if on else "killswitch.off")
        async with self.db.transaction() as tx:
            state = await killswitch.write(tx, on, actor.name, reason)
            await AuditRepository(tx).record(
                "killswitch.on" if on else "killswitch.off", "changed", actor_id=actor.id, actor_name=actor.name,
                detail={"reason": reason},
            )
            if on:
                text = (f"🛑 <b>Kill switch ON</b> by {esc(actor.name)}"
                        f"{': ' + esc(reason) if reason else ''}\nNo action will start until it is turned off. "
                        "Cards keep coming.")
            else:
                text = (f"✅ <b>Kill switch off</b> by {esc(actor.name)} at {esc(state.at or '')}. "
                        "Approved actions may run again.")
            await self.cards.say(tx, text, priority=0)  # announced to everyone, ahead of any card
        return Outcome(text, changed=True, audited=True)

    async def expire_due(self, now: datetime | None = None) -> int:
        """Move pending proposals past their expiry to `expired` (run by the scheduler)."""
        now = now or self.clock()
        expired = 0
        for proposal in await ProposalRepository(self.db).expired_pending(now):
            async with self.db.transaction() as tx:
                if await ProposalRepository(tx).transition(proposal.id, ProposalState.PENDING, ProposalState.EXPIRED):
                    await AuditRepository(tx).record(
                        "proposal.expire", "expired", incident_id=proposal.incident_id, proposal_id=proposal.id
                    )
                    await self.cards.publish(tx, proposal.incident_id)
                    expired += 1
        return expired
