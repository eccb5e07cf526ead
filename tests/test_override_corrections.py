"""Issue 13, review follow-ups on priority overrides: a person's priority on an overridden incident
is judged against the rules' own priority (putting it back there is no correction of the rules),
the card stops saying "by override" once a person set the priority, and an Apply button under an
older message does not undo a later removal."""

from __future__ import annotations

from bot.callback_data import PRIORITY, CardPress
from bot.metrics import Metrics, compute_metrics
from bot.models import utcnow
from storage.incidents import IncidentRepository
from tests.conftest import ANN, BOB, CHAT_ID, Services
from tests.test_overrides import REDIS, corrected, new_incident, offer_press


async def _metrics(services: Services) -> Metrics:
    return await compute_metrics(services.db, services.decisions.policy, until=utcnow(), days=7)


async def _overridden_incident(services: Services, title: str) -> int:
    """Three P1 -> P0 corrections, the override applied, then a new incident it gives P0 (the rules: P1)."""
    await corrected(services, 3)
    assert (await services.decisions.press(ANN, await offer_press(services))).changed
    incident_id = await new_incident(services, f"{REDIS} ({title})")
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None and (incident.priority.value, incident.priority_original.value) == ("P0", "P1")
    return incident_id


async def test_an_override_put_back_to_the_rules_priority_does_not_count_against_the_rules(
    services: Services,
) -> None:
    incident_id = await _overridden_incident(services, "the next one")
    before = await _metrics(services)
    assert (before.triage_accuracy.hits, before.triage_accuracy.total) == (1, 4)  # the 3 corrected ones miss

    # The on-call finds the override wrong here and puts it back to what the rule said.
    outcome = await services.decisions.press(ANN, CardPress(PRIORITY, incident_id, "P1"))
    assert outcome.changed

    after = await _metrics(services)
    assert after.triage_accuracy == before.triage_accuracy  # the rule was right: still a hit
    assert after.intervention.hits == before.intervention.hits + 1  # but a person did step in
    # The rule's corrections stay 3 of 4, all to P0: the revert is not a "corrected to P1".
    [pair] = [c for c in after.corrected_rule_projects if c.project == "billing-api"]
    assert (pair.to, pair.times, pair.corrected, pair.of) == ("P0", 3, 3, 4)
    card = (await services.card(incident_id))["text"]
    assert "by override" not in card and "set aside" in card
    assert "rules' own priority (override #1 set aside" in outcome.answer


async def test_a_correction_of_an_overridden_incident_is_measured_against_the_rules(services: Services) -> None:
    incident_id = await _overridden_incident(services, "another")
    assert (await services.decisions.press(ANN, CardPress(PRIORITY, incident_id, "P2"))).changed
    m = await _metrics(services)
    assert (m.triage_accuracy.hits, m.triage_accuracy.total) == (0, 4)  # P1 -> P2: the rules missed
    [pair] = [c for c in m.corrected_rule_projects if c.project == "billing-api"]
    assert (pair.to, pair.times, pair.corrected) == ("P0", 3, 4)

    text = (await services.card(incident_id))["text"]
    head, override_line = text.splitlines()[:2]
    assert head.startswith("🟡 <b>P2</b>")
    assert "P0 by override" not in text
    assert override_line == "⚖️ Override to P0 set aside: a person set P2 (the rules said P1)"


async def test_an_old_apply_after_the_override_was_removed_changes_nothing_and_says_why(
    services: Services,
) -> None:
    await corrected(services, 3)
    press = await offer_press(services)
    assert (await services.decisions.press(ANN, press)).changed
    assert (await services.decisions.remove_override(ANN, 1, via="command")).changed

    again = await services.decisions.press(BOB, press)  # the same button, under the older message
    assert not again.changed
    assert "Override #1 (P0 for infra.redis-down in billing-api) was removed by Ann at" in again.answer
    assert "/stats" in again.answer
    assert "No priority overrides" in (await services.commands.run(ANN, "overrides", "", CHAT_ID)).html
    assert [e.outcome for e in await services.audit("override.apply")][-1] == "refused: stale offer"
    incident = await IncidentRepository(services.db).get(await new_incident(services, f"{REDIS} (after)"))
    assert incident is not None and incident.priority.value == "P1"  # the removal stands

    # Offered again after the removal (a fresh /stats, its own offer): applying it is a person's
    # informed choice, and the old button stays stale.
    fresh_offer = await offer_press(services)
    assert fresh_offer.encode() != press.encode()
    fresh = await services.decisions.press(BOB, fresh_offer)
    assert fresh.changed and "Applied" in fresh.answer
