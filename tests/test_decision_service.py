"""The decision service on its own: every card press, resolve, mute and the kill switch.

Real services on a real SQLite file, no HTTP: a press is a `CardPress` from an `Actor`, "now" is
an injected clock the test moves, and what Telegram would get is read from the outbox.
(tests/test_e2e_decisions.py proves the same presses arrive over the real Bot API protocol.)
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta

import pytest

from bot import killswitch
from bot.callback_data import APPROVE, INVESTIGATE, MUTE, PRIORITY, REJECT, RESOLVE, CardPress
from bot.decisions import NOT_ALLOWED
from bot.models import Priority, ProposalState
from bot.proposals import ProposalKind
from bot.recurrence import mute_key
from storage.incidents import IncidentRepository
from storage.kv import KeyValueRepository
from storage.outbox import OutboxRepository
from storage.proposals import ProposalRepository
from tests.conftest import ANN, APPROVER, BOB, MALLORY, STRANGER, Services, card_buttons


def approve(incident_id: int, proposal_id: int | None) -> CardPress:
    return CardPress(APPROVE, incident_id, str(proposal_id))


def reject(incident_id: int, proposal_id: int | None) -> CardPress:
    return CardPress(REJECT, incident_id, str(proposal_id))


def has_approve(card: dict) -> bool:
    return any(data.startswith(f"{APPROVE}:") for data in card_buttons(card))


# -- approve and reject ------------------------------------------------------------------------------


async def test_approve_runs_the_action_once_and_the_card_says_who(services: Services):
    incident_id, proposal_id = await services.open_incident()
    assert "0/1 approvals" in (await services.card(incident_id))["text"]
    outcome = await services.decisions.press(ANN, approve(incident_id, proposal_id))
    assert outcome.answer == "✅ Approved." and outcome.changed
    await services.decisions.wait_idle()
    proposal = await services.proposal(proposal_id)
    assert proposal.state is ProposalState.SUCCEEDED and proposal.decided_by == "Ann"
    card = await services.card(incident_id)
    assert "Done: acknowledge" in card["text"] and "approved by Ann" in card["text"]
    assert not has_approve(card) and not any(d.startswith(f"{REJECT}:") for d in card_buttons(card))
    [approved] = await services.audit("proposal.approve")
    assert (approved.outcome, approved.actor_id, approved.actor_name) == ("approved", APPROVER, "Ann")
    assert [e.outcome for e in await services.audit("action.start")] == ["running"]
    assert [e.outcome for e in await services.audit("action.finish")] == ["succeeded"]


async def test_a_double_press_is_told_what_happened_and_runs_nothing_more(services: Services):
    incident_id, proposal_id = await services.open_incident()
    await services.decisions.press(ANN, approve(incident_id, proposal_id))
    await services.decisions.wait_idle()
    again = await services.decisions.press(ANN, approve(incident_id, proposal_id))
    assert again.answer == "Already done (approved by Ann)." and not again.changed
    await services.decisions.wait_idle()
    outcomes = [e.outcome for e in await services.audit("proposal.approve")]
    assert outcomes == ["approved", "refused: Already done (approved by Ann)."]  # the second press is audited too
    assert len(await services.audit("action.start")) == 1


async def test_two_approvers_pressing_at_the_same_moment_start_it_once(services: Services):
    incident_id, proposal_id = await services.open_incident()
    first, second = await asyncio.gather(
        services.decisions.press(ANN, approve(incident_id, proposal_id)),
        services.decisions.press(BOB, approve(incident_id, proposal_id)),
    )
    answers = [first.answer, second.answer]
    assert answers.count("✅ Approved.") == 1, answers
    loser = next(a for a in answers if a != "✅ Approved.")
    assert loser.startswith(("Already approved by", "Already done (approved by")), loser
    await services.decisions.wait_idle()
    assert len(await services.audit("action.start")) == 1
    assert (await services.proposal(proposal_id)).state is ProposalState.SUCCEEDED


async def test_two_approvals_needed_racing_presses_reach_two_of_two_once(services: Services):
    incident_id, proposal_id = await services.open_incident(approvals=2)
    answers = sorted(o.answer for o in await asyncio.gather(
        services.decisions.press(ANN, approve(incident_id, proposal_id)),
        services.decisions.press(BOB, approve(incident_id, proposal_id)),
    ))
    assert answers == ["Approval recorded (1/2).", "✅ Approved."]
    await services.decisions.wait_idle()
    assert len(await services.audit("action.start")) == 1


async def test_one_person_approving_twice_counts_once(services: Services):
    incident_id, proposal_id = await services.open_incident(approvals=2)
    assert (await services.decisions.press(ANN, approve(incident_id, proposal_id))).answer == \
        "Approval recorded (1/2)."
    assert "1/2 approvals" in (await services.card(incident_id))["text"]
    assert (await services.decisions.press(ANN, approve(incident_id, proposal_id))).answer == \
        "You already approved (1/2)."
    assert (await services.proposal(proposal_id)).state is ProposalState.PENDING
    assert (await services.decisions.press(BOB, approve(incident_id, proposal_id))).answer == "✅ Approved."
    await services.decisions.wait_idle()
    assert (await services.proposal(proposal_id)).decided_by == "Bob"


async def test_reject_closes_the_proposal_and_a_later_approve_is_refused(services: Services):
    incident_id, proposal_id = await services.open_incident()
    outcome = await services.decisions.press(BOB, reject(incident_id, proposal_id))
    assert outcome.answer == "🚫 Rejected." and outcome.changed
    card = await services.card(incident_id)
    assert "Rejected by Bob" in card["text"] and not has_approve(card)
    late = await services.decisions.press(ANN, approve(incident_id, proposal_id))
    assert late.answer == "Already rejected by Bob."
    await services.decisions.wait_idle()
    assert (await services.proposal(proposal_id)).state is ProposalState.REJECTED
    assert [e.outcome for e in await services.audit("proposal.reject")] == ["rejected"]
    assert await services.audit("action.start") == []


# -- stale cards and expiry --------------------------------------------------------------------------


async def test_presses_on_stale_cards_change_nothing_and_say_why(services: Services):
    incident_id, old_id = await services.open_incident()
    _, other_proposal = await services.open_incident("KeyError: 'slots'")
    # A newer proposal replaced the one the old card shows.
    newer_id = await ProposalRepository(services.db).create(
        incident_id, ProposalKind.ACKNOWLEDGE, "acknowledge: newer", services.clock() + timedelta(hours=24))
    press = services.decisions.press
    assert (await press(ANN, approve(incident_id, old_id))).answer == "This proposal was replaced by a newer one."
    assert (await press(ANN, approve(incident_id, other_proposal))).answer == "This card is out of date."
    assert (await press(ANN, approve(9999, old_id))).answer == "Unknown incident."
    assert (await press(ANN, reject(incident_id, old_id))).answer == "This proposal was replaced by a newer one."
    await services.decisions.wait_idle()
    for proposal_id in (old_id, newer_id, other_proposal):
        assert (await services.proposal(proposal_id)).state is ProposalState.PENDING
    refusals = [e.outcome for e in await services.audit() if e.action.startswith("proposal.")]
    assert len(refusals) == 4 and all(o.startswith("refused: ") for o in refusals)


async def test_approve_after_the_incident_was_resolved_says_by_whom(services: Services):
    incident_id, proposal_id = await services.open_incident()
    assert (await services.decisions.resolve(BOB, incident_id, via="command")).changed
    answer = (await services.decisions.press(ANN, approve(incident_id, proposal_id))).answer
    assert answer == f"Incident #{incident_id} is already resolved (by Bob)."
    assert (await services.proposal(proposal_id)).state is ProposalState.SUPERSEDED


async def test_the_scheduler_expires_a_proposal_only_once_it_is_due(services: Services):
    incident_id, proposal_id = await services.open_incident(expires_in=timedelta(hours=24))
    assert await services.decisions.expire_due(now=services.clock.advance(hours=23, minutes=59)) == 0
    assert (await services.proposal(proposal_id)).state is ProposalState.PENDING
    assert await services.decisions.expire_due(now=services.clock.advance(minutes=2)) == 1
    assert await services.decisions.expire_due(now=services.clock()) == 0  # once
    assert (await services.proposal(proposal_id)).state is ProposalState.EXPIRED
    card = await services.card(incident_id)
    assert "Expired without a decision" in card["text"] and not has_approve(card)
    answer = (await services.decisions.press(ANN, approve(incident_id, proposal_id))).answer
    assert answer == "This proposal expired without a decision."
    [expired] = await services.audit("proposal.expire")
    assert (expired.incident_id, expired.proposal_id) == (incident_id, proposal_id)


async def test_a_press_after_the_expiry_time_expires_it_even_before_the_scheduler_runs(services: Services):
    incident_id, proposal_id = await services.open_incident(expires_in=timedelta(hours=1))
    services.clock.advance(hours=1, seconds=1)
    answer = (await services.decisions.press(ANN, approve(incident_id, proposal_id))).answer
    assert answer == "This proposal expired without a decision."
    assert (await services.proposal(proposal_id)).state is ProposalState.EXPIRED
    assert len(await services.audit("proposal.expire")) == 1
    assert await services.decisions.expire_due(now=services.clock()) == 0
    await services.decisions.wait_idle()
    assert await services.audit("action.start") == []


# -- the kill switch ---------------------------------------------------------------------------------


async def test_kill_switch_on_blocks_approve_and_off_lets_it_through(services: Services):
    incident_id, proposal_id = await services.open_incident()
    on = await services.decisions.set_killswitch(ANN, True, "deploy in progress")
    assert "Kill switch ON" in on.answer and "by Ann: deploy in progress" in on.answer
    state = await killswitch.read(services.db)
    assert (state.on, state.by, state.reason) == (True, "Ann", "deploy in progress")
    assert on.answer in await services.messages()  # announced in the alert chat
    refused = await services.decisions.press(BOB, approve(incident_id, proposal_id))
    assert refused.answer == "🛑 The kill switch is on: no action starts. Nothing changed."
    proposal = await services.proposal(proposal_id)
    assert proposal.state is ProposalState.PENDING and proposal.approvals == []
    off = await services.decisions.set_killswitch(BOB, False, None)
    assert "Kill switch off" in off.answer and "by Bob" in off.answer
    assert (await services.decisions.press(BOB, approve(incident_id, proposal_id))).answer == "✅ Approved."
    await services.decisions.wait_idle()
    outcomes = [(e.action, e.outcome) for e in await services.audit()]
    assert ("killswitch.on", "changed") in outcomes and ("killswitch.off", "changed") in outcomes
    assert outcomes.count(("proposal.approve", "refused: kill switch on")) == 1


async def test_the_kill_switch_announcement_goes_ahead_of_cards_already_waiting(services: Services):
    await services.open_incident(priority=Priority.P1)
    await services.decisions.set_killswitch(ANN, True, None)
    heads = await OutboxRepository(services.db).heads()  # what the sender takes first, per chat
    assert "Kill switch ON" in heads[0].payload["text"]


async def test_kill_switch_change_audit_and_announcement_commit_together_or_not_at_all(services: Services):
    # The announcement cannot be queued (the outbox insert fails): nothing of the change may remain.
    await services.db.execute(
        "CREATE TRIGGER outbox_down BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'outbox unavailable'); END")
    with pytest.raises(sqlite3.IntegrityError, match="outbox unavailable"):
        await services.decisions.set_killswitch(ANN, True, "deploy")
    assert not (await killswitch.read(services.db)).on
    assert [e for e in await services.audit() if e.action.startswith("killswitch")] == []
    assert await services.queued() == []
    # The shared connection is not left inside the failed transaction: the next change works.
    await services.db.execute("DROP TRIGGER outbox_down")
    assert (await services.decisions.set_killswitch(ANN, True, "deploy")).changed
    assert (await killswitch.read(services.db)).on
    assert len(await services.audit("killswitch.on")) == 1


async def test_no_action_starts_after_a_kill_switch_that_raced_the_approval(services: Services):
    incident_id, proposal_id = await services.open_incident()
    await asyncio.gather(
        services.decisions.press(ANN, approve(incident_id, proposal_id)),
        services.decisions.set_killswitch(BOB, True, "stop everything"),
    )
    await services.decisions.wait_idle()
    entries = await services.audit()
    switched_at = next(e.id for e in entries if e.action == "killswitch.on")
    assert all(e.id < switched_at for e in entries if e.action == "action.start" and e.outcome == "running")
    if any(e.action == "action.start" and e.outcome == "refused: the kill switch is on" for e in entries):
        assert (await services.proposal(proposal_id)).state is ProposalState.PENDING  # approvable again later


# -- priority, mute, investigate, resolve ------------------------------------------------------------


async def test_priority_correction_is_recorded_with_the_original(services: Services):
    incident_id, _ = await services.open_incident(priority=Priority.P2)
    outcome = await services.decisions.press(ANN, CardPress(PRIORITY, incident_id, "P0"))
    assert outcome.answer == "Priority set to P0." and outcome.changed
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None and (incident.priority, incident.priority_original) == (Priority.P0, Priority.P2)
    assert "<b>P0</b>" in (await services.card(incident_id))["text"]
    assert "(triaged P2)" in (await services.card(incident_id))["text"]
    row = await services.db.fetchone("SELECT original, corrected, user_id, user_name FROM priority_corrections")
    assert tuple(row) == ("P2", "P0", APPROVER, "Ann")
    [entry] = await services.audit("incident.priority")
    assert entry.detail == {"original": "P2", "from": "P2", "to": "P0", "human_intervention": True}


async def test_a_press_that_changes_nothing_is_still_audited(services: Services):
    incident_id, _ = await services.open_incident(priority=Priority.P2)
    same = await services.decisions.press(ANN, CardPress(PRIORITY, incident_id, "P2"))
    assert same.answer == "Already P2." and not same.changed
    unknown = await services.decisions.press(ANN, CardPress(PRIORITY, incident_id, "P9"))
    assert unknown.answer == "Unknown priority."
    assert [(e.action, e.outcome) for e in await services.audit()] == [
        ("button.pr", "Already P2."), ("button.pr", "Unknown priority.")]
    assert await services.db.fetchone("SELECT * FROM priority_corrections") is None


async def test_mute_lasts_from_now_and_carries_to_the_fingerprint(services: Services):
    incident_id, _ = await services.open_incident()
    until = services.clock() + timedelta(hours=1)
    outcome = await services.decisions.press(ANN, CardPress(MUTE, incident_id, "1h"))
    assert outcome.answer == f"🔕 Muted until {until:%Y-%m-%d %H:%M} UTC." and outcome.changed
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None and incident.muted_until is not None
    assert abs(incident.muted_until - until) < timedelta(milliseconds=1)  # stored to the millisecond
    assert await KeyValueRepository(services.db).get(mute_key(incident.fingerprint)) == until.isoformat()
    card = await services.card(incident_id)
    assert "Muted until" in card["text"] and card["silent"] is True
    [entry] = await services.audit("incident.mute")
    assert entry.detail == {"until": until.isoformat(), "human_intervention": True}


async def test_mute_refuses_what_it_cannot_mute(services: Services):
    incident_id, _ = await services.open_incident()
    assert (await services.decisions.press(ANN, CardPress(MUTE, incident_id, "7h"))).answer == "Unknown duration."
    assert (await services.decisions.mute(ANN, 4242, timedelta(hours=1))).answer == "No incident #4242."
    assert (await services.decisions.mute(ANN, 0, timedelta(hours=1))).answer == "No incident #0."
    await services.decisions.resolve(ANN, incident_id)
    assert (await services.decisions.mute(ANN, incident_id, timedelta(hours=1))).answer == \
        f"Incident #{incident_id} is already resolved."
    assert await services.audit("incident.mute") == []


async def test_resolve_closes_the_incident_and_its_proposal_once(services: Services):
    incident_id, proposal_id = await services.open_incident()
    outcome = await services.decisions.press(ANN, CardPress(RESOLVE, incident_id))
    assert outcome.answer == f"✔️ Incident #{incident_id} resolved." and outcome.changed
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None and not incident.is_open and incident.resolved_by == "Ann"
    assert (await services.proposal(proposal_id)).state is ProposalState.SUPERSEDED
    card = await services.card(incident_id)
    assert "Resolved by Ann" in card["text"] and card["buttons"] == []
    again = await services.decisions.resolve(BOB, incident_id)
    assert again.answer == f"Incident #{incident_id} was already resolved by Ann." and not again.changed
    [entry] = await services.audit("incident.resolve")
    assert entry.actor_name == "Ann" and entry.detail["via"] == "button"
    assert entry.detail["superseded_proposals"] == [proposal_id] and entry.detail["human_intervention"] is True
    assert (await services.decisions.resolve(ANN, 4242)).answer == "No incident #4242."
    assert (await services.decisions.resolve(ANN, 0)).answer == "No incident #0."


async def test_investigate_at_stage_3_is_recorded(make_services):
    services = await make_services(stage=3)
    incident_id, _ = await services.open_incident()
    outcome = await services.decisions.press(ANN, CardPress(INVESTIGATE, incident_id))
    assert "Investigation requested and recorded" in outcome.answer
    [entry] = await services.audit("incident.investigate")
    assert (entry.actor_id, entry.incident_id, entry.outcome) == (APPROVER, incident_id, "requested")


# -- refusals: who may press, and what the rollout stage allows --------------------------------------

REFUSED_BY_NON_APPROVERS = {
    "approve": lambda s, i, p: s.decisions.press(MALLORY, approve(i, p)),
    "reject": lambda s, i, p: s.decisions.press(MALLORY, reject(i, p)),
    "priority": lambda s, i, p: s.decisions.press(MALLORY, CardPress(PRIORITY, i, "P0")),
    "mute button": lambda s, i, p: s.decisions.press(MALLORY, CardPress(MUTE, i, "24h")),
    "mute": lambda s, i, p: s.decisions.mute(MALLORY, i, timedelta(hours=1)),
    "resolve": lambda s, i, p: s.decisions.resolve(MALLORY, i),
    "kill switch": lambda s, i, p: s.decisions.set_killswitch(MALLORY, True, "lol"),
}


@pytest.mark.parametrize("what", REFUSED_BY_NON_APPROVERS)
async def test_a_non_approver_changes_nothing_and_is_audited(services: Services, what):
    incident_id, proposal_id = await services.open_incident(priority=Priority.P2)
    queued_before = await services.queued()
    outcome = await REFUSED_BY_NON_APPROVERS[what](services, incident_id, proposal_id)
    assert outcome.answer == NOT_ALLOWED and not outcome.changed
    await services.decisions.wait_idle()
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None and incident.is_open and incident.priority is Priority.P2
    assert incident.muted_until is None
    assert (await services.proposal(proposal_id)).state is ProposalState.PENDING
    assert not (await killswitch.read(services.db)).on
    assert await services.queued() == queued_before  # no card edit, no announcement
    [refusal] = await services.audit()
    assert (refusal.actor_id, refusal.actor_name, refusal.outcome) == (STRANGER, "Mallory", "refused: not an approver")


@pytest.mark.parametrize(("stage", "button"), [
    (1, APPROVE), (1, REJECT), (1, MUTE), (1, RESOLVE), (1, INVESTIGATE), (2, INVESTIGATE),
])
async def test_a_press_the_stage_does_not_draw_is_refused(make_services, stage, button):
    services = await make_services(stage=stage)
    incident_id, _ = await services.open_incident(kind=None)  # stage 1 proposes nothing; the press is forged
    arg = {APPROVE: "1", REJECT: "1", MUTE: "1h"}.get(button, "")
    outcome = await services.decisions.press(ANN, CardPress(button, incident_id, arg))
    assert outcome.answer == f"Not available at rollout stage {stage}."
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None and incident.is_open and incident.muted_until is None
    [refusal] = await services.audit()
    assert (refusal.action, refusal.outcome) == (f"button.{button}", f"refused: rollout stage {stage}")


async def test_stage_1_still_takes_a_priority_correction(make_services):
    services = await make_services(stage=1)
    incident_id, _ = await services.open_incident(kind=None)
    assert (await services.decisions.press(ANN, CardPress(PRIORITY, incident_id, "P1"))).answer == \
        "Priority set to P1."


@pytest.mark.parametrize("stage", [2, 3])
async def test_a_fix_proposal_cannot_be_approved_below_stage_4(make_services, stage):
    services = await make_services(stage=stage)
    incident_id, proposal_id = await services.open_incident(kind=ProposalKind.PATTERN)
    outcome = await services.decisions.press(ANN, approve(incident_id, proposal_id))
    assert outcome.answer == f"Fixes need rollout stage 4 (now {stage})."
    await services.decisions.wait_idle()
    proposal = await services.proposal(proposal_id)
    assert proposal.state is ProposalState.PENDING and proposal.approvals == []
    assert [e.outcome for e in await services.audit("proposal.approve")] == ["refused: stage"]


async def test_a_committed_resolve_wakes_the_workers_that_act_on_it(services: Services):
    """GlitchTip's PUT and the GitHub comment are queued by the resolve: their workers are woken once
    it is committed (not at their next look, seconds later); a resolve that changed nothing wakes none."""
    woken: list[bool] = []

    def wake() -> None:
        # Woken only after the commit: a worker woken earlier would find no job yet.
        woken.append(not services.db.conn.in_transaction)

    services.decisions.after_resolve = wake
    incident_id, _ = await services.open_incident()
    await services.decisions.resolve(ANN, incident_id)
    assert woken == [True]
    await services.decisions.resolve(ANN, incident_id)  # already resolved
    await services.decisions.resolve(ANN, 4242)  # unknown
    assert woken == [True]
