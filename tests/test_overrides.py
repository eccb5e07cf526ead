"""Issue 13, triage that learns from corrections: a rule + project corrected the same way
OVERRIDE_AFTER_CORRECTIONS times is offered an Apply button (digest, /stats); an approver's press
adds a priority override that new incidents of that rule in that project get, the card saying so;
/overrides lists and removes them. Service level, on a real SQLite file; the last test goes
through the Telegram emulator."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.app import RulesTriager
from bot.callback_data import OVERRIDE_APPLY, OVERRIDE_REMOVE, PRIORITY, CardPress, decode
from bot.chart import CHART_HEIGHT, CHART_WIDTH, ChartDay
from bot.pipeline import PipelineWorker
from bot.redact import Redactor
from bot.triage import RuleSet
from storage.db import Database
from storage.inbox import InboxRepository
from storage.incidents import IncidentRepository
from tests.conftest import ANN, APPROVER, BOB, CHAT_ID, MALLORY, STRANGER, Harness, Services
from tests.pngs import grey_png

REDIS = "Error: connect ECONNREFUSED 127.0.0.1:6379"  # rule infra.redis-down: P1
KEY_ERROR = "KeyError: 'user_id'"  # rule code.runtime-error: P2
PROJECT = "billing-api"
# Digits are normalised away by the fingerprint: distinct words make distinct errors.
HOSTS = ("alpha", "bravo", "charlie", "delta", "echo")


def alert_body(title: str, project: str = PROJECT) -> bytes:
    return json.dumps({"title": title, "project": project, "environment": "production"}).encode()


@pytest.fixture(autouse=True)
def blank_chart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy day's digest goes out after its chart, but the chart is not what these tests are about
    (tests/test_chart.py and tests/test_digest.py draw it from the day's figures): a blank PNG of the
    chart's size stands in for it (drawing one costs about a second of CPU, importing matplotlib)."""
    def drawn(series: list[ChartDay], *, title: str = "") -> bytes:
        return BLANK_CHART

    monkeypatch.setattr("bot.digest.render_chart", drawn)


BLANK_CHART = grey_png(CHART_WIDTH, CHART_HEIGHT, shade=0xFF)


@functools.cache
def packaged_rules() -> RuleSet:
    return RuleSet.load(None)  # compiling the rules takes a while: once per test run


def pipeline_for(services: Services) -> PipelineWorker:
    """The real pipeline with the packaged rules, on the services' database and cards."""
    return PipelineWorker(services.db, RulesTriager(packaged_rules(), None), Redactor(), services.cards)


async def new_incident(services: Services, title: str, project: str = PROJECT) -> int:
    """An alert through the pipeline, as the webhook would hand it over; returns its incident id."""
    await InboxRepository(services.db).add("generic", alert_body(title, project))
    await pipeline_for(services).drain_once()
    row = await services.db.fetchone("SELECT MAX(id) AS id FROM incidents")
    assert row is not None
    return int(row["id"])


async def corrected(services: Services, times: int, to: str = "P0", title: str = REDIS, suffix: str = "") -> None:
    """`times` incidents of one rule in PROJECT, each corrected by a press on its card's priority row."""
    for n in range(times):
        incident_id = await new_incident(services, f"{title} (host {HOSTS[n]}{suffix})")
        outcome = await services.decisions.press(ANN, CardPress(PRIORITY, incident_id, to))
        assert outcome.changed


async def stats(services: Services) -> Any:
    return await services.commands.run(ANN, "stats", "7", CHAT_ID)


def apply_buttons(buttons: list[list[tuple[str, str]]]) -> list[tuple[str, str]]:
    return [(text, data) for row in buttons for text, data in row if data.startswith(f"{OVERRIDE_APPLY}:")]


async def digest_message(services: Services) -> dict[str, Any]:
    await services.commands.digest.send_now()
    # The message (a busy day's digest is a chart photo, then this message with the buttons).
    [item] = [i for i in await services.queued() if i.incident_id is None and "igest" in i.payload.get("text", "")][-1:]
    return item.payload


