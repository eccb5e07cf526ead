"""Runs an approved proposal: checks again at the moment it starts, then records the outcome.

The kill switch, the approver's right and the rollout stage are read again here, not only
when the button was drawn. `approved -> running -> succeeded | failed` are compare-and-sets,
so an action starts at most once. An action that was running when the process died is
reported as interrupted at the next start and never re-run.

Each proposal kind has one `KindRunner` (acknowledge here, allow-listed fixes in
bot/fix_action.py): a new kind is a new runner registered in bot/app.py, nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot import killswitch
from bot.card_publisher import CardPublisher
from bot.card_render import esc
from bot.models import Actor, Proposal, ProposalState
from bot.proposals import ProposalKind
from bot.recurrence import watch_for_recurrence
from bot.rollout import RolloutPolicy
from storage.audit import AuditRepository
from storage.db import Database, Executor
from storage.incidents import IncidentRepository
from storage.proposals import ProposalRepository

log = logging.getLogger(__name__)


@dataclass
class ActionResult:
    ok: bool
    summary: str  # one line for the card
    output: str = ""  # longer text for the reply (already redacted)
    detail: dict[str, Any] = field(default_factory=dict)  # for the audit row: argv, exit codes, durations
    recurrence_window: float | None = None  # seconds to watch for the error coming back after a success


class KindRunner(Protocol):
    """What Approve does for one kind of proposal."""

    async def start_check(self, tx: Executor, proposal: Proposal) -> str | None:
        """Why it may not start now (rate limits, where it runs…), or None; inside the start transaction."""
        ...

    async def run(self, proposal: Proposal) -> ActionResult: ...


class AcknowledgeRunner:
    """ "acknowledge: I own this incident": the approval itself is the whole action."""

    async def start_check(self, tx: Executor, proposal: Proposal) -> str | None:
        return None

    async def run(self, proposal: Proposal) -> ActionResult:
        return ActionResult(True, f"acknowledged by {proposal.decided_by}")


class ProposalExecutor:
    def __init__(
        self,
        db: Database,
        cards: CardPublisher,
        *,
        approvers: set[int],
        policy: RolloutPolicy,
        runners: Mapping[ProposalKind, KindRunner],
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.db = db
        self.cards = cards
        self.approvers = approvers
        self.policy = policy
        self.runners = dict(runners)
        self.redact = redact

    async def _veto(self, tx: Executor, proposal: Proposal, approver: Actor) -> str | None:
        """Why this action may not start now. Runs inside the transaction that starts it, so the
        kill switch or another run cannot slip in between the check and the start."""
        if (await killswitch.read(tx)).on:
            return "the kill switch is on"
        if approver.id >= 0 and approver.id not in self.approvers:
            return f"{approver.name} is no longer an approver"
        refusal = self.policy.kind_refusal(proposal.kind)
        if refusal:
            return refusal
        runner = self.runners.get(ProposalKind(proposal.kind))
        if runner is None:
            return f"no runner for {proposal.kind} proposals is configured"
        return await runner.start_check(tx, proposal)

    async def execute(self, proposal_id: int, approver: Actor) -> None:
        proposal = await ProposalRepository(self.db).get(proposal_id)
        if proposal is None or proposal.state is not ProposalState.APPROVED:
            return
        audit_args: dict[str, Any] = {"actor_id": approver.id, "actor_name": approver.name,
                      "incident_id": proposal.incident_id, "proposal_id": proposal.id}
        async with self.db.transaction() as tx:
            repo = ProposalRepository(tx)
            veto = await self._veto(tx, proposal, approver)
            if veto:
                # Back to pending with the reason on the card: a human may approve again later.
                if await repo.transition(proposal.id, ProposalState.APPROVED, ProposalState.PENDING,
                                         result=f"did not start: {veto}"):
                    await repo.clear_approvals(proposal.id)
                    await AuditRepository(tx).record("action.start", f"refused: {veto}", **audit_args)
                    await self.cards.publish(tx, proposal.incident_id)
                return
            if not await repo.transition(proposal.id, ProposalState.APPROVED, ProposalState.RUNNING):
                return
            await AuditRepository(tx).record("action.start", "running", detail={"summary": proposal.summary},
                                             **audit_args)
            await self.cards.publish(tx, proposal.incident_id)
        try:
            result = await self._run(proposal)
        except Exception as exc:  # a bug in a runner must still end the proposal, not leave it running
            log.exception("action for proposal #%s crashed", proposal.id)
            result = ActionResult(False, self.redact(f"crashed: {type(exc).__name__}: {exc}"))
        final = ProposalState.SUCCEEDED if result.ok else ProposalState.FAILED
        async with self.db.transaction() as tx:
            await ProposalRepository(tx).transition(proposal.id, ProposalState.RUNNING, final, result=result.summary)
            if result.ok and result.recurrence_window:
                incident = await IncidentRepository(tx).get(proposal.incident_id)
                if incident is not None:  # set with the success, so a repeat cannot slip in between
                    await watch_for_recurrence(tx, incident.fingerprint, proposal.id, result.recurrence_window)
            await AuditRepository(tx).record(
                "action.finish", final.value, detail={"summary": proposal.summary, "result": result.summary,
                                                      **result.detail}, **audit_args)
            await self.cards.publish(tx, proposal.incident_id)
            if result.output:
                incident = await IncidentRepository(tx).get(proposal.incident_id)
                await self.cards.say(
                    tx, f"{'✅' if result.ok else '❌'} #{proposal.incident_id} {esc(result.summary, 300)}\n"
                        f"<pre>{esc(result.output, 3000)}</pre>",
                    reply_to=incident.card_message_id if incident else None,
                )

    async def _run(self, proposal: Proposal) -> ActionResult:
        runner = self.runners.get(ProposalKind(proposal.kind))
        if runner is None:
            return ActionResult(False, f"no runner for {proposal.kind} proposals")
        return await runner.run(proposal)

    async def recover_interrupted(self) -> int:
        """At start: an action left approved or running by a dead process is failed, never re-run."""
        count = 0
        for state in (ProposalState.RUNNING, ProposalState.APPROVED):
            for proposal in await ProposalRepository(self.db).in_state(state):
                async with self.db.transaction() as tx:
                    if not await ProposalRepository(tx).transition(
                        proposal.id, state, ProposalState.FAILED, result="failed (interrupted): the bot stopped "
                        "while this was in progress; it was not re-run"
                    ):
                        continue
                    await AuditRepository(tx).record(
                        "action.interrupted", "failed (interrupted)", incident_id=proposal.incident_id,
                        proposal_id=proposal.id, detail={"was": state.value, "summary": proposal.summary},
                    )
                    await self.cards.publish(tx, proposal.incident_id)
                    await self.cards.say(
                        tx, f"⚠️ #{proposal.incident_id}: <b>{esc(proposal.summary, 200)}</b> was {state.value} when "
                            "the bot stopped. It is marked <b>failed (interrupted)</b> and was not re-run; "
                            "check the system by hand.",
                    )
                    count += 1
        return count
