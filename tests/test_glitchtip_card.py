"""What GlitchTip's answers add to a card: the right frames, redacted, escaped, within the limit."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from bot.card_render import TELEGRAM_TEXT_LIMIT, render_card
from bot.glitchtip.api import ApiEvent, ApiIssue, ApiMonitor
from bot.glitchtip.card import card_extras
from bot.glitchtip.details import IssueDetails, issue_details, monitor_details, stack_text, stored_issue_details
from bot.glitchtip.service import same_glitchtip, target_of
from bot.models import AlertKind
from bot.redact import Redactor
from bot.rollout import RolloutPolicy, Stage
from bot.telegram_emulator import parse_html, strip_html, utf16_len
from storage.glitchtip import GlitchTipLink
from tests.glitchtip_fake import sample
from tests.test_card import BIG, NOW, make_incident, make_proposal

REDACTOR = Redactor()


def details_of(event_file: str, **issue_fields) -> IssueDetails:
    issue = ApiIssue.model_validate({**sample("api_issue.json"), **issue_fields})
    return issue_details(issue, ApiEvent.model_validate(sample(event_file)), REDACTOR)


def link(details: IssueDetails | None = None, **fields) -> GlitchTipLink:
    values = dict(incident_id=42, kind="issue", external_id="1", org=None,
                  details=details.to_dict() if details else None, fetched_at=None, problem=None,
                  api_status="unresolved", resolve_state=None, resolve_note=None, comebacks=0, comeback_at=None)
    values.update(fields)
    return GlitchTipLink(**values)


def card_text(glitchtip_link: GlitchTipLink, **incident_fields) -> str:
    incident = make_incident(**incident_fields)
    card = render_card(incident, proposal=make_proposal(), policy=RolloutPolicy(Stage(2)), now=NOW,
                       extras=card_extras(glitchtip_link, incident))
    return card.text


# ---- frames: oldest first in GlitchTip, innermost first on the card


def test_real_event_gives_the_in_app_frames_innermost_first() -> None:
    details = details_of("api_issue_latest_event.json")
    assert [f.label() for f in details.frames] == ["send_event.py:6 in connect", "send_event.py:8 in <module>"]
    assert details.frames_in_app
    assert details.culprit == "__main__ in connect"  # the issue's culprit is "": the event's is used
    assert dict(details.runtime) == {"runtime": "CPython 3.11.7"}  # from contexts: no runtime tag
    assert details.release == "bot@0.0.1" and details.count == 1 and details.level == "error"


def test_without_in_app_marks_library_frames_are_skipped() -> None:
    # GlitchTip's own test event marks no frame in-app; five Django frames come before the app's own.
    details = details_of("event_python_zero_division.json")
    assert [f.label() for f in details.frames] == ["errors/views.py:18 in get"]
    assert not details.frames_in_app
    assert details.request == "GET http://localhost:8001/divide-zero/"  # the query string is left out
    assert dict(details.runtime) == {"runtime": "CPython 3.8.2", "browser": "Firefox 75.0", "os": "Ubuntu"}


def test_a_browser_event_keeps_its_one_frame_and_url() -> None:
    details = details_of("event_js_error_with_context.json")
    assert [f.label() for f in details.frames] == ["/polyfills.js:1660 in globalZoneAwareCallback"]
    assert details.request == "http://localhost:4201/"  # no method in the event
    assert dict(details.runtime) == {"browser": "Firefox 80.0", "os": "Ubuntu"}


def test_stack_text_reads_like_a_traceback_for_triage_and_owners() -> None:
    stack = stack_text(ApiEvent.model_validate(sample("api_issue_latest_event.json")), REDACTOR)
    assert 'File "/srv/app/send_event.py", line 8, in <module>' in stack
    assert stack.index("line 8") < stack.index("line 6")  # oldest first, as Python prints it
    assert stack.rstrip().endswith("ConnectionRefusedError: [Errno 111] Connection refused (probe 1)")


def test_secrets_from_the_api_are_masked_before_they_are_stored() -> None:
    event = sample("event_python_zero_division.json")
    request = next(e for e in event["entries"] if e["type"] == "request")
    request["data"]["url"] = "https://admin:hunter2secret@shop.example.com/pay"
    event["culprit"] = "charge(token=ghp_0123456789abcdefghijABCDEFGHIJ012345)"
    frame = event["entries"][0]["data"]["values"][-1]["stacktrace"]["frames"][-1]
    frame["context_line"] = 'db = connect("postgres://app:s3cr3tpass@db/prod")'
    issue = ApiIssue.model_validate({**sample("api_issue.json"), "culprit": ""})
    parsed = ApiEvent.model_validate(event)
    details = issue_details(issue, parsed, REDACTOR)
    stored = str(details.to_dict()) + stack_text(parsed, REDACTOR)
    for secret in ("hunter2secret", "ghp_0123456789abcdefghijABCDEFGHIJ012345", "s3cr3tpass"):
        assert secret not in stored
    assert "shop.example.com/pay" in details.request


def test_details_survive_their_json_round_trip() -> None:
    details = details_of("event_python_zero_division.json")
    assert IssueDetails.from_dict(details.to_dict()) == details


# ---- the card


def test_card_shows_glitchtips_count_culprit_frames_and_runtime() -> None:
    details = dataclasses.replace(details_of("event_python_zero_division.json"), count=21,
                                  last_seen=datetime(2026, 11, 25, 19, 40, tzinfo=UTC))
    text = strip_html(card_text(link(details), message=""))
    assert "×21 in GlitchTip" in text and "last 2026-11-25 19:40 UTC" in text
    assert "🎯 /divide-zero/" in text and "level error" in text
    assert "errors/views.py:18 in get" in text
    assert "🌐 GET http://localhost:8001/divide-zero/" in text
    assert "runtime CPython 3.8.2 · browser Firefox 75.0 · os Ubuntu" in text
    assert text.count("×") == 1  # GlitchTip's count replaces the bot's own receipt count


def test_card_says_why_details_are_missing() -> None:
    assert "on the way" in strip_html(card_text(link(None)))
    refused = strip_html(card_text(link(None, problem="GlitchTip refused the API token (401)")))
    assert "⚠️ GlitchTip: GlitchTip refused the API token (401)" in refused


def test_card_shows_the_resolve_in_glitchtip_and_comebacks() -> None:
    details = details_of("api_issue_latest_event.json")
    done = strip_html(card_text(link(details, resolve_state="done", resolve_note="(2026-11-25 20:00 UTC)"),
                                status="resolved", resolved_by="Ann", resolved_at=NOW))
    assert "✔️ Resolved in GlitchTip too (2026-11-25 20:00 UTC)" in done
    failed = strip_html(card_text(link(details, resolve_state="failed", resolve_note="gave up after 6 tries"),
                                  status="resolved", resolved_by="Ann", resolved_at=NOW))
    assert "⚠️ Not resolved in GlitchTip: gave up after 6 tries" in failed
    back = strip_html(card_text(link(details, comebacks=1, comeback_at=NOW)))
    assert "♻️ Came back in GlitchTip at 2025-03-14 09:30 UTC" in back


def test_hostile_huge_details_stay_escaped_and_within_the_limit_with_the_proposal_kept() -> None:
    frame_files = [BIG[:200], BIG[:200], BIG[:200]]
    details = dataclasses.replace(
        details_of("api_issue_latest_event.json"), culprit=BIG[:300], request=BIG[:300], release=BIG[:120],
        runtime=(("runtime", BIG[:80]), ("browser", BIG[:80]), ("os", BIG[:80])),
        frames=tuple(dataclasses.replace(f, file=name, function=BIG[:120])
                     for f, name in zip(details_of("api_issue_latest_event.json").frames * 2, frame_files, strict=False)),
    )
    text = card_text(link(details, problem=BIG[:300], comebacks=3, comeback_at=NOW), title=BIG, message=BIG,
                     project=BIG, environment=BIG, release=BIG, server=BIG)
    assert len(text) <= TELEGRAM_TEXT_LIMIT and utf16_len(strip_html(text)) <= TELEGRAM_TEXT_LIMIT
    assert "<script" not in text.lower()
    parse_html(text)  # Telegram accepts the HTML
    assert "➡️ Proposal: restart_redis" in strip_html(text)


def test_monitor_card_names_the_monitor_and_the_last_checks_reason() -> None:
    from tests.glitchtip_fake import FakeGlitchTip

    fake = FakeGlitchTip()
    monitor = ApiMonitor.model_validate(fake.add_monitor("acme", "17"))
    details = monitor_details(monitor, REDACTOR)
    incident_fields = dict(kind=AlertKind.UPTIME_DOWN, fingerprint="glitchtip:gt.example.com:monitor:17",
                           title="Booking API health", message="The monitored site has gone down.")
    monitor_link = dataclasses.replace(link(None, kind="monitor", org="acme"), details=details.to_dict())
    text = strip_html(card_text(monitor_link, **incident_fields))
    assert "📡 Monitor Booking API health · get https://booking.example.com/health" in text
    assert "down since 2026-11-25 19:00 UTC" in text
    assert "last check 2026-11-25 19:01 UTC: timeout" in text
    unknown = strip_html(card_text(link(None, kind="monitor", problem="GlitchTip's API does not have it (404)"),
                                   **incident_fields))
    assert "ℹ️ Monitor details unknown: GlitchTip's API does not have it (404)" in unknown


# ---- which incidents are GlitchTip's


def test_targets_come_from_the_fingerprint_and_link() -> None:
    issue = target_of("glitchtip", AlertKind.ERROR, "glitchtip:gt.example.com:issue:4242|fix:abc", "4242",
                      "https://gt.example.com/acme/issues/4242")
    assert issue is not None and (issue.kind, issue.external_id) == ("issue", "4242")
    monitor = target_of("glitchtip", AlertKind.UPTIME_DOWN, "glitchtip:gt.example.com:monitor:17", "17",
                        "https://gt.example.com/acme/uptime-monitors/17")
    assert monitor is not None and (monitor.kind, monitor.org) == ("monitor", "acme")
    assert target_of("generic", AlertKind.ERROR, "title:abc", None, None) is None
    assert target_of("glitchtip", AlertKind.ERROR, "title:abc", None, None) is None  # no link: nothing to ask
    assert target_of("glitchtip", AlertKind.UPTIME_UP, "glitchtip:h:monitor:17", "17", None) is None


def test_an_issue_of_another_glitchtip_is_recognised() -> None:
    assert same_glitchtip("http://127.0.0.1:8000/bot-project/issues/1", "http://127.0.0.1:8000/test-org/issues/1")
    assert not same_glitchtip("https://other.example.com/x/issues/1", "https://gt.example.com/acme/issues/1")
    assert same_glitchtip(None, "https://gt.example.com/acme/issues/1")


def test_stored_details_that_cannot_be_read_are_none_so_card_report_and_issue_go_without_them() -> None:
    assert stored_issue_details(None) is None
    assert stored_issue_details(dataclasses.replace(link(kind="monitor"), details={"name": "api"})) is None
    assert stored_issue_details(dataclasses.replace(link(), details={"first_seen": "not a date", "frames": 7})) is None
    good = link(details=details_of("api_issue_latest_event.json"))
    assert stored_issue_details(good) == IssueDetails.from_dict(good.details or {})
