"""Which alerts are the same problem (fingerprints), and how incoming bodies are parsed or refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.fingerprint import (
    given_fingerprint,
    glitchtip_fingerprint,
    glitchtip_ids,
    normalise_title,
    title_fingerprint,
)
from bot.ingest import MESSAGE_MAX, STACK_MAX, TITLE_MAX, PayloadError, parse_payload
from bot.models import AlertKind

GLITCHTIP = Path(__file__).resolve().parent / "data" / "glitchtip"


def sample(name: str) -> dict[str, Any]:
    return json.loads((GLITCHTIP / name).read_text(encoding="utf-8"))


def body(data: object) -> bytes:
    return json.dumps(data).encode()


def refused(source: str, raw: bytes) -> PayloadError:
    with pytest.raises(PayloadError) as info:
        parse_payload(source, raw)
    return info.value


# --------------------------------------------------------------------------- fingerprints


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("timeout after 3012 ms", "timeout after 2999 ms"),
        ("Request took 1.25s (limit 1s)", "Request took 17.5s (limit 1s)"),
        ("User 'alice' not found", "User 'bob' not found"),
        ('Unknown column "created_at" in field list', 'Unknown column "updatedAt" in field list'),
        ("Cannot read `slots` of undefined", "Cannot read `items` of undefined"),
        (
            "Booking 3fa85f64-5717-4562-b3fc-2c963f66afa6 failed",
            "Booking 9C4E1B2A-0D3F-4A5B-8C7D-6E5F4A3B2C1D failed",
        ),
        ("Segfault at 0x7ffe5a3b2c10", "Segfault at 0xdeadbeef"),
        ("Order 5f2b8c9e1a3d4f6b7c8d9e0f not found", "Order 64a1f0c2b3d4e5f6a7b8c9d0 not found"),
        ("commit 9fceb02d0ae598e95dc970b74767f19372d61af8 missing", "commit 1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b missing"),
        ("job  42   failed\n", "job 7 failed"),  # whitespace does not matter either
        ("TIMEOUT after 5 ms", "timeout after 6 ms"),
    ],
)
def test_titles_differing_only_in_values_group(first: str, second: str) -> None:
    assert normalise_title(first) == normalise_title(second)
    assert title_fingerprint(first, "api", "production") == title_fingerprint(second, "api", "production")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Error: connect ECONNREFUSED 127.0.0.1:6379", "Error: connect ETIMEDOUT 127.0.0.1:6379"),
        ("TypeError: x is not a function", "ReferenceError: x is not defined"),
        ("ENOSPC: no space left on device", "EACCES: permission denied"),
        ("Cannot find module 'express'", "Cannot find package 'express'"),
        ("Redis connection lost", "Postgres connection lost"),
        ("disk full on db", "disk full on web"),
    ],
)
def test_different_errors_stay_apart(first: str, second: str) -> None:
    assert normalise_title(first) != normalise_title(second)
    assert title_fingerprint(first, "api", "production") != title_fingerprint(second, "api", "production")


def test_words_containing_digits_or_hex_letters_are_not_mangled() -> None:
    # Error codes and ordinary words that happen to be hex-looking stay readable.
    assert normalise_title("ENOSPC: no space left on device") == "enospc: no space left on device"
    assert "decade" in normalise_title("a decade of added cafe beds")
    assert normalise_title("HTTP 502 Bad Gateway").startswith("http <n> bad gateway")


def test_same_title_in_another_project_or_environment_is_another_problem() -> None:
    title = "Error: connect ECONNREFUSED 127.0.0.1:6379"
    base = title_fingerprint(title, "api", "production")
    assert title_fingerprint(title, "worker", "production") != base
    assert title_fingerprint(title, "api", "staging") != base
    assert title_fingerprint(title, None, None) != base


def test_given_fingerprint_wins_over_the_title() -> None:
    a = parse_payload("generic", body({"title": "Disk full on db-1", "fingerprint": "disk-full"})).alerts[0]
    b = parse_payload("generic", body({"title": "Something else entirely", "fingerprint": "disk-full"})).alerts[0]
    c = parse_payload("generic", body({"title": "Disk full on db-1", "fingerprint": "disk-full", "project": "x"}))
    assert a.fingerprint == b.fingerprint == given_fingerprint("disk-full", None)
    assert c.alerts[0].fingerprint != a.fingerprint


def test_glitchtip_ids_from_links() -> None:
    assert glitchtip_ids("https://GT.example.com/acme/issues/4242") == ("gt.example.com", "issue", "4242")
    assert glitchtip_ids("https://gt.example.com/acme/issues/4242/") == ("gt.example.com", "issue", "4242")
    assert glitchtip_ids("https://gt.example.com/acme/uptime-monitors/17") == ("gt.example.com", "monitor", "17")
    for link in (None, "", "/acme/issues/1", "https://gt.example.com/acme/issues/abc", "not a url"):
        assert glitchtip_ids(link) is None


# --------------------------------------------------------------------------- GlitchTip bodies


@pytest.mark.parametrize("name", sorted(p.name for p in GLITCHTIP.glob("*.json")))
def test_every_recorded_glitchtip_body_parses(name: str) -> None:
    parsed = parse_payload("glitchtip", (GLITCHTIP / name).read_bytes())
    if name == "test_notification.json":
        assert parsed.alerts == []
        assert parsed.test_notification
        return
    assert parsed.test_notification is None
    assert parsed.alerts
    for alert in parsed.alerts:
        assert alert.source == "glitchtip"
        assert alert.title
        assert alert.fingerprint.startswith("glitchtip:")
        assert alert.external_id and alert.external_id in alert.fingerprint


def test_v1_with_alias_and_sections() -> None:
    (alert,) = parse_payload("glitchtip", body(sample("issue_alert_v1.json"))).alerts
    assert alert.kind is AlertKind.ERROR
    assert alert.title == "Error: connect ECONNREFUSED 127.0.0.1:6379"
    assert alert.message == "processBookingQueue(worker/queue)"
    assert (alert.project, alert.environment, alert.server, alert.release) == (
        "ai-admin-worker", "production", "web-1", "ai-admin-worker@2.4.1",
    )
    assert alert.level == "error"
    assert alert.url == "https://glitchtip.example.com/acme/issues/4242"
    assert alert.fingerprint == glitchtip_fingerprint("glitchtip.example.com", "issue", "4242")
    assert alert.tags["short_id"] == "AI-ADMIN-WORKER-3F"


def test_v2_without_alias_or_sections_keeps_extra_fields_as_tags() -> None:
    (alert,) = parse_payload("glitchtip", body(sample("issue_alert_v2.json"))).alerts
    assert alert.title == "TypeError: Cannot read properties of undefined (reading 'slots')"
    assert alert.project == "ai-admin-api" and alert.server is None
    assert alert.tags == {"company_id": "962302"}  # no short id without sections
    assert alert.external_id == "4310"


def test_batch_of_three_although_the_text_says_five() -> None:
    data = sample("issue_alert_batch.json")
    assert "(5 issues)" in data["text"]
    alerts = parse_payload("glitchtip", body(data)).alerts
    assert len(alerts) == 3
    assert [a.external_id for a in alerts] == ["4401", "4402", "4403"]
    assert [a.tags.get("short_id") for a in alerts] == ["AI-ADMIN-WORKER-41", "AI-ADMIN-API-42", "AI-ADMIN-WORKER-43"]
    assert len({a.fingerprint for a in alerts}) == 3
    assert alerts[0].message == ""  # "text": null
    assert alerts[2].server == "web-2" and alerts[2].environment is None


def test_same_issue_posted_twice_has_one_fingerprint() -> None:
    first = parse_payload("glitchtip", body(sample("issue_alert_v1.json"))).alerts[0]
    again = sample("issue_alert_v1.json")
    again["attachments"][0]["title"] = "Error: connect ECONNREFUSED 127.0.0.1:6380"  # GlitchTip retitled it
    assert parse_payload("glitchtip", body(again)).alerts[0].fingerprint == first.fingerprint


def test_uptime_down_and_up_share_the_monitor_fingerprint() -> None:
    (down,) = parse_payload("glitchtip", body(sample("uptime_down.json"))).alerts
    (up,) = parse_payload("glitchtip", body(sample("uptime_up.json"))).alerts
    assert down.kind is AlertKind.UPTIME_DOWN
    assert up.kind is AlertKind.UPTIME_UP
    assert down.fingerprint == up.fingerprint == glitchtip_fingerprint("glitchtip.example.com", "monitor", "17")
    assert down.external_id == "17"
    assert down.level is None  # no colour on uptime alerts


def test_uptime_alert_recognised_by_text_without_a_monitor_link() -> None:
    data = sample("uptime_down.json")
    data["attachments"][0]["title_link"] = None
    (alert,) = parse_payload("glitchtip", body(data)).alerts
    assert alert.kind is AlertKind.UPTIME_DOWN
    assert alert.fingerprint.startswith("title:")


def test_test_notification_opens_nothing() -> None:
    parsed = parse_payload("glitchtip", body(sample("test_notification.json")))
    assert parsed.alerts == []
    assert parsed.test_notification == "This is a test notification from GlitchTip"


def test_null_text_and_fields_and_unknown_keys_are_accepted() -> None:
    data = {
        "text": None,
        "brand_new_key": {"nested": [1, 2, 3]},
        "attachments": [
            {"title": "Error: boom", "title_link": None, "text": None, "fields": None, "color": None,
             "unknown": True},
        ],
        "sections": None,
    }
    (alert,) = parse_payload("glitchtip", body(data)).alerts
    assert alert.title == "Error: boom"
    assert alert.message == "" and alert.project is None and alert.url is None
    assert alert.fingerprint == title_fingerprint("Error: boom", None, None)


def test_field_with_null_value_is_ignored() -> None:
    data = sample("issue_alert_v1.json")
    data["attachments"][0]["fields"] = [
        {"title": "Project", "value": None}, {"title": "Browser", "value": None}, {"title": "OS", "value": "Linux"},
    ]
    (alert,) = parse_payload("glitchtip", body(data)).alerts
    assert alert.project is None
    assert "browser" not in alert.tags
    assert alert.tags["os"] == "Linux"


# --------------------------------------------------------------------------- generic bodies


def test_generic_minimal_and_full() -> None:
    (minimal,) = parse_payload("generic", body({"title": "  DiskFull: /var is full  "})).alerts
    assert minimal.title == "DiskFull: /var is full"
    assert minimal.source == "generic" and minimal.kind is AlertKind.ERROR
    assert minimal.count == 1 and minimal.level is None

    full = {
        "title": "Error: connect ECONNREFUSED 127.0.0.1:6379", "message": "queue worker", "level": "WARN",
        "project": "api", "environment": "production", "release": "1.2.3", "server": "web-1",
        "url": "https://logs.example.com/x", "stacktrace": ["at a (a.js:1)", "at b (b.js:2)"], "count": 4,
        "something_we_do_not_know": 1,
    }
    (alert,) = parse_payload("generic", body(full)).alerts
    assert alert.level == "warning"
    assert alert.stacktrace == "at a (a.js:1)\nat b (b.js:2)"
    assert alert.count == 4 and alert.server == "web-1"


@pytest.mark.parametrize(("given", "stored"), [("critical", "fatal"), ("FATAL", "fatal"), ("Info", "info")])
def test_generic_levels_are_normalised(given: str, stored: str) -> None:
    (alert,) = parse_payload("generic", body({"title": "x", "level": given})).alerts
    assert alert.level == stored


def test_generic_null_optional_fields() -> None:
    data = {"title": "x", "message": None, "level": None, "stacktrace": None, "project": None}
    (alert,) = parse_payload("generic", body(data)).alerts
    assert alert.message == "" and alert.stacktrace == "" and alert.level is None


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("source", ["glitchtip", "generic"])
@pytest.mark.parametrize("raw", [b"not json", b"{\"title\": ", b"", b"\xff\xfe\x00"])
def test_not_json_is_400_with_the_reason(source: str, raw: bytes) -> None:
    error = refused(source, raw)
    assert error.status == 400
    assert "not JSON" in error.reason or "not UTF-8" in error.reason
    assert "line 1" in error.reason or "UTF-8" in error.reason


def test_generic_unknown_level_is_422_naming_level() -> None:
    error = refused("generic", body({"title": "x", "level": "loud"}))
    assert error.status == 422
    assert error.reason.startswith("level:")
    assert "fatal" in error.reason and "debug" in error.reason


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"message": "no title"}, "title"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 2001}, "title"),
        ({"title": "x", "count": 0}, "count"),
        ({"title": "x", "count": "many"}, "count"),
        ({"title": "x", "count": True}, "count"),  # a bool is a mistake in the sender, not 1
        ({"title": "x", "count": 2.5}, "count"),
        ({"title": "x", "project": ["a"]}, "project"),
        ([1, 2], "body"),
        (None, "body"),
        ("just a string", "body"),
    ],
)
def test_generic_wrong_shape_is_422_naming_the_field(data: object, field: str) -> None:
    error = refused("generic", body(data))
    assert error.status == 422
    assert error.reason.startswith(f"{field}:"), error.reason


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"text": "GlitchTip Alert"}, "attachments"),
        ({"attachments": []}, "attachments"),
        ({"attachments": [{"title": ""}]}, "attachments.0.title"),
        ({"attachments": [{"text": "no title"}]}, "attachments.0.title"),
        ({"attachments": [{"title": "x", "fields": [{"value": "v"}]}]}, "attachments.0.fields.0.title"),
        ({"attachments": "nope"}, "attachments"),
        ([], "body"),
    ],
)
def test_glitchtip_wrong_shape_is_422_naming_the_field(data: object, field: str) -> None:
    error = refused("glitchtip", body(data))
    assert error.status == 422
    assert error.reason.startswith(f"{field}:"), error.reason


def test_unknown_source_is_404() -> None:
    error = refused("sentry", body({"title": "x"}))
    assert error.status == 404
    assert "sentry" in error.reason


# --------------------------------------------------------------------------- bounds at parse


def test_glitchtip_long_text_is_cut_with_the_cut_marked_never_refused() -> None:
    data = sample("issue_alert_v2.json")
    att = data["attachments"][0]
    att["title"] = "9" * 40_000
    att["text"] = "culprit " * 5_000
    att["fields"] += [{"title": f"tag{i}", "value": "v" * 5_000} for i in range(200)]
    data["sections"] = [{"activitySubtitle": "[View Issue X-1](y) " * 10_000}] * 12
    (alert,) = parse_payload("glitchtip", body(data)).alerts
    assert len(alert.title) <= TITLE_MAX and alert.title.startswith("9" * 1_900)
    assert alert.title.endswith("chars cut]") and "38," in alert.title  # says how much was cut
    assert len(alert.message) <= MESSAGE_MAX and alert.message.startswith("culprit culprit")
    assert alert.project == "ai-admin-api"  # the fields GlitchTip sends first are kept
    assert 0 < len(alert.tags) <= 50
    assert all(len(value) <= 1000 for value in alert.tags.values())


def test_more_issues_than_glitchtip_ever_sends_is_refused_naming_the_limit() -> None:
    one = sample("issue_alert_v2.json")["attachments"][0]
    error = refused("glitchtip", body({"text": "GlitchTip Alert", "attachments": [one] * 5_000}))
    assert error.status == 422
    assert error.reason.startswith("attachments: at most 10 issues per body") and "5000" in error.reason
    assert len(parse_payload("glitchtip", body({"attachments": [one] * 10})).alerts) == 10


def test_generic_stack_keeps_its_head_and_its_crashing_end() -> None:
    frames = ["Traceback (most recent call last):"] + [f'  File "app.py", line {i}, in f{i}' for i in range(20_000)]
    frames.append("ZeroDivisionError: division by zero")
    (alert,) = parse_payload("generic", body({"title": "ZeroDivisionError", "stacktrace": frames,
                                              "message": "m" * 50_000})).alerts
    assert len(alert.stacktrace) <= STACK_MAX
    assert alert.stacktrace.startswith("Traceback (most recent call last):")
    assert alert.stacktrace.endswith("ZeroDivisionError: division by zero")
    assert "chars cut]" in alert.stacktrace
    assert len(alert.message) == MESSAGE_MAX and alert.message.endswith("chars cut]")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"title": "x", "count": 1e23}',
        b'{"title": "x", "count": 100000000000000000000000000000}',
        b'{"title": "x", "count": 1000000001}',
        b'{"title": "x", "count": 1.5}',
        b'{"title": "x", "count": -1}',
        b'{"title": "x", "count": "' + b"9" * 5_000 + b'"}',
    ],
)
def test_generic_count_is_bounded_422(raw: bytes) -> None:
    error = refused("generic", raw)
    assert error.status == 422 and error.reason.startswith("count:"), error.reason


def test_generic_count_up_to_a_billion_is_taken() -> None:
    (alert,) = parse_payload("generic", b'{"title": "x", "count": 1000000000}').alerts
    assert alert.count == 1_000_000_000


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"title": "x", "count": ' + b"1" * 5_000 + b"}", "digits"),
        (b'{"title": "x", "count": NaN}', "NaN"),
        (b'{"title": "x", "count": Infinity}', "Infinity"),
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (b'{"title": "x", "extra": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", "nested"),
        ('{"title": "é"}'.encode("utf-16"), "UTF-8"),
    ],
)
def test_bodies_python_would_choke_on_are_400_with_the_reason(raw: bytes, words: str) -> None:
    for source in ("generic", "glitchtip"):
        error = refused(source, raw)
        assert error.status == 400 and words in error.reason, error.reason


def test_moderate_nesting_in_unknown_keys_is_fine() -> None:
    raw = b'{"title": "x", "extra": ' + b'{"a": ' * 20 + b"1" + b"}" * 20 + b"}"
    assert parse_payload("generic", raw).alerts[0].title == "x"


def test_lone_surrogates_become_question_marks_and_pairs_stay_characters() -> None:
    raw = rb'{"title": "FileNotFoundError: /tmp/\udcff \ud83d\ude00", "message": "\ud800", "stacktrace": ["\udfff"]}'
    (alert,) = parse_payload("generic", raw).alerts
    assert alert.title == "FileNotFoundError: /tmp/? \U0001F600"
    assert alert.message == "?" and alert.stacktrace == "?"
    data = sample("issue_alert_v1.json")
    data["attachments"][0]["fields"].append({"title": "path\udcff", "value": "\udcff"})
    (glitch,) = parse_payload("glitchtip", json.dumps(data).encode()).alerts
    assert glitch.tags["path?"] == "?"
