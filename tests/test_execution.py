"""The proposal executor on its own, with a fake runner: what is checked again at the moment an
approved action starts, how it ends, and what a restart does with actions left in flight.

Real services and SQLite; the `KindRunner` is a test double (the interface a new proposal kind
implements), so the executor's own rules are tested without running any command.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.callback_data import APPROVE, CardPress
from bot.execution import ActionResult
from bot.models import Actor, Proposal, ProposalState
from bot.proposals import ProposalKind
from bot.recurrence import watch_key
from storage.db import Executor
from storage.incidents import IncidentRepository
from storage.kv import KeyValueRepository
from storage.proposals import ProposalRepository
from tests.conftest import ANN, APPROVER_2, BOB, Services, card_buttons


@dataclass
class FakeRunner:
    """A KindRunner that says what the test tells it to."""

    refuse: str | None = None
    result: ActionResult = field(default_factory=lambda: ActionResult(True, "done by the fake"))
    crash: Exception | None = None
    gate: asyncio.Event | None = None  # run() waits for it: the action is "in flight"
    runs: list[int] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def start_check(self, tx: Executor, proposal: Proposal) -> str | None:
        return self.refuse

    async def run(self, proposal: Proposal) -> ActionResult:
        self.runs.append(proposal.id)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.crash is not None:
            raise self.crash
        return self.result


async def rig(make_services, runner: FakeRunner, stage: int = 2, **kwargs) -> Services:
    """Services whose presses approve but start nothing: the test starts the executor itself."""
    return await make_services(stage, runners={ProposalKind.ACKNOWLEDGE: runner}, start_actions=False, **kwargs)


async def approved(services: Services, approver: Actor = ANN, **incident) -> tuple[int, int]:
    """An incident whose proposal was just approved by a press (its action not started yet)."""
    incident_id, proposal_id = await services.open_incident(**incident)
    assert proposal_id is not None
    assert (await services.decisions.press(approver, CardPress(APPROVE, incident_id, str(proposal_id)))).changed
    assert (await services.proposal(proposal_id)).state is ProposalState.APPROVED
    return incident_id, proposal_id


async def start_outcomes(services: Services) -> list[str]:
    return [e.outcome for e in await services.audit("action.start")]


# -- checked again at the moment it starts ------------------------------------------------------------


async def test_a_veto_at_start_returns_it_to_pending_with_the_reason_on_the_card(make_services):
    runner = FakeRunner(refuse="cooldown: 5 min left")
    services = await rig(make_services, runner)
    incident_id, proposal_id = await approved(services)
    await services.executor.execute(proposal_id, ANN)
    proposal = await services.proposal(proposal_id)
    assert proposal.state is ProposalState.PENDING and proposal.approvals == []  # needs a fresh approval
    assert proposal.result == "did not start: cooldown: 5 min left"
    card = await services.card(incident_id)
    assert "The last approval did not start: cooldown: 5 min left" in card["text"] and "0/1 approvals" in card["text"]
    assert any(data.startswith("ap:") for data in card_buttons(card))
    assert runner.runs == []
    assert await start_outcomes(services) == ["refused: cooldown: 5 min left"]
    # Once the reason is gone, a human approves again and it runs.
    runner.refuse = None
    await services.decisions.press(BOB, CardPress(APPROVE, incident_id, str(proposal_id)))
    await services.executor.execute(proposal_id, BOB)
    assert runner.runs == [proposal_id]
    assert (await services.proposal(proposal_id)).state is ProposalState.SUCCEEDED


async def test_the_kill_switch_is_read_when_the_action_starts_not_only_at_the_press(make_services):
    runner = FakeRunner()
    services = await rig(make_services, runner)
    _, proposal_id = await approved(services)  # approved while the switch was off
    await services.decisions.set_killswitch(BOB, True, "incident call")
    await services.executor.execute(proposal_id, ANN)
    assert runner.runs == []
    assert (await services.proposal(proposal_id)).result == "did not start: the kill switch is on"
    assert await start_outcomes(services) == ["refused: the kill switch is on"]


async def test_an_approver_removed_before_the_start_cannot_start_it(make_services):
    runner = FakeRunner()
    services = await rig(make_services, runner, executor_approvers={APPROVER_2})  # Ann was removed at a restart
    _, proposal_id = await approved(services, ANN)
    await services.executor.execute(proposal_id, ANN)
    assert runner.runs == []
    assert await start_outcomes(services) == ["refused: Ann is no longer an approver"]


async def test_the_bot_itself_is_not_an_approver_to_remove(make_services):
    runner = FakeRunner()
    services = await rig(make_services, runner, executor_approvers=set())
    _, proposal_id = await approved(services, ANN)
    await services.executor.execute(proposal_id, Actor(-1, "auto-fix (AUTO_FIX=on)"))
    assert runner.runs == [proposal_id]


async def test_the_rollout_stage_is_read_when_the_action_starts(make_services):
    runner = FakeRunner()
    services = await make_services(2, runners={ProposalKind.PATTERN: runner}, start_actions=False)
    # A fix approved under stage 4, started after a restart at stage 2.
    _, proposal_id = await services.open_incident(kind=ProposalKind.PATTERN)
    assert proposal_id is not None
    await ProposalRepository(services.db).transition(proposal_id, ProposalState.PENDING, ProposalState.APPROVED,
                                                     by="Ann", by_id=ANN.id)
    await services.executor.execute(proposal_id, ANN)
    assert runner.runs == []
    assert await start_outcomes(services) == ["refused: fixes need rollout stage 4 (now 2)"]


async def test_a_kind_with_no_runner_does_not_start(make_services):
    services = await make_services(4, runners={}, start_actions=False)
    _, proposal_id = await approved(services)
    await services.executor.execute(proposal_id, ANN)
    assert await start_outcomes(services) == ["refused: no runner for acknowledge proposals is configured"]
    assert (await services.proposal(proposal_id)).state is ProposalState.PENDING


# -- how it ends ---------------------------------------------------------------------------------------


async def test_while_it_runs_the_card_says_so_and_then_shows_the_result(make_services):
    runner = FakeRunner(gate=asyncio.Event())
    services = await rig(make_services, runner)
    incident_id, proposal_id = await approved(services)
    started = asyncio.create_task(services.executor.execute(proposal_id, ANN))
    await runner.entered.wait()
    assert (await services.proposal(proposal_id)).state is ProposalState.RUNNING
    assert "Running: acknowledge" in (await services.card(incident_id))["text"]
    assert runner.gate is not None
    runner.gate.set()
    await started
    assert "Done: acknowledge" in (await services.card(incident_id))["text"]
    assert [e.outcome for e in await services.audit("action.finish")] == ["succeeded"]


async def test_a_runner_that_crashes_ends_failed_not_running_and_the_error_is_redacted(make_services):
    runner = FakeRunner(crash=RuntimeError("auth failed for token=hunter2"))
    services = await rig(make_services, runner, redact=lambda text: text.replace("hunter2", "[REDACTED]"))
    incident_id, proposal_id = await approved(services)
    await services.executor.execute(proposal_id, ANN)
    proposal = await services.proposal(proposal_id)
    assert proposal.state is ProposalState.FAILED
    assert proposal.result == "crashed: RuntimeError: auth failed for token=[REDACTED]"
    assert "Failed: acknowledge" in (await services.card(incident_id))["text"]
    [finish] = await services.audit("action.finish")
    assert finish.outcome == "failed" and "hunter2" not in str(finish.detail)


async def test_a_failed_action_with_output_replies_under_the_card(make_services):
    runner = FakeRunner(result=ActionResult(False, "exit 1", output="<stderr> no such unit"))
    services = await rig(make_services, runner)
    incident_id, proposal_id = await approved(services)
    await IncidentRepository(services.db).set_card(incident_id, services.cards.chat_id, 4711)
    await services.executor.execute(proposal_id, ANN)
    assert (await services.proposal(proposal_id)).state is ProposalState.FAILED
    [reply] = [i for i in await services.queued() if i.incident_id is None]
    assert reply.reply_to == 4711
    assert reply.payload["text"] == f"❌ #{incident_id} exit 1\n<pre>&lt;stderr&gt; no such unit</pre>"


async def test_a_success_with_a_recurrence_window_starts_watching_for_the_error(make_services):
    runner = FakeRunner(result=ActionResult(True, "restarted", recurrence_window=900))
    services = await rig(make_services, runner)
    incident_id, proposal_id = await approved(services)
    await services.executor.execute(proposal_id, ANN)
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None
    watch = await KeyValueRepository(services.db).get(watch_key(incident.fingerprint))
    assert watch is not None and watch["proposal_id"] == proposal_id


async def test_an_action_starts_at_most_once(make_services):
    runner = FakeRunner()
    services = await rig(make_services, runner)
    _, proposal_id = await approved(services)
    await asyncio.gather(*(services.executor.execute(proposal_id, ANN) for _ in range(3)))
    await services.executor.execute(proposal_id, ANN)  # already done: nothing
    assert runner.runs == [proposal_id]
    assert await start_outcomes(services) == ["running"]


async def test_a_proposal_that_is_not_approved_is_never_started(make_services):
    runner = FakeRunner()
    services = await rig(make_services, runner)
    _, proposal_id = await services.open_incident()
    assert proposal_id is not None
    await services.executor.execute(proposal_id, ANN)  # still pending
    await services.executor.execute(9999, ANN)  # no such proposal
    assert runner.runs == [] and await services.audit("action.start") == []


# -- a restart after a crash ---------------------------------------------------------------------------


async def test_actions_left_in_flight_by_a_dead_process_are_failed_and_never_rerun(make_services):
    runner = FakeRunner()
    services = await rig(make_services, runner)
    running_incident, running_id = await approved(services)
    approved_incident, approved_id = await approved(services, title="KeyError: 'slots'")
    await ProposalRepository(services.db).transition(running_id, ProposalState.APPROVED, ProposalState.RUNNING)
    assert await services.executor.recover_interrupted() == 2
    assert await services.executor.recover_interrupted() == 0  # reported once
    for proposal_id, incident_id in ((running_id, running_incident), (approved_id, approved_incident)):
        proposal = await services.proposal(proposal_id)
        assert proposal.state is ProposalState.FAILED and proposal.result is not None
        assert proposal.result.startswith("failed (interrupted)")
        assert "failed (interrupted)" in (await services.card(incident_id))["text"]
    notices = await services.messages()
    assert any(f"#{running_incident}:" in n and "was running when the bot stopped" in n for n in notices)
    assert any(f"#{approved_incident}:" in n and "was approved when the bot stopped" in n for n in notices)
    assert all("not re-run" in n for n in notices) and len(notices) == 2
    interrupted = await services.audit("action.interrupted")
    assert sorted(e.detail["was"] for e in interrupted) == ["approved", "running"]
    await services.executor.execute(approved_id, ANN)
    assert runner.runs == [] and await services.audit("action.start") == []
