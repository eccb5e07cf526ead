"""The triage card as the chat sees it: text that Telegram accepts, safe HTML, the right buttons."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.callback_data import ACTIONS, APPROVE, INVESTIGATE, MUTE, PRIORITY, REJECT, RESOLVE, CardPress, decode
from bot.card_render import TELEGRAM_TEXT_LIMIT, render_card
from bot.models import AlertKind, Category, Incident, Owner, Priority, Proposal, ProposalState, Triage
from bot.rollout import RolloutPolicy, Stage
from bot.telegram_emulator import parse_html, strip_html, utf16_len

NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>&\"'"
BIG = (HOSTILE * (100_000 // len(HOSTILE) + 1))[:100_000]


def make_triage(**overrides: Any) -> Triage:
    values: dict[str, Any] = {
        "priority": Priority.P1,
        "category": Category.INFRASTRUCTURE,
        "likely_cause": "Redis is down",
        "tags": ("redis", "down"),
    }
    values.update(overrides)
    return Triage(**values)


def make_incident(**overrides: Any) -> Incident:
    values: dict[str, Any] = {
        "id": 42,
        "fingerprint": "glitchtip:gt.example.com:issue:4242",
        "status": "open",
        "source": "glitchtip",
        "kind": AlertKind.ERROR,
        "title": "Error: connect ECONNREFUSED 127.0.0.1:6379",
        "message": "processBookingQueue(worker/queue)",
        "level": "error",
        "project": "ai-admin-worker",
        "environment": "production",
        "release": "ai-admin-worker@2.4.1",
        "server": "web-1",
        "url": "https://gt.example.com/acme/issues/4242",
        "stacktrace": "",
        "external_id": "4242",
        "tags": {"short_id": "AI-ADMIN-WORKER-3F"},
        "count": 3,
        "first_seen": NOW - timedelta(hours=1),
        "last_seen": NOW,
        "priority": Priority.P1,
        "priority_original": Priority.P1,
        "category": Category.INFRASTRUCTURE,
        "triage": make_triage(),
    }
    values.update(overrides)
    return Incident(**values)


def make_proposal(state: ProposalState = ProposalState.PENDING, **overrides: Any) -> Proposal:
    values: dict[str, Any] = {
        "id": 7,
        "incident_id": 42,
        "kind": "pattern",
        "summary": "restart_redis: systemctl restart redis-server",
        "state": state,
        "approvals_required": 2,
        "created_at": NOW - timedelta(minutes=5),
        "expires_at": NOW + timedelta(hours=24),
        "approvals": [(111, "Ann")],
    }
    values.update(overrides)
    return Proposal(**values)


def callback_data(buttons: list[list[tuple[str, str]]]) -> list[str]:
    return [data for row in buttons for _, data in row]


def actions(buttons: list[list[tuple[str, str]]]) -> list[list[str]]:
    return [[data.split(":")[0] for _, data in row] for row in buttons]


def visible(text: str) -> str:
    """What the chat shows: the HTML parsed the way Telegram does."""
    return strip_html(text)


# --------------------------------------------------------------------------- text


def test_card_shows_the_incident_at_a_glance() -> None:
    card = render_card(make_incident(), proposal=make_proposal(), policy=RolloutPolicy(Stage(2)), now=NOW)
    shown = visible(card.text)
    lines = shown.splitlines()
    assert lines[0].startswith("🟠 P1 · infrastructure · #42")
    assert "Error: connect ECONNREFUSED 127.0.0.1:6379" in shown
    assert "ai-admin-worker · production · web-1 · ai-admin-worker@2.4.1" in shown
    assert "×3" in shown
    assert "Redis is down" in shown
    assert "redis, down" in shown
    assert "AI-ADMIN-WORKER-3F" in shown  # the GlitchTip short id is the link label
    assert 'href="https://gt.example.com/acme/issues/4242"' in card.text
    assert card.payload()["parse_mode"] == "HTML"


@pytest.mark.parametrize("field", ["title", "message", "cause", "project", "tags", "owner", "everything"])
def test_huge_hostile_values_stay_within_the_limit_and_escaped(field: str) -> None:
    incident = make_incident()
    triage = make_triage()
    if field in ("title", "everything"):
        incident.title = BIG
    if field in ("message", "everything"):
        incident.message = BIG
    if field in ("project", "everything"):
        incident.project = incident.environment = incident.release = incident.server = BIG
    if field in ("cause", "everything"):
        triage = dataclasses.replace(triage, likely_cause=BIG, note=BIG, affected_users=BIG)
    if field in ("tags", "everything"):
        triage = dataclasses.replace(triage, tags=(BIG, BIG))
    if field in ("owner", "everything"):
        triage = dataclasses.replace(triage, owner=Owner(name=BIG, telegram=BIG))
    incident.triage = triage
    card = render_card(incident, proposal=make_proposal(summary=BIG), policy=RolloutPolicy(Stage(3)), now=NOW)
    assert len(card.text) <= TELEGRAM_TEXT_LIMIT
    assert utf16_len(visible(card.text)) <= TELEGRAM_TEXT_LIMIT
    assert "<script" not in card.text.lower()
    assert "&lt;script&gt;" in card.text
    # Telegram's HTML parser accepts it: only our own tags, all balanced.
    parse_html(card.text)
    assert set(re.findall(r"</?([a-z]+)", card.text)) <= {"b", "i", "code", "a"}
    # The start of the card survives the cut.
    assert visible(card.text).startswith("🟠 P1 · infrastructure · #42")
    assert callback_data(card.buttons)  # buttons are still there


def test_huge_fields_do_not_push_out_the_proposal_line() -> None:
    incident = make_incident(title=BIG, message=BIG)
    incident.triage = make_triage(likely_cause=BIG)
    card = render_card(incident, proposal=make_proposal(), policy=RolloutPolicy(Stage(2)), now=NOW)
    assert "Proposal: restart_redis: systemctl restart redis-server · 1/2 approvals" in visible(card.text)


def test_a_long_url_does_not_push_out_the_proposal_line() -> None:
    url = "https://api.example.com/v1/search?" + "&".join(f"q{i}=a&b" for i in range(400))
    incident = make_incident(source="generic", url=url[:2000])
    card = render_card(incident, proposal=make_proposal(), policy=RolloutPolicy(Stage(2)), now=NOW)
    assert [a for a in actions(card.buttons)[0]] == [APPROVE, REJECT]
    assert "Proposal: restart_redis" in visible(card.text)


def test_emoji_heavy_values_stay_within_telegrams_utf16_limit() -> None:
    emoji = "😀" * 5000
    incident = make_incident(title=emoji, message=emoji, project=emoji, environment=emoji, release=emoji,
                             server=emoji)
    incident.triage = make_triage(likely_cause=emoji, tags=(emoji,), affected_users=emoji, note=emoji,
                                  owner=Owner(name=emoji))
    card = render_card(incident, proposal=make_proposal(), policy=RolloutPolicy(Stage(2)), now=NOW)
    assert utf16_len(visible(card.text)) <= TELEGRAM_TEXT_LIMIT


def test_long_history_is_cut_but_the_card_stays_valid() -> None:
    history = [f"• {i:04d} Ann pressed Approve" for i in range(1000)]
    card = render_card(make_incident(), proposal=make_proposal(), policy=RolloutPolicy(Stage(2)), now=NOW, history=history)
    assert len(card.text) <= TELEGRAM_TEXT_LIMIT
    assert card.text.endswith("…")
    shown = visible(card.text)
    assert "Proposal: restart_redis" in shown
    assert "• 0000 Ann pressed Approve" in shown  # the oldest lines are kept, the tail is cut


def test_url_with_quotes_cannot_break_out_of_the_href() -> None:
    incident = make_incident(url='https://gt.example.com/x" onclick="alert(1)')
    card = render_card(incident, policy=RolloutPolicy(Stage(2)), now=NOW)
    assert 'onclick="' not in card.text
    assert "&quot;" in card.text
    parse_html(card.text)


def test_corrected_priority_shows_the_triaged_one() -> None:
    incident = make_incident(priority=Priority.P0, priority_original=Priority.P2)
    card = render_card(incident, policy=RolloutPolicy(Stage(2)), now=NOW)
    head = visible(card.text).splitlines()[0]
    assert head.startswith("🔴 P0")
    assert "(triaged P2)" in head
    priority_row = next(row for row in card.buttons if row[0][1].startswith(f"{PRIORITY}:"))
    assert [label for label, _ in priority_row] == ["• P0", "P1", "P2", "P3"]


def test_uncorrected_priority_has_no_triaged_note() -> None:
    card = render_card(make_incident(), policy=RolloutPolicy(Stage(2)), now=NOW)
    assert "triaged" not in card.text


def test_uptime_down_regression_muted_and_owner_lines() -> None:
    incident = make_incident(
        kind=AlertKind.UPTIME_DOWN, regression_of=9, muted_until=NOW + timedelta(hours=1),
        triage=make_triage(owner=Owner(name="Platform", telegram="@platform"), affected_users="all bookings"),
    )
    shown = visible(render_card(incident, policy=RolloutPolicy(Stage(2)), now=NOW).text)
    assert "Uptime monitor: site is down" in shown
    assert "came back after #9 was resolved" in shown
    assert "Muted until 2025-03-14 10:30 UTC" in shown
    assert "Owner: @platform" in shown
    assert "all bookings" in shown


def test_mute_that_has_passed_is_not_shown() -> None:
    incident = make_incident(muted_until=NOW - timedelta(minutes=1))
    assert "Muted" not in render_card(incident, policy=RolloutPolicy(Stage(2)), now=NOW).text


# --------------------------------------------------------------------------- proposal line


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (None, "➡️ No action proposed"),
        (ProposalState.PENDING, "➡️ Proposal: restart_redis: systemctl restart redis-server · 1/2 approvals"),
        (ProposalState.APPROVED, "⏳ Running: restart_redis: systemctl restart redis-server (approved by Ann, Bob)"),
        (ProposalState.RUNNING, "⏳ Running: restart_redis: systemctl restart redis-server (approved by Ann, Bob)"),
        (
            ProposalState.SUCCEEDED,
            "✅ Done: restart_redis: systemctl restart redis-server (approved by Ann, Bob, 2025-03-14 09:20 UTC)"
            " — PONG",
        ),
        (ProposalState.FAILED, "❌ Failed: restart_redis: systemctl restart redis-server (approved by Ann, Bob) — PONG"),
        (ProposalState.REJECTED, "🚫 Rejected by Ann, Bob at 2025-03-14 09:20 UTC: restart_redis"),
        (ProposalState.EXPIRED, "⌛ Expired without a decision: restart_redis"),
        (ProposalState.SUPERSEDED, "➡️ Superseded: restart_redis"),
    ],
)
def test_proposal_line_for_each_state(state: ProposalState | None, expected: str) -> None:
    proposal = None
    if state is not None:
        proposal = make_proposal(state, decided_by="Ann, Bob", decided_at=NOW - timedelta(minutes=10), result="PONG")
    shown = visible(render_card(make_incident(), proposal=proposal, policy=RolloutPolicy(Stage(2)), now=NOW).text)
    assert expected in shown
    proposal_lines = [line for line in shown.splitlines() if line.startswith(("➡️", "⏳", "✅ Done", "❌", "🚫", "⌛"))]
    assert len(proposal_lines) == 1


def test_every_proposal_state_is_rendered() -> None:
    lines = set()
    for state in ProposalState:
        card = render_card(make_incident(), proposal=make_proposal(state, decided_by="Ann"), policy=RolloutPolicy(Stage(2)), now=NOW)
        lines.add(next(line for line in visible(card.text).splitlines() if "restart_redis" in line))
    # approved and running share a line; every other state reads differently
    assert len(lines) == len(ProposalState) - 1


def test_proposal_values_are_escaped() -> None:
    proposal = make_proposal(ProposalState.FAILED, summary=HOSTILE, decided_by=HOSTILE, result=HOSTILE)
    card = render_card(make_incident(), proposal=proposal, policy=RolloutPolicy(Stage(2)), now=NOW)
    assert "<script" not in card.text
    parse_html(card.text)


# --------------------------------------------------------------------------- where a fix runs


def test_a_fix_proposal_names_the_host_its_commands_run_on() -> None:
    proposal = make_proposal(action={"argv": [["systemctl", "restart", "redis-server"]], "where": "runs on web-1"})
    lines = visible(render_card(make_incident(), proposal=proposal, policy=RolloutPolicy(Stage(4)), now=NOW).text).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("➡️ Proposal: restart_redis"))
    assert lines[at + 1] == "🖥 runs on web-1"


def test_an_error_from_another_server_says_there_is_no_local_fix() -> None:
    proposal = make_proposal(kind="acknowledge", summary="acknowledge: I own this incident", approvals_required=1,
                             approvals=[], action={"where": "no local fix: the error came from web-03"})
    shown = visible(render_card(make_incident(server="web-03"), proposal=proposal, policy=RolloutPolicy(Stage(4)), now=NOW).text)
    assert "➡️ Proposal: acknowledge: I own this incident · 0/1 approvals\n🖥 no local fix: the error came from web-03" \
        in shown


def test_a_proposal_without_a_host_line_renders_as_before() -> None:
    shown = visible(render_card(make_incident(), proposal=make_proposal(action=None), policy=RolloutPolicy(Stage(4)), now=NOW).text)
    assert "🖥" not in shown


def test_the_host_line_is_escaped_and_kept_on_an_oversized_card() -> None:
    incident = make_incident(title=BIG, message=BIG, project=BIG, server=BIG)
    incident.triage = dataclasses.replace(incident.triage, likely_cause=BIG, tags=(BIG,))
    proposal = make_proposal(summary=BIG, action={"where": f"no local fix: the error came from {BIG}"})
    card = render_card(incident, proposal=proposal, policy=RolloutPolicy(Stage(4)), now=NOW)
    assert len(card.text) <= TELEGRAM_TEXT_LIMIT and utf16_len(visible(card.text)) <= TELEGRAM_TEXT_LIMIT
    assert "<script" not in card.text.lower()
    parse_html(card.text)
    shown = visible(card.text)
    assert "➡️ Proposal:" in shown and "🖥 no local fix: the error came from <script>" in shown


# --------------------------------------------------------------------------- buttons


def test_stage_1_offers_only_the_priority_row() -> None:
    card = render_card(make_incident(), proposal=make_proposal(), policy=RolloutPolicy(Stage(1)), now=NOW)
    assert actions(card.buttons) == [[PRIORITY] * 4]


def test_stage_2_with_a_pending_proposal() -> None:
    card = render_card(make_incident(), proposal=make_proposal(), policy=RolloutPolicy(Stage(2)), now=NOW)
    assert actions(card.buttons) == [[APPROVE, REJECT], [PRIORITY] * 4, [MUTE, MUTE, RESOLVE]]
    assert card.buttons[0] == [("✅ Approve", "ap:42:7"), ("🚫 Reject", "rj:42:7")]
    assert [data for _, data in card.buttons[2]] == ["mu:42:1h", "mu:42:24h", "rs:42:"]


@pytest.mark.parametrize("state", [s for s in ProposalState if s is not ProposalState.PENDING])
def test_stage_2_without_a_pending_proposal_has_no_approve(state: ProposalState) -> None:
    card = render_card(make_incident(), proposal=make_proposal(state, decided_by="Ann"), policy=RolloutPolicy(Stage(2)), now=NOW)
    assert actions(card.buttons) == [[PRIORITY] * 4, [MUTE, MUTE, RESOLVE]]


def test_stage_2_with_no_proposal() -> None:
    card = render_card(make_incident(), proposal=None, policy=RolloutPolicy(Stage(2)), now=NOW)
    assert actions(card.buttons) == [[PRIORITY] * 4, [MUTE, MUTE, RESOLVE]]


@pytest.mark.parametrize("stage", [3, 4])
def test_stage_3_and_up_add_investigate(stage: int) -> None:
    card = render_card(make_incident(), proposal=make_proposal(), policy=RolloutPolicy(Stage(stage)), now=NOW)
    assert actions(card.buttons) == [[APPROVE, REJECT, INVESTIGATE], [PRIORITY] * 4, [MUTE, MUTE, RESOLVE]]
    no_proposal = render_card(make_incident(), proposal=None, policy=RolloutPolicy(Stage(stage)), now=NOW)
    assert actions(no_proposal.buttons) == [[INVESTIGATE], [PRIORITY] * 4, [MUTE, MUTE, RESOLVE]]


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_resolved_incident_has_no_buttons(stage: int) -> None:
    incident = make_incident(status="resolved", resolved_by="Ann (@ann)", resolved_at=NOW)
    card = render_card(incident, proposal=make_proposal(), policy=RolloutPolicy(Stage(stage)), now=NOW)
    assert card.buttons == []
    assert "Resolved by Ann (@ann) at 2025-03-14 09:30 UTC" in visible(card.text)


@pytest.mark.parametrize("incident_id", [1, 99, 10**6, 10**9, 10**12])
def test_callback_data_fits_telegrams_64_bytes(incident_id: int) -> None:
    proposal = make_proposal(id=10**12, incident_id=incident_id)
    card = render_card(make_incident(id=incident_id), proposal=proposal, policy=RolloutPolicy(Stage(4)), now=NOW)
    data = callback_data(card.buttons)
    assert len(data) == 2 + 1 + 4 + 3
    for item in data:
        assert len(item.encode()) <= 64
        press = decode(item)
        assert press is not None and press.incident_id == incident_id
    assert decode(card.buttons[0][0][1]) == CardPress(APPROVE, incident_id, str(10**12))


def test_callback_data_round_trips_for_every_button() -> None:
    card = render_card(make_incident(), proposal=make_proposal(), policy=RolloutPolicy(Stage(3)), now=NOW)
    for data in callback_data(card.buttons):
        press = decode(data)
        assert press is not None and press.action in ACTIONS
        assert press.encode() == data


def test_encode_refuses_data_over_64_bytes() -> None:
    with pytest.raises(ValueError):
        CardPress(APPROVE, 1, "x" * 80).encode()


# --------------------------------------------------------------------------- decode


@pytest.mark.parametrize(
    "junk",
    ["", "x", "ap", "ap:1", "ap:abc:1", "zz:1:2", "ap:-1:2", "ap: 1:2", "ap:1:2:3", ":1:", "AP:1:2", "ap::7"],
)
def test_decode_refuses_junk(junk: str) -> None:
    assert decode(junk) is None


@pytest.mark.parametrize("junk", ["ap:1:" + "x" * 95, "ap:" + "1" * 96 + ":"])
def test_decode_refuses_100_byte_data(junk: str) -> None:
    assert len(junk.encode()) == 100
    assert decode(junk) is None


def test_decode_refuses_non_decimal_digits() -> None:
    assert decode("ap:²:1") is None
