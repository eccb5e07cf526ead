"""Did the fix hold? `check_recurrence` on its own, on a real SQLite file.

After a fix succeeds, the same error inside the pattern's recurrence window marks the fix
failed (a false positive), says so in the chat, and pauses automatic fixes for that error until
a human resolves the incident. (tests/test_e2e_fixes.py runs the same story through the whole bot.)
"""

from __future__ import annotations

from datetime import timedelta

from bot.models import ProposalState
from bot.proposals import ProposalKind
from bot.recurrence import blocked_key, check_recurrence, muted_until, watch_for_recurrence, watch_key
from storage.incidents import IncidentRepository
from storage.kv import KeyValueRepository
from storage.proposals import ProposalRepository
from tests.conftest import ANN, Services


async def fixed(services: Services, window_s: float) -> tuple[int, int, str]:
    """An incident whose fix just succeeded, watched for `window_s` seconds (negative: already over)."""
    incident_id, proposal_id = await services.open_incident(kind=ProposalKind.PATTERN)
    assert proposal_id is not None
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None
    async with services.db.transaction() as tx:
        repo = ProposalRepository(tx)
        for before, after in ((ProposalState.PENDING, ProposalState.APPROVED),
                              (ProposalState.APPROVED, ProposalState.RUNNING),
                              (ProposalState.RUNNING, ProposalState.SUCCEEDED)):
            assert await repo.transition(proposal_id, before, after, by="Ann", by_id=ANN.id)
        await watch_for_recurrence(tx, incident.fingerprint, proposal_id, window_s)
    return incident_id, proposal_id, incident.fingerprint


async def repeat(services: Services, fingerprint: str) -> None:
    """What the pipeline does when an alert with this fingerprint comes in."""
    async with services.db.transaction() as tx:
        await check_recurrence(tx, fingerprint, services.cards)


async def test_a_repeat_inside_the_window_marks_the_fix_failed_and_pauses_fixes(services: Services):
    incident_id, proposal_id, fingerprint = await fixed(services, window_s=900)
    await repeat(services, fingerprint)
    proposal = await services.proposal(proposal_id)
    assert proposal.state is ProposalState.FAILED and proposal.result is not None
    assert "the fix did not hold" in proposal.result
    kv = KeyValueRepository(services.db)
    assert (await kv.get(blocked_key(fingerprint)))["proposal_id"] == proposal_id
    assert await kv.get(watch_key(fingerprint)) is None  # one verdict per fix
    assert "Failed: pattern" in (await services.card(incident_id))["text"]
    [notice] = await services.messages()
    assert f"#{incident_id}: the fix <b>touch_fix</b> did not hold" in notice and "paused" in notice
    [entry] = await services.audit("fix.recurred")
    assert (entry.outcome, entry.proposal_id, entry.detail) == ("failed (false positive)", proposal_id,
                                                                {"pattern": "touch_fix"})
    await repeat(services, fingerprint)  # a second repeat: nothing more
    assert len(await services.messages()) == 1 and len(await services.audit("fix.recurred")) == 1


async def test_a_repeat_after_the_window_leaves_the_fix_succeeded(services: Services):
    _, proposal_id, fingerprint = await fixed(services, window_s=-1)
    await repeat(services, fingerprint)
    assert (await services.proposal(proposal_id)).state is ProposalState.SUCCEEDED
    kv = KeyValueRepository(services.db)
    assert await kv.get(blocked_key(fingerprint)) is None and await kv.get(watch_key(fingerprint)) is None
    assert await services.audit("fix.recurred") == [] and await services.messages() == []


async def test_an_unwatched_error_and_another_fingerprint_are_left_alone(services: Services):
    _, proposal_id, fingerprint = await fixed(services, window_s=900)
    await repeat(services, "title:something else")
    assert (await services.proposal(proposal_id)).state is ProposalState.SUCCEEDED
    assert await KeyValueRepository(services.db).get(watch_key(fingerprint)) is not None


async def test_a_human_resolve_lifts_the_pause_but_not_a_running_watch(services: Services):
    incident_id, _, fingerprint = await fixed(services, window_s=900)
    kv = KeyValueRepository(services.db)
    await services.decisions.resolve(ANN, incident_id)
    assert await kv.get(watch_key(fingerprint)) is not None  # "fixed, resolved, back in 5 min" still counts
    await repeat(services, fingerprint)
    assert await kv.get(blocked_key(fingerprint)) is not None
    other_incident, _ = await services.open_incident("ValueError: another error")
    await services.decisions.resolve(ANN, other_incident)
    assert await kv.get(blocked_key(fingerprint)) is not None  # only a resolve of this error lifts it
    regression, _ = await services.open_incident()  # the same error came back: a new incident
    await services.decisions.resolve(ANN, regression)
    assert await kv.get(blocked_key(fingerprint)) is None


async def test_a_mute_counts_only_until_its_time(services: Services):
    incident_id, _ = await services.open_incident()
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None
    assert await muted_until(services.db, incident.fingerprint) is None
    await services.decisions.mute(ANN, incident_id, timedelta(hours=1))
    until = await muted_until(services.db, incident.fingerprint)
    assert until is not None and abs(until - (services.clock() + timedelta(hours=1))) < timedelta(seconds=1)
    services.clock.advance(hours=-2)  # a mute that was set two hours ago: over now
    await services.decisions.mute(ANN, incident_id, timedelta(hours=1))
    assert await muted_until(services.db, incident.fingerprint) is None