async def offer_press(services: Services) -> CardPress:
    [(_, data)] = apply_buttons((await stats(services)).buttons)
    press = decode(data)
    assert press is not None and len(data.encode()) < 64
    return press


async def test_below_n_corrections_no_apply_button_at_n_the_button(services: Services) -> None:
    await corrected(services, 2)
    reply = await stats(services)
    assert apply_buttons(reply.buttons) == []
    assert "Overrides to apply" not in reply.html
    assert apply_buttons((await digest_message(services))["buttons"]) == []

    await corrected(services, 1, suffix=" again")  # the third correction the same way
    reply = await stats(services)
    [(label, data)] = apply_buttons(reply.buttons)
    assert "P0" in label and "infra.redis-down" in label
    assert "Overrides to apply" in reply.html and "billing-api" in reply.html
    digest = await digest_message(services)
    [(digest_label, digest_data)] = apply_buttons(digest["buttons"])
    # The same pair and priority, but each message has its own offer: a press is judged by the
    # message it was made under. Nothing changed since either was shown, so the older one works.
    assert digest_label == label and digest_data != data
    older = decode(data)
    assert older is not None
    assert (await services.decisions.press(ANN, older)).changed
    newer = decode(digest_data)
    assert newer is not None
    assert "Already applied (override #1, by Ann)" in (await services.decisions.press(BOB, newer)).answer


async def test_corrections_in_different_directions_do_not_reach_n(services: Services) -> None:
    await corrected(services, 2, to="P0")
    await corrected(services, 2, to="P3", suffix=" again")
    assert apply_buttons((await stats(services)).buttons) == []


async def test_apply_by_a_non_approver_is_refused_and_audited(services: Services) -> None:
    await corrected(services, 3)
    press = await offer_press(services)
    outcome = await services.decisions.press(MALLORY, press)
    assert "Not allowed" in outcome.answer and not outcome.changed
    [refusal] = await services.audit("override.apply")
    assert (refusal.outcome, refusal.actor_id) == ("refused: not an approver", STRANGER)
    assert "No priority overrides" in (await services.commands.run(ANN, "overrides", "", CHAT_ID)).html
    incident_id = await new_incident(services, f"{REDIS} (after the refusal)")
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None and incident.priority.value == "P1"


async def test_apply_overrides_new_incidents_of_that_rule_and_project_only(services: Services) -> None:
    await corrected(services, 4)
    press = await offer_press(services)
    outcome = await services.decisions.press(ANN, press)
    assert outcome.changed and "Applied" in outcome.answer
    again = await services.decisions.press(BOB, press)
    assert not again.changed and "Already applied" in again.answer
    assert [e.outcome for e in await services.audit("override.apply")] == ["applied", "already applied"]
    assert any("Override #1 by Ann" in text for text in await services.messages())  # the team sees who
    # Once applied, the same pair is no longer offered.
    assert apply_buttons((await stats(services)).buttons) == []

    incident_id = await new_incident(services, f"{REDIS} (the next one)")
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None
    # The override's priority on the incident; the rules' own stays the original the metrics judge.
    assert (incident.priority.value, incident.priority_original.value) == ("P0", "P1")
    card = await services.card(incident_id)
    assert "P0 by override from 4 corrections (the rules said P1" in card["text"]
    assert card["text"].startswith("🔴 <b>P0</b>")

    other_project = await IncidentRepository(services.db).get(await new_incident(services, f"{REDIS} (jobs)", "jobs"))
    other_rule = await IncidentRepository(services.db).get(await new_incident(services, KEY_ERROR))
    assert other_project is not None and other_rule is not None
    assert (other_project.priority.value, other_rule.priority.value) == ("P1", "P2")
    for untouched in (other_project, other_rule):
        assert "by override" not in (await services.card(untouched.id))["text"]


