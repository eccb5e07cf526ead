"""The proposal lifecycle table and the rollout policy, as the rest of the bot relies on them.

Every legal move in `TRANSITIONS` is persisted by `ProposalRepository.transition` (a
compare-and-set on a real SQLite file); every other move is a programming error that raises
`IllegalTransition` before anything is written. The rollout policy answers every stage question.
"""

from __future__ import annotations

import itertools

import pytest

from bot.callback_data import APPROVE, INVESTIGATE, MUTE, PRIORITY, REJECT, RESOLVE
from bot.models import ProposalState
from bot.proposals import LIVE, TRANSITIONS, IllegalTransition, ProposalKind, check_transition, is_kind
from bot.rollout import RolloutPolicy, Stage
from storage.proposals import ProposalRepository
from tests.conftest import Services

S = ProposalState
ALL_MOVES = [(a, b) for a in S for b in S]
_serial = itertools.count(1)


async def proposal_in(services: Services, state: ProposalState) -> int:
    """A proposal stored in `state` (set directly: the moves under test are the ones out of it)."""
    _, proposal_id = await services.open_incident(title=f"RuntimeError: worker {next(_serial)} crashed")
    await services.db.execute("UPDATE proposals SET state = ? WHERE id = ?", (state.value, proposal_id))
    assert proposal_id is not None
    return proposal_id


# -- the table ---------------------------------------------------------------------------------------


def test_the_table_is_the_documented_lifecycle():
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == {
        (S.PENDING, S.APPROVED), (S.PENDING, S.REJECTED), (S.PENDING, S.EXPIRED), (S.PENDING, S.SUPERSEDED),
        (S.APPROVED, S.RUNNING), (S.APPROVED, S.PENDING), (S.APPROVED, S.FAILED),
        (S.RUNNING, S.SUCCEEDED), (S.RUNNING, S.FAILED),
        (S.SUCCEEDED, S.FAILED),  # the fix did not hold
    }
    assert set(TRANSITIONS) == set(S)  # every state has a row, so a new state cannot be forgotten


def test_only_live_states_wait_for_or_act_on_a_decision():
    assert {s for s in S if not s.final} == LIVE
    finished_for_good = [s for s in S if s.final and s is not S.SUCCEEDED]
    assert all(not TRANSITIONS[s] for s in finished_for_good)


def test_every_state_is_reachable_from_pending():
    seen, frontier = {S.PENDING}, [S.PENDING]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(S)


@pytest.mark.parametrize(("from_state", "to_state"), ALL_MOVES, ids=[f"{a}-{b}" for a, b in ALL_MOVES])
def test_check_transition_allows_exactly_the_table(from_state, to_state):
    if to_state in TRANSITIONS[from_state]:
        check_transition(from_state, to_state)
    else:
        with pytest.raises(IllegalTransition, match=f"from {from_state.value} to {to_state.value}"):
            check_transition(from_state, to_state)


def test_kinds_are_the_known_strings():
    assert {k.value for k in ProposalKind} == {"acknowledge", "pattern", "github_issue"}
    assert is_kind("pattern") and is_kind("acknowledge") and not is_kind("shell") and not is_kind("")


# -- the repository persists a move only when the table allows it -----------------------------------


@pytest.mark.parametrize("from_state", list(S))
async def test_the_repository_persists_every_legal_move_and_refuses_every_other(services: Services, from_state):
    repo = ProposalRepository(services.db)
    for to_state in S:
        proposal_id = await proposal_in(services, from_state)
        if to_state in TRANSITIONS[from_state]:
            assert await repo.transition(proposal_id, from_state, to_state, by="Ann", by_id=1, result="why")
            moved = await repo.get(proposal_id)
            assert moved is not None and moved.state is to_state
        else:
            with pytest.raises(IllegalTransition):
                await repo.transition(proposal_id, from_state, to_state)
            unmoved = await repo.get(proposal_id)
            assert unmoved is not None and unmoved.state is from_state and unmoved.result is None


