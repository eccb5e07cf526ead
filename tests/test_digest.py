"""Issue 13: the daily digest — when it fires (across DST, with an injected clock), once per day
(a catch-up after downtime sends one, not one per missed day), a quiet day in one line, valid
Telegram HTML under the limit, and /digest and /stats through the Bot API emulator."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.card_publisher import visible_units
from bot.chart import CHART_HEIGHT, CHART_WIDTH
from bot.digest import LAST_SENT_KEY, DigestService, digest_trigger, digest_with_chart, due_date
from bot.models import Alert, AlertKind, Category, Priority, Triage
from bot.telegram_emulator import parse_html, utf16_len
from storage.audit import AuditRepository
from storage.db import Database
from storage.incidents import IncidentRepository
from storage.kv import KeyValueRepository
from storage.outbox import OutboxRepository
from tests.conftest import APPROVER, CHAT_ID, STRANGER, Harness, Services, glitchtip_sample
from tests.test_chart import png_size

BERLIN = ZoneInfo("Europe/Berlin")
NINE = time(9, 0)


def _berlin(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=BERLIN)


def test_next_fire_time_keeps_the_local_time_across_dst() -> None:
    trigger = digest_trigger(NINE, BERLIN)
    # Spring forward (29 Mar 2026, 02:00 -> 03:00): 09:00 CET is 08:00 UTC, 09:00 CEST is 07:00 UTC.
    before = trigger.get_next_fire_time(None, _berlin(2026, 3, 28, 10))
    assert before is not None and before.astimezone(UTC) == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    assert before.astimezone(BERLIN).time() == NINE
    same_day = trigger.get_next_fire_time(None, _berlin(2026, 3, 28, 8, 59))
    assert same_day is not None and same_day.astimezone(UTC) == datetime(2026, 3, 28, 8, 0, tzinfo=UTC)
    # Fall back (25 Oct 2026): 09:00 CET is 08:00 UTC again.
    autumn = trigger.get_next_fire_time(None, _berlin(2026, 10, 24, 10))
    assert autumn is not None and autumn.astimezone(UTC) == datetime(2026, 10, 25, 8, 0, tzinfo=UTC)
    # A time inside the spring gap (02:30 does not exist on 29 Mar) still fires that day.
    gap = digest_trigger(time(2, 30), BERLIN).get_next_fire_time(None, _berlin(2026, 3, 28, 12))
    assert gap is not None and gap.astimezone(BERLIN).date() == date(2026, 3, 29)


def test_due_date_is_the_newest_slot_in_local_time() -> None:
    # 07:30 UTC on 29 Mar is 09:30 CEST: today's slot has passed in Berlin (it would not in UTC+1).
    assert due_date(datetime(2026, 3, 29, 7, 30, tzinfo=UTC), NINE, BERLIN) == date(2026, 3, 29)
    assert due_date(datetime(2026, 3, 29, 6, 30, tzinfo=UTC), NINE, BERLIN) == date(2026, 3, 28)
    # Just after midnight local, still the day before's UTC date: the local date counts.
    assert due_date(datetime(2026, 6, 30, 22, 30, tzinfo=UTC), time(0, 15), BERLIN) == date(2026, 7, 1)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _digest(services: Services, clock: Clock) -> DigestService:
    return DigestService(services.db, services.cards, services.policy, at=NINE, tz=BERLIN, clock=clock)


async def _digests(services: Services) -> list[str]:
    return [text for text in await services.messages() if "igest" in text]


async def test_catch_up_after_two_days_down_sends_one_digest(services: Services) -> None:
    await KeyValueRepository(services.db).set(LAST_SENT_KEY, "2026-03-01")
    # Down from after the 1 Mar digest until 10:00 on 4 Mar: the 2nd, 3rd and 4th were missed.
    clock = Clock(_berlin(2026, 3, 4, 10))
    digest = _digest(services, clock)
    assert await digest.catch_up() is True
    assert await digest.catch_up() is False  # a second start the same day
    assert await digest.send_scheduled() is False  # the scheduler firing late, after the catch-up
    assert len(await _digests(services)) == 1
    assert await KeyValueRepository(services.db).get(LAST_SENT_KEY) == "2026-03-04"
    clock.now = _berlin(2026, 3, 5, 9, 0)
    assert await digest.send_scheduled() is True
    assert len(await _digests(services)) == 2


async def test_started_before_the_time_sends_nothing_until_it(services: Services) -> None:
    await KeyValueRepository(services.db).set(LAST_SENT_KEY, "2026-03-03")
    digest = _digest(services, Clock(_berlin(2026, 3, 4, 8, 0)))
    assert await digest.catch_up() is False
    assert await _digests(services) == []


async def test_the_first_start_notes_the_date_and_sends_nothing(services: Services) -> None:
    digest = _digest(services, Clock(_berlin(2026, 3, 4, 10)))
    assert await digest.catch_up() is False
    assert await _digests(services) == []
    assert await KeyValueRepository(services.db).get(LAST_SENT_KEY) == "2026-03-04"


async def test_a_quiet_day_gets_one_line(services: Services) -> None:
    await KeyValueRepository(services.db).set(LAST_SENT_KEY, "2026-03-01")
    await _digest(services, Clock(_berlin(2026, 3, 4, 10))).catch_up()
    [text] = await _digests(services)
    assert "\n" not in text and "quiet day" in text and "Open: 0" in text
    parse_html(text)


async def test_a_busy_digest_is_valid_html_under_the_limit(services: Services) -> None:
    hostile = "<script>alert('x')</script> & </b> " + "ä" * 400
    now = datetime.now(UTC)
    async with services.db.transaction() as tx:
        for n in range(40):
            alert = Alert(source="generic", kind=AlertKind.ERROR, title=f"{hostile} {n}", fingerprint=f"f{n}",
                          project=f"<proj>{n}", count=n + 1)
            triage = Triage(priority=Priority.P0, category=Category.CODE, likely_cause="?", rule_id=f"<rule{n}>")
            incident = await IncidentRepository(tx).create(alert, triage, now - timedelta(hours=1), CHAT_ID, None)
            await services.decisions.cards.publish(tx, incident.id)
        for n in range(30):
            await AuditRepository(tx).record("action.start", f"refused: <why {n}> " + "x" * 200)
    digest = DigestService(services.db, services.cards, services.policy, at=NINE, tz=ZoneInfo("UTC"), clock=lambda: now)
    text = await digest.text()
    parse_html(text)  # raises on invalid Telegram HTML
    assert utf16_len(text) <= 4096
    assert "Daily digest" in text and "&lt;script&gt;" in text and "<script>" not in text
    assert "Open P0/P1 incidents: /incidents" in text


async def test_digest_and_stats_commands_through_the_emulator(start_app: Callable[..., Awaitable[Harness]]) -> None:
    h: Harness = await start_app()
    reply = await h.command("/stats 7")
    assert "Metrics" in reply.plain_text and "last 7 days" in reply.plain_text
    assert "Triage accuracy" in reply.plain_text and "Next stage" in reply.plain_text
    assert "Claude: no calls (no ANTHROPIC_API_KEY" in reply.plain_text
    digest = await h.command("/digest")
    assert "quiet day" in digest.plain_text
    assert digest.media is None and h.emu.call_count("sendPhoto") == 0  # a quiet day: no chart
    usage = await h.command("/stats lots")
    assert "Usage: /stats [days]" in usage.plain_text
    refused = await h.command("/stats", user_id=STRANGER)
    assert "only approvers" in refused.plain_text
    actions = [(e.action, e.outcome, e.actor_id) for e in await AuditRepository(h.app.db).list()]
    assert ("command./stats", "shown: 7 days", APPROVER) in actions
    assert ("command./digest", "sent", APPROVER) in actions


async def test_the_app_schedules_the_digest_and_catches_up_once_at_start(
    start_app: Callable[..., Awaitable[Harness]],
) -> None:
    first = await start_app(digest_time=time(9, 0), timezone="Europe/Berlin")
    job = first.app.scheduler.get_job("daily_digest")
    assert job is not None and job.misfire_grace_time == 3600
    assert job.next_run_time.astimezone(BERLIN).time() == NINE
    assert [m for m in first.cards() if "igest" in m.plain_text] == []  # the first start missed nothing
    await first.app.stop()
    # Down for days: the next start sends the one digest it missed, not one per day.
    async with Database(first.app.settings.database_path) as db:
        await KeyValueRepository(db).set(LAST_SENT_KEY, (datetime.now(UTC) - timedelta(days=3)).date().isoformat())
    second = await start_app(digest_time=time(9, 0), timezone="Europe/Berlin")
    await second.emu.wait_for(lambda: any("igest" in m.plain_text for m in second.cards()), timeout=10)
    await second.command("/status")  # a round trip: anything else queued would have been sent by now
    assert len([m for m in second.cards() if "igest" in m.plain_text]) == 1


async def _busy_day(services: Services, hostile: str = "", n: int = 40) -> datetime:
    now = datetime.now(UTC)
    async with services.db.transaction() as tx:
        for i in range(n):
            alert = Alert(source="generic", kind=AlertKind.ERROR, title=f"{hostile} {i}", fingerprint=f"f{i}",
                          project=f"<proj>{i}", count=i + 1)
            triage = Triage(priority=list(Priority)[i % 4], category=Category.CODE, likely_cause="?",
                            rule_id=f"<rule{i}>")
            incident = await IncidentRepository(tx).create(alert, triage, now - timedelta(hours=1 + 30 * (i % 3)),
                                                           CHAT_ID, None)
            await services.decisions.cards.publish(tx, incident.id)
    return now


async def test_a_busy_day_sends_the_chart_with_the_day_as_caption_then_the_rest(services: Services) -> None:
    now = await _busy_day(services, "TimeoutError: upstream", n=9)
    digest = DigestService(services.db, services.cards, services.policy, at=NINE, tz=BERLIN, clock=lambda: now)
    await digest.send_now()
    photo, message = [i for i in await services.queued() if i.incident_id is None]
    assert photo.payload["file"] == {"kind": "photo", "filename": f"digest-{now.astimezone(BERLIN).date()}.png"}
    stored = await OutboxRepository(services.db).file(photo.id)
    assert stored is not None and png_size(stored.content) == (CHART_WIDTH, CHART_HEIGHT)
    caption, text = photo.payload["text"], message.payload["text"]
    assert "Daily digest" in caption and "Last 24 hours" in caption and "New 3" in caption  # 3 of 9 in 24 h
    assert "Last 7 days" in text and "Triage accuracy" in text and "Last 24 hours" not in text
    assert "• Claude: no calls" in caption and "Time to resolution: nothing resolved" in text
    assert "continued" in text


async def test_the_caption_and_the_message_stay_valid_html_within_telegrams_limits(services: Services) -> None:
    hostile = "<script>alert('x')</script> & </b> " + "ä" * 400 + "😀" * 50
    now = await _busy_day(services, hostile)
    digest = DigestService(services.db, services.cards, services.policy, at=NINE, tz=ZoneInfo("UTC"),
                           clock=lambda: now)
    day, week, today = await digest._figures()
    caption, text = digest_with_chart(day, week, today)
    for html_text, limit in ((caption, 1024), (text, 4096)):
        plain, _ = parse_html(html_text)  # raises on invalid Telegram HTML
        assert utf16_len(plain) <= limit and "<script>" not in html_text
    assert visible_units(caption) <= 1024 and "Daily digest" in caption
    assert "Noisiest" in caption + text  # a line the caption could not hold moved to the message, not lost


async def test_digest_command_sends_the_chart_and_the_message_through_the_emulator(
    start_app: Callable[..., Awaitable[Harness]],
) -> None:
    h: Harness = await start_app()
    await h.post("glitchtip", glitchtip_sample("issue_alert_batch.json"))
    cards = await h.wait_cards(3)
    h.emu.send_user_message(CHAT_ID, APPROVER, "/digest")
    photo = await h.emu.wait_for(lambda: next((m for m in h.cards() if m.media is not None), None), timeout=20)
    rest = await h.emu.wait_for(lambda: next((m for m in h.cards() if "continued" in m.plain_text), None))
    assert photo.media.kind == "photo" and png_size(photo.media.content) == (CHART_WIDTH, CHART_HEIGHT)
    assert "Daily digest" in photo.plain_text and f"New {len(cards)}" in photo.plain_text
    assert "Claude: no calls (no ANTHROPIC_API_KEY" in photo.plain_text  # the day's Claude calls, and why none
    assert "Last 7 days" in rest.plain_text and photo.message_id < rest.message_id  # the chart first
    assert h.emu.call_count("sendPhoto", ok=True) == 1