async def test_overrides_list_and_remove_by_button_and_by_command(services: Services) -> None:
    await corrected(services, 3)
    await corrected(services, 3, to="P3", title=KEY_ERROR)
    presses = [decode(data) for _, data in apply_buttons((await stats(services)).buttons)]
    assert len(presses) == 2
    for press in presses:
        assert press is not None and (await services.decisions.press(ANN, press)).changed

    listing = await services.commands.run(ANN, "overrides", "", CHAT_ID)
    assert "infra.redis-down" in listing.html and "code.runtime-error" in listing.html
    assert "from 3 corrections, by Ann" in listing.html
    removes = [data for row in listing.buttons for _, data in row]
    assert removes == [f"{OVERRIDE_REMOVE}:1:", f"{OVERRIDE_REMOVE}:2:"]

    # The Remove button: approvers only, refusals audited, a second press says so.
    remove_first = decode(removes[0])
    assert remove_first is not None
    assert "Not allowed" in (await services.decisions.press(MALLORY, remove_first)).answer
    assert (await services.decisions.press(ANN, remove_first)).changed
    assert "already removed" in (await services.decisions.press(BOB, remove_first)).answer
    # The command.
    assert "Override #2 removed" in (await services.commands.run(BOB, "overrides", "remove 2", CHAT_ID)).html
    assert "No override #99" in (await services.commands.run(BOB, "overrides", "remove 99", CHAT_ID)).html
    assert "Usage" in (await services.commands.run(BOB, "overrides", "delete 2", CHAT_ID)).html
    assert "Not allowed" in (await services.commands.run(MALLORY, "overrides", "remove 2", CHAT_ID)).html
    outcomes = [(e.outcome, e.actor_name) for e in await services.audit("override.remove")]
    assert outcomes == [("refused: not an approver", "Mallory"), ("removed", "Ann"), ("already removed", "Bob"),
                        ("removed", "Bob"), ("not found", "Bob")]
    assert "No priority overrides" in (await services.commands.run(ANN, "overrides", "", CHAT_ID)).html

    # Removed: the rules decide again.
    incident = await IncidentRepository(services.db).get(await new_incident(services, f"{REDIS} (after removal)"))
    assert incident is not None and incident.priority.value == "P1"


async def test_when_people_correct_an_override_another_way_the_newer_offer_replaces_it(services: Services) -> None:
    await corrected(services, 3)
    first = await offer_press(services)
    assert (await services.decisions.press(ANN, first)).changed
    # Its incidents now come as P0, and people keep setting them to P2: more often than P0 before.
    await corrected(services, 4, to="P2", suffix=" later")
    [(label, data)] = apply_buttons((await stats(services)).buttons)
    assert "Apply P2" in label
    second = decode(data)
    assert second is not None and (await services.decisions.press(BOB, second)).changed
    listing = (await services.commands.run(ANN, "overrides", "", CHAT_ID)).html
    assert "→ <b>P2</b>, from 4 corrections, by Bob" in listing and "<b>P0</b>" not in listing
    assert [(e.outcome, e.detail["override_id"]) for e in await services.audit("override.remove")] == [("replaced", 1)]
    # The old offer's button, pressed again, does not undo Bob's newer decision: it says who made it.
    stale = await services.decisions.press(ANN, first)
    assert not stale.changed and "Override #2 (P2" in stale.answer and "applied by Bob" in stale.answer
    assert "→ <b>P2</b>" in (await services.commands.run(ANN, "overrides", "", CHAT_ID)).html


