"""GlitchTip's API end to end: the real app, the Bot API emulator and the fake GlitchTip, over HTTP.

The webhook body is the one a real GlitchTip posted (tests/data/glitchtip/real_issue_alert.json);
the API answers are real captures (tests/glitchtip_fake.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from bot.callback_data import RESOLVE
from bot.glitchtip.service import GlitchTipService
from bot.telegram_emulator import strip_html
from storage.audit import AuditRepository
from storage.glitchtip import GlitchTipRepository
from storage.incidents import IncidentRepository
from tests.conftest import CHAT_ID, glitchtip_sample
from tests.glitchtip_fake import TOKEN, FakeGlitchTip
from tests.test_e2e_decisions import button

REAL_ALERT = "real_issue_alert.json"  # title_link http://127.0.0.1:8000/test-org/issues/1


@pytest.fixture
async def fake():
    server = await FakeGlitchTip().start()
    server.add_issue("1")
    yield server
    await server.stop()


@pytest.fixture
def start_app(start_app):
    """The app with its GlitchTip worker's waits made short: a pause for an outage starts at
    0.05 s instead of 5 s (and grows to 0.2 s, not 5 minutes); a job's calls are paced at 50 a
    second, not 5; jobs nothing wakes the worker for (a retry after an outage, say) are looked for
    within 0.1 s instead of `poll_s`. What each wait is for stays tested: the backoff's growth and cap in
    tests/test_http_jobs.py, the pacing and a `Retry-After` below, a 60 s `Retry-After` in
    tests/test_glitchtip_worker.py."""

    async def start(**settings: Any):
        h = await start_app(**settings)
        if h.app.glitchtip is not None:
            quicken(h.app.glitchtip)
        return h

    return start


def quicken(service: GlitchTipService, *, requests_per_s: float = 50.0) -> None:
    service.outage_backoff = (0.05, 0.2)
    service.requests_per_s = requests_per_s
    service.poll_s = 0.1
    service.notify()  # the first idle sleep was `poll_s` long: start again with the short one


def api(fake: FakeGlitchTip, **more: Any) -> dict[str, Any]:
    return {"glitchtip_url": fake.base_url, "glitchtip_token": TOKEN, **more}


def alert_for_issue(issue_id: str, title: str) -> bytes:
    """The real webhook body, about another issue of the same GlitchTip."""
    body = json.loads(glitchtip_sample(REAL_ALERT))
    body["attachments"][0]["title"] = title
    body["attachments"][0]["title_link"] = f"http://127.0.0.1:8000/test-org/issues/{issue_id}"
    body.pop("sections")
    return json.dumps(body).encode()


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def no_jobs_pending(h, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while await GlitchTipRepository(h.app.db).pending_count():
        assert time.monotonic() < deadline, "GlitchTip jobs still pending"
        await asyncio.sleep(0.02)


def chat_messages(h, needle: str) -> list[Any]:
    return [m for m in h.emu.messages(CHAT_ID) if m.from_bot and needle in m.plain_text]


async def test_the_first_card_shows_culprit_crashing_frames_and_glitchtips_count(start_app, fake):
    h = await start_app(**api(fake))
    assert (await h.post("glitchtip", glitchtip_sample(REAL_ALERT))).status_code == 202
    [card] = await h.wait_cards(1)
    first = strip_html(card.history[0])  # as first sent: the API answered within the budget
    assert "__main__ in connect" in first  # GlitchTip's webhook said null
    assert "send_event.py:6 in connect" in first and "send_event.py:8 in <module>" in first
    assert first.index("send_event.py:6") < first.index("send_event.py:8")  # the crashing frame first
    assert "×1 in GlitchTip" in first and "level error" in first and "runtime CPython 3.11.7" in first
    # Triage read the richer text: the stored incident carries the stack it was triaged on.
    incident = await IncidentRepository(h.app.db).get(1)
    assert incident is not None and incident.message == "__main__ in connect"
    assert 'File "/srv/app/send_event.py", line 6, in connect' in incident.stacktrace
    assert {s.authorization for s in fake.seen} == {f"Bearer {TOKEN}"}


async def test_the_count_follows_glitchtip_within_one_refresh(start_app, fake):
    h = await start_app(**api(fake))
    await h.post("glitchtip", glitchtip_sample(REAL_ALERT))
    [card] = await h.wait_cards(1)
    fake.add_events("1", 20)  # GlitchTip sends no webhook for these
    assert await h.app.glitchtip.schedule_refresh() == 1  # what the scheduler runs every 5 minutes
    edited = await h.wait_text(card.message_id, "×21 in GlitchTip")
    assert "×1 in GlitchTip" not in edited.plain_text
    assert len(h.cards()) == 1
    # Nothing new in GlitchTip: a refresh reads the issue and leaves the card alone.
    edits = h.emu.message(CHAT_ID, card.message_id).edit_count
    issue_reads = len(fake.calls("GET", "/api/0/issues/1/"))
    await h.app.glitchtip.schedule_refresh()
    await wait_until(lambda: len(fake.calls("GET", "/api/0/issues/1/")) > issue_reads)
    await no_jobs_pending(h)
    assert h.emu.message(CHAT_ID, card.message_id).edit_count == edits
    assert await h.app.db.fetchall("SELECT * FROM outbox WHERE state = 'pending'") == []


async def test_a_refresh_of_many_issues_is_a_trickle_not_a_burst(start_app, fake):
    """Each job's call waits for its slot (`requests_per_s`): four workers in parallel still ask
    GlitchTip one call per slot, not all at once."""
    for n in ("2", "3", "4", "5"):
        fake.add_issue(n)
    h = await start_app(**api(fake))
    quicken(h.app.glitchtip, requests_per_s=10.0)
    for n in ("1", "2", "3", "4", "5"):
        await h.post("glitchtip", alert_for_issue(n, f"ConnectionRefusedError: probe {n}"))
    await h.wait_cards(5)
    await no_jobs_pending(h)
    before = len(fake.seen)
    assert await h.app.glitchtip.schedule_refresh() == 5
    reads = await wait_until(lambda: len(r := [s for s in fake.seen[before:]
                                               if re.fullmatch(r"/api/0/issues/\d+/", s.path)]) == 5 and r)
    gaps = [b.at - a.at for a, b in zip(reads, reads[1:], strict=False)]
    assert sum(gaps) >= 0.3, gaps  # 4 slots of 0.1 s; unpaced, the four workers' reads come within ~0.1 s


async def test_resolve_is_heard_by_glitchtip_so_a_comeback_alerts_again(start_app, fake):
    h = await start_app(**api(fake))
    await h.post("glitchtip", glitchtip_sample(REAL_ALERT))
    [card] = await h.wait_cards(1)
    await h.press(card.message_id, button(card, f"{RESOLVE}:"))
    await wait_until(lambda: fake.puts("1"))
    assert fake.puts("1") == [{"status": "resolved"}]
    done = await h.wait_text(card.message_id, "Resolved in GlitchTip too")
    assert "Resolved by Ann" in done.plain_text
    actions = [e.action for e in await AuditRepository(h.app.db).list(incident_id=1)]
    assert "incident.resolve" in actions and "glitchtip.resolve" in actions
    # GlitchTip now alerts again when the error comes back: a regression card.
    fake.add_events("1", 1, reopen=True)
    await h.post("glitchtip", glitchtip_sample(REAL_ALERT))
    cards = await h.wait_cards(2)
    assert "Regression" in cards[1].plain_text and "×2 in GlitchTip" in cards[1].plain_text


async def test_api_down_the_whole_run_every_card_arrives_and_details_land_when_it_is_back(start_app, fake):
    for n in ("2", "3"):
        fake.add_issue(n)
    await fake.go_down()
    h = await start_app(**api(fake))
    for n in ("1", "2", "3"):
        assert (await h.post("glitchtip", alert_for_issue(n, f"ConnectionRefusedError: probe {n}"))).status_code == 202
    cards = await h.wait_cards(3)
    for card in cards:  # each first card says plainly why its details are missing
        assert "GlitchTip's API did not answer (ConnectError" in strip_html(card.history[0])
        assert "send_event.py" not in card.plain_text
    await fake.come_back()
    for card in cards:
        landed = await h.wait_text(card.message_id, "send_event.py:6 in connect")
        assert "did not answer" not in landed.plain_text and "×1 in GlitchTip" in landed.plain_text
    assert len(h.cards()) == 3
    jobs = await h.app.db.fetchall("SELECT state, attempts FROM glitchtip_jobs")
    assert [(j["state"], j["attempts"]) for j in jobs] == [("done", 0)] * 3  # the outage spent no attempt


async def test_a_restart_during_an_outage_loses_no_enrichment(start_app, fake):
    await fake.go_down()
    h = await start_app(**api(fake))
    await h.post("glitchtip", glitchtip_sample(REAL_ALERT))
    [card] = await h.wait_cards(1)
    await h.app.stop()  # the enrich job is a row
    await fake.come_back()
    h2 = await start_app(**api(fake))
    landed = await h2.wait_text(card.message_id, "send_event.py:6 in connect")
    assert "×1 in GlitchTip" in landed.plain_text and len(h2.cards()) == 1


async def test_a_slow_api_delays_the_first_card_at_most_the_budget_then_edits_it(start_app, fake):
    fake.fail(None, times=1, path="/api/0/issues/1/", delay_s=5.0)  # the first read answers after 5 s
    h = await start_app(**api(fake, glitchtip_enrich_budget_s=0.5))
    started = time.monotonic()
    await h.post("glitchtip", glitchtip_sample(REAL_ALERT))
    [card] = await h.wait_cards(1)
    assert time.monotonic() - started < 4.0  # it did not wait for the 5 s answer
    first = strip_html(card.history[0])
    assert "on the way" in first and "send_event.py" not in first
    await h.wait_text(card.message_id, "send_event.py:6 in connect")  # the enrich job's read is quick


async def test_a_429_is_waited_out_as_glitchtip_asks_without_spending_attempts(start_app, fake):
    """The first card's read is limited: the worker's job waits out `Retry-After`, though its own
    backoff is shorter. (A limit met by the job itself: tests/test_glitchtip_worker.py, for 60 s.)"""
    fake.fail(429, times=1, retry_after="1")
    h = await start_app(**api(fake))  # its backoff is 0.05 s: shorter than GlitchTip asks
    await h.post("glitchtip", glitchtip_sample(REAL_ALERT))
    [card] = await h.wait_cards(1)
    assert "rate limited by GlitchTip (429" in strip_html(card.history[0])
    await h.wait_text(card.message_id, "send_event.py:6 in connect")
    first, second = fake.seen[:2]
    assert second.at - first.at >= 0.9
    [row] = await h.app.db.fetchall("SELECT state, attempts FROM glitchtip_jobs")
    assert (row["state"], row["attempts"]) == ("done", 0)


async def test_a_refused_token_is_said_once_and_not_retried_forever(start_app, fake):
    fake.token = "the-token-glitchtip-knows"
    fake.add_issue("2")
    h = await start_app(**api(fake))
    await h.post("glitchtip", alert_for_issue("1", "ConnectionRefusedError: probe 1"))
    [said] = await wait_until(lambda: chat_messages(h, "Profile → Auth Tokens"))  # the message
    assert "GlitchTip refused the API token" in said.plain_text
    assert "event:read" in said.plain_text and "event:write" in said.plain_text
    calls = len(fake.seen)
    # A second incident while the token is refused: its card says why at once, without a call.
    await h.post("glitchtip", alert_for_issue("2", "ConnectionRefusedError: probe 2"))
    await wait_until(lambda: len([c for c in h.cards() if c.buttons]) == 2 and all(
        "refused the API token (401); see the message" in c.plain_text for c in h.cards() if c.buttons))
    # The jobs wait for a re-check instead of hammering GlitchTip: more worker steps, no more calls.
    for _ in range(5):
        await h.app.glitchtip.step()
    assert len(fake.seen) == calls
    assert len(chat_messages(h, "Profile → Auth Tokens")) == 1  # said once
    rows = await h.app.db.fetchall("SELECT state, attempts FROM glitchtip_jobs")
    assert [(r["state"], r["attempts"]) for r in rows] == [("pending", 0)] * 2  # kept, not spent


async def test_a_token_that_cannot_resolve_says_so_on_the_card(start_app, fake):
    fake.scopes = ("event:read",)
    h = await start_app(**api(fake))
    await h.post("glitchtip", glitchtip_sample(REAL_ALERT))
    [card] = await h.wait_cards(1)
    assert "send_event.py:6 in connect" in card.plain_text  # reading works
    await h.press(card.message_id, button(card, f"{RESOLVE}:"))
    edited = await h.wait_text(card.message_id, "lacks event:write")
    assert "Resolving in GlitchTip" in edited.plain_text
    [said] = await wait_until(lambda: chat_messages(h, "cannot resolve issues"))
    assert "event:write" in said.plain_text
    assert fake.issues["1"]["status"] == "unresolved"


async def test_a_comeback_of_an_open_incident_is_marked_and_audited(start_app, fake):
    h = await start_app(**api(fake))
    await h.post("glitchtip", glitchtip_sample(REAL_ALERT))
    [card] = await h.wait_cards(1)
    fake.issues["1"]["status"] = "resolved"  # someone resolved it in GlitchTip, not here
    await h.app.glitchtip.schedule_refresh()
    await h.wait_text(card.message_id, "Resolved in GlitchTip; still open here")
    fake.add_events("1", 1, reopen=True)  # the error is back: GlitchTip reopens and alerts again
    await h.post("glitchtip", glitchtip_sample(REAL_ALERT))
    back = await h.wait_text(card.message_id, "Came back in GlitchTip")
    assert "still open here" not in back.plain_text and len(h.cards()) == 1
    comebacks = [e for e in await AuditRepository(h.app.db).list(incident_id=1) if e.action == "glitchtip.comeback"]
    assert len(comebacks) == 1 and comebacks[0].detail["seen_by"] == "alert"


async def test_a_comeback_seen_only_in_the_api_is_marked_too(start_app, fake):
    h = await start_app(**api(fake))
    await h.post("glitchtip", glitchtip_sample(REAL_ALERT))
    [card] = await h.wait_cards(1)
    fake.issues["1"]["status"] = "resolved"
    await h.app.glitchtip.schedule_refresh()
    await h.wait_text(card.message_id, "still open here")
    fake.add_events("1", 4, reopen=True)  # no alert rule fired, but the refresh sees it reopened
    await h.app.glitchtip.schedule_refresh()
    back = await h.wait_text(card.message_id, "Came back in GlitchTip")
    assert "×5 in GlitchTip" in back.plain_text
    [row] = [e for e in await AuditRepository(h.app.db).list(incident_id=1) if e.action == "glitchtip.comeback"]
    assert row.detail["seen_by"] == "api"


async def test_an_uptime_down_card_names_the_monitor_or_says_it_is_unknown(start_app, fake):
    fake.add_monitor("acme", "17")
    h = await start_app(**api(fake))
    await h.post("glitchtip", glitchtip_sample("uptime_down.json"))  # .../acme/uptime-monitors/17
    [card] = await h.wait_cards(1)
    assert "Monitor Booking API health · get https://booking.example.com/health" in card.plain_text
    assert "last check 2026-11-25 19:01 UTC: timeout" in card.plain_text
    unknown = json.loads(glitchtip_sample("uptime_down.json"))
    unknown["attachments"][0]["title_link"] = "https://glitchtip.example.com/acme/uptime-monitors/99"
    unknown["attachments"][0]["title"] = "Status page"
    await h.post("glitchtip", json.dumps(unknown).encode())
    cards = await h.wait_cards(2)
    await h.wait_text(cards[1].message_id, "Monitor details unknown: GlitchTip's API does not have it (404)")


async def test_an_issue_id_of_another_glitchtip_is_neither_shown_nor_resolved(start_app, fake):
    fake.add_issue("4242")  # its permalink is http://127.0.0.1:8000/…, the alert's link another host
    h = await start_app(**api(fake))
    await h.post("glitchtip", glitchtip_sample("issue_alert_v1.json"))  # https://glitchtip.example.com/acme/issues/4242
    [card] = await h.wait_cards(1)
    await h.wait_text(card.message_id, "belongs to another GlitchTip")
    assert "send_event.py" not in h.emu.message(CHAT_ID, card.message_id).plain_text
    await h.press(card.message_id, button(card, f"{RESOLVE}:"))
    await h.wait_text(card.message_id, "Not resolved in GlitchTip: GlitchTip's API does not know this issue")
    assert fake.puts("4242") == []


async def test_a_job_that_keeps_getting_bad_answers_gives_up_after_its_attempts(start_app, fake):
    fake.fail(400, times=1000, path="/events/latest/")  # GlitchTip is up, this answer is not usable
    h = await start_app(**api(fake))
    h.app.glitchtip.job_backoff = (0.01, 0.05)
    await h.post("glitchtip", glitchtip_sample(REAL_ALERT))
    [card] = await h.wait_cards(1)
    await h.wait_text(card.message_id, "gave up after 6 tries", timeout=15)
    assert len(fake.calls("GET", "/api/0/issues/1/events/latest/")) == 7  # the first card's try + 6 attempts
    [row] = await h.app.db.fetchall("SELECT state, attempts FROM glitchtip_jobs")
    assert row["state"] == "failed"


async def test_with_the_api_unset_nothing_changes(start_app, fake):
    h = await start_app()
    await h.post("glitchtip", glitchtip_sample(REAL_ALERT))
    [card] = await h.wait_cards(1)
    await h.press(card.message_id, button(card, f"{RESOLVE}:"))
    await h.wait_text(card.message_id, "Resolved by")
    assert h.app.glitchtip is None and fake.seen == []
    assert "GlitchTip" not in h.emu.message(CHAT_ID, card.message_id).plain_text.replace("Open in GlitchTip", "")
    assert await h.app.db.fetchall("SELECT * FROM glitchtip_jobs") == []