async def test_a_legal_move_from_a_state_the_row_is_not_in_loses_the_compare_and_set(services: Services):
    repo = ProposalRepository(services.db)
    proposal_id = await proposal_in(services, S.REJECTED)
    assert not await repo.transition(proposal_id, S.PENDING, S.APPROVED, by="Ann", by_id=1)
    proposal = await repo.get(proposal_id)
    assert proposal is not None and proposal.state is S.REJECTED and proposal.decided_by is None


async def test_moves_stamp_who_and_when(services: Services):
    repo = ProposalRepository(services.db)
    proposal_id = await proposal_in(services, S.PENDING)
    await repo.transition(proposal_id, S.PENDING, S.APPROVED, by="Ann", by_id=111)
    await repo.transition(proposal_id, S.APPROVED, S.RUNNING)
    await repo.transition(proposal_id, S.RUNNING, S.SUCCEEDED, result="acknowledged")
    row = await services.db.fetchone(
        "SELECT decided_by, decided_by_id, decided_at, started_at, finished_at, result FROM proposals WHERE id = ?",
        (proposal_id,))
    assert (row["decided_by"], row["decided_by_id"], row["result"]) == ("Ann", 111, "acknowledged")
    assert row["decided_at"] <= row["started_at"] <= row["finished_at"]


async def test_supersede_keeps_a_proposal_approved_a_moment_earlier(services: Services):
    incident_id, pending_id = await services.open_incident()
    repo = ProposalRepository(services.db)
    approved_id = await proposal_in(services, S.APPROVED)
    await services.db.execute("UPDATE proposals SET incident_id = ? WHERE id = ?", (incident_id, approved_id))
    assert await repo.supersede_pending(incident_id) == [pending_id]
    approved = await repo.get(approved_id)
    assert approved is not None and approved.state is S.APPROVED


# -- the rollout policy ------------------------------------------------------------------------------

BUTTONS = [PRIORITY, APPROVE, REJECT, MUTE, RESOLVE, INVESTIGATE]
#: stage -> the buttons a card draws
DRAWN = {
    1: {PRIORITY},
    2: {PRIORITY, APPROVE, REJECT, MUTE, RESOLVE},
    3: {PRIORITY, APPROVE, REJECT, MUTE, RESOLVE, INVESTIGATE},
    4: {PRIORITY, APPROVE, REJECT, MUTE, RESOLVE, INVESTIGATE},
}


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_the_policy_answers_every_stage_question(stage):
    policy = RolloutPolicy.from_setting(stage)
    assert {b for b in BUTTONS if policy.draws(b)} == DRAWN[stage]
    for b in BUTTONS:
        refusal = policy.press_refusal(b)
        assert refusal == (None if b in DRAWN[stage] else f"Not available at rollout stage {stage}.")
    assert policy.proposes is (stage >= 2)
    assert policy.proposes_fixes is (stage == 4)
    assert policy.allows(ProposalKind.ACKNOWLEDGE) is (stage >= 2)
    assert policy.allows("pattern") is (stage == 4)
    assert policy.kind_refusal(ProposalKind.PATTERN) == (None if stage == 4 else
                                                         f"fixes need rollout stage 4 (now {stage})")
    assert policy.kind_refusal(ProposalKind.ACKNOWLEDGE) == (None if stage >= 2 else
                                                             f"acknowledge proposals need rollout stage 2 (now {stage})")


def test_the_policy_names_its_stage():
    assert [str(RolloutPolicy(s)) for s in Stage] == [
        "1 (monitor)", "2 (triage + decisions)", "3 (investigate)", "4 (auto-fix)"]


@pytest.mark.parametrize("value", [0, 5, -1])
def test_a_stage_that_does_not_exist_is_refused(value):
    with pytest.raises(ValueError):
        RolloutPolicy.from_setting(value)