async def test_an_old_digest_apply_cannot_bring_back_an_override_removed_after_it(services: Services) -> None:
    """The digest offers an override; /stats shows the same offer, Ann applies it there and removes it;
    the next /stats offers it again. A press on the old digest's button must not re-apply it."""
    await corrected(services, 3)
    [(_, old_digest_data)] = apply_buttons((await digest_message(services))["buttons"])
    old_digest = decode(old_digest_data)
    assert old_digest is not None
    assert (await services.decisions.press(ANN, await offer_press(services))).changed
    assert "Override #1 removed" in (await services.commands.run(ANN, "overrides", "remove 1", CHAT_ID)).html
    fresh = await offer_press(services)  # the pair is offered anew, under this /stats reply

    stale = await services.decisions.press(BOB, old_digest)
    assert not stale.changed
    assert "Override #1 (P0 for infra.redis-down in billing-api) was removed by Ann" in stale.answer
    assert "nothing changed" in stale.answer and "send /stats for a fresh offer" in stale.answer
    assert "No priority overrides" in (await services.commands.run(ANN, "overrides", "", CHAT_ID)).html
    incident = await IncidentRepository(services.db).get(await new_incident(services, f"{REDIS} (after the press)"))
    assert incident is not None and incident.priority.value == "P1"
    refusal = (await services.audit("override.apply"))[-1]
    assert (refusal.outcome, refusal.actor_name, refusal.detail["override_id"]) == ("refused: stale offer", "Bob", 1)

    # The offer shown after the removal is current: an approver's press applies it, audited.
    assert (await services.decisions.press(BOB, fresh)).changed
    assert "→ <b>P0</b>, from 3 corrections, by Bob" in (await services.commands.run(ANN, "overrides", "", CHAT_ID)).html
    assert (await services.audit("override.apply"))[-1].outcome == "applied"


async def test_a_button_shown_before_an_apply_and_removal_stays_stale_however_often_shown_since(
    services: Services,
) -> None:
    """Applied and removed from the digest's own button, then shown by /stats twice: pressing the
    digest's button again still changes nothing (each showing is its own offer)."""
    await corrected(services, 3)
    [(_, data)] = apply_buttons((await digest_message(services))["buttons"])
    old = decode(data)
    assert old is not None
    assert (await services.decisions.press(ANN, old)).changed
    assert (await services.commands.run(ANN, "overrides", "remove 1", CHAT_ID)).html.startswith("Override #1")
    await offer_press(services)
    await offer_press(services)
    stale = await services.decisions.press(ANN, old)
    assert not stale.changed and "was removed by Ann" in stale.answer
    assert "No priority overrides" in (await services.commands.run(ANN, "overrides", "", CHAT_ID)).html


def test_apply_override_needs_the_rule_and_the_project_and_keeps_the_first_original() -> None:
    """The function H1's Claude step and the CLI call too: called twice it still names the rules' priority."""
    from datetime import UTC, datetime

    from bot.models import Category, Priority, Triage
    from bot.overrides import apply_override
    from storage.overrides import PriorityOverride

    live = [PriorityOverride(7, "infra.redis-down", PROJECT, "P0", 5, "Ann", datetime.now(UTC))]
    rules = Triage(Priority.P1, Category.INFRASTRUCTURE, "redis down", rule_id="infra.redis-down")
    once = apply_override(rules, PROJECT, live)
    assert (once.priority, once.priority_before_override, once.override_id, once.override_corrections) == (
        Priority.P0, Priority.P1, 7, 5)
    assert apply_override(once, PROJECT, live) == once
    assert apply_override(rules, None, live) == rules
    assert apply_override(rules, "jobs", live) == rules
    no_rule = Triage(Priority.P1, Category.INFRASTRUCTURE, "?", rule_id=None)
    assert apply_override(no_rule, PROJECT, live) == no_rule


async def test_a_database_without_overrides_reads_as_none(tmp_path: Any) -> None:
    """The terminal reads the bot's database read-only: one from before overrides has none."""
    from storage.overrides import read_live_overrides

    async with Database(tmp_path / "bot.db") as db:
        await db.execute("DROP TABLE priority_overrides")
    assert read_live_overrides(tmp_path / "bot.db") == []


async def test_buttons_shown_before_the_upgrade_keep_naming_their_offer(tmp_path: Any) -> None:
    """Migration 012 gives each message its own offer; a button from before it carries the old
    offer's id, which still names that offer, and the pair's changes after it was last shown make it stale."""
    import sqlite3

    from storage.db import _migrations
    from storage.overrides import OverrideRepository

    path = tmp_path / "bot.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for version, sql in (m for m in _migrations() if m[0] < 12):
        conn.executescript(f"BEGIN;\n{sql}\nINSERT INTO schema_migrations VALUES ({version}, 'then');\nCOMMIT;")
    conn.executescript(
        "INSERT INTO priority_override_offers VALUES (4, 'infra.redis-down', 'billing-api', 'P0', 3, 5, "
        "'2026-01-02T00:00:00.000+00:00');"
        "INSERT INTO priority_override_offers VALUES (5, 'code.runtime-error', 'billing-api', 'P3', 3, 5, "
        "'2026-01-02T00:00:00.000+00:00');"
        # applied before the offer's last showing, removed after it
        "INSERT INTO priority_overrides (rule_id, project, priority, corrections, offer_id, applied_by, applied_by_id, "
        "applied_at, removed_by, removed_by_id, removed_at) VALUES ('infra.redis-down', 'billing-api', 'P0', 3, 4, "
        "'Ann', 1, '2026-01-01T00:00:00.000+00:00', 'Ann', 1, '2026-01-03T00:00:00.000+00:00');")
    conn.close()

    async with Database(path) as db:
        repo = OverrideRepository(db)
        redis, runtime = await repo.get_offer(4), await repo.get_offer(5)
        assert redis is not None and runtime is not None
        assert (redis.rule_id, redis.priority, redis.pair_offer_id) == ("infra.redis-down", "P0", 4)
        assert redis.pair_changes == 1 < await repo.pair_changes("infra.redis-down", "billing-api")  # stale
        assert runtime.pair_changes == 0 == await repo.pair_changes("code.runtime-error", "billing-api")  # current
        assert await repo.offer("infra.redis-down", "billing-api", "P0", 3, 5) > 5  # new showings: new ids


# -- through the Telegram emulator ----------------------------------------------------------------


async def test_digest_apply_then_the_next_alert_card_shows_the_override(
    start_app: Callable[..., Awaitable[Harness]],
) -> None:
    h = await start_app()
    for n in range(3):
        assert (await h.post("generic", alert_body(f"{REDIS} (host {HOSTS[n]})"))).status_code == 202
    cards = await h.wait_cards(3)
    for card in cards:
        priority_row = [b for row in card.reply_markup["inline_keyboard"] for b in row
                        if b["callback_data"].startswith(f"{PRIORITY}:")]
        p0 = next(b["callback_data"] for b in priority_row if b["text"].endswith("P0"))
        assert "P0" in (await h.press(card.message_id, p0))["text"]

    h.emu.send_user_message(CHAT_ID, APPROVER, "/digest")
    # A busy day's digest is the chart (a photo), then the message that carries the buttons.
    digest = await h.emu.wait_for(
        lambda: next((m for m in h.cards() if "Overrides to apply" in (m.plain_text or "")), None), timeout=15)
    [apply] = [b for row in digest.reply_markup["inline_keyboard"] for b in row
               if b["callback_data"].startswith(f"{OVERRIDE_APPLY}:")]
    refused = await h.press(digest.message_id, apply["callback_data"], user_id=STRANGER, name="Mallory")
    assert "Not allowed" in refused["text"]
    assert "Applied" in (await h.press(digest.message_id, apply["callback_data"]))["text"]
    assert "Already applied" in (await h.press(digest.message_id, apply["callback_data"]))["text"]

    assert (await h.post("generic", alert_body(f"{REDIS} (the next one)"))).status_code == 202
    card = await h.emu.wait_for(
        lambda: next((m for m in h.cards() if "the next one" in m.plain_text), None), timeout=10)
    assert "P0 by override from 3 corrections" in card.plain_text
    assert card.plain_text.startswith("🔴 P0")

    listing = await h.command("/overrides")
    assert "infra.redis-down" in listing.plain_text and "billing-api" in listing.plain_text
    [remove] = [b for row in listing.reply_markup["inline_keyboard"] for b in row]
    assert "removed" in (await h.press(listing.message_id, remove["callback_data"]))["text"]
