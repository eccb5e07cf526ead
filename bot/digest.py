"""The daily digest: the day's volume and the week's figures, sent to the chat at DIGEST_TIME in
TIMEZONE (bot/app.py schedules `send_scheduled`), through the outbox like every message.

Once per local day, never twice: the date of the last digest is stored (kv `digest.last_sent`)
and checked in the same transaction that queues the message. A digest missed while the bot was
down is sent once at start (`catch_up`), however many days it missed. A quiet day gets one line:
silence would look like a dead bot. Any other day comes with the 14-day chart (bot/chart.py) as a
photo: the day's volume is its caption (Telegram allows 1024 characters), the rest follows as a
message. The chart is drawn before the transaction opens (it takes about a second, in a thread).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from bot.card_publisher import CAPTION_LIMIT, CardPublisher, visible_units
from bot.card_render import esc
from bot.chart import CHART_DAYS, daily_series, has_data, render_chart
from bot.metrics import Metrics, compute_metrics, correction_lines, fit, quality_lines, volume_lines
from bot.models import Priority, utcnow
from bot.overrides import OverrideService, offer_buttons, offer_lines
from bot.rollout import RolloutPolicy
from storage.db import Database, Executor
from storage.kv import KeyValueRepository
from storage.metrics import MetricsRepository

log = logging.getLogger(__name__)
LAST_SENT_KEY = "digest.last_sent"
# The quality figures need more cases than one day brings: they cover the week before the digest.
QUALITY_DAYS = 7
# A digest whose time passed while the event loop was busy (or the machine slept) is still sent
# within this grace; beyond it, the start-up catch-up is what sends a missed one.
MISFIRE_GRACE_S = 3600


def digest_trigger(at: time, tz: ZoneInfo) -> CronTrigger:
    """Every day at `at` wall-clock time in `tz` (DST moves the UTC time, not the local one)."""
    return CronTrigger(hour=at.hour, minute=at.minute, timezone=tz)


def due_date(now: datetime, at: time, tz: ZoneInfo) -> date:
    """The local date of the newest digest slot at or before `now`: today once `at` has passed, else yesterday."""
    local = now.astimezone(tz)
    return local.date() if local.time().replace(tzinfo=None) >= at else local.date() - timedelta(days=1)


def digest_text(day: Metrics, week: Metrics, on: date, offers: Sequence[str] = ()) -> str:
    """The digest as Telegram HTML: one line on a quiet day, else volume, figures, corrections, hint.
    `offers`: the priority overrides it offers to apply (bot/overrides.py), quiet day or not."""
    v = day.volume
    open_now = sum(v.open_by_priority.values())
    if v.quiet:
        return fit([f"📰 <b>Digest {on:%a %d %b}</b>: a quiet day — no new errors, nothing resolved, no actions. "
                    f"Open: {open_now}.", *offers])
    lines = [f"📰 <b>Daily digest</b> — {on:%a %d %b %Y}", "<b>Last 24 hours</b>", *volume_lines(v),
             f"<b>Last {week.days} days</b>", *quality_lines(week), *correction_lines(week), *offers,
             f"➡️ {esc(week.hint, 400)}"]
    if any(v.open_by_priority.get(p.value) for p in (Priority.P0, Priority.P1)):
        lines.append("Open P0/P1 incidents: /incidents")
    return fit(lines)


def digest_with_chart(day: Metrics, week: Metrics, on: date, offers: Sequence[str] = ()) -> tuple[str, str]:
    """(caption, message) of a digest sent with its chart: the day's volume as the photo's caption
    (whole lines, within Telegram's 1024), everything else in the message that follows it."""
    v = day.volume
    caption = [f"📰 <b>Daily digest</b> — {on:%a %d %b %Y}", "<b>Last 24 hours</b>"]
    rest: list[str] = []
    for line in volume_lines(v):
        if rest or visible_units("\n".join([*caption, line])) > CAPTION_LIMIT:
            rest.append(line)  # what the caption cannot hold opens the message, in order
        else:
            caption.append(line)
    lines = [f"📰 <b>Digest {on:%a %d %b}</b>, continued (the chart above: incidents per day, 14 days)", *rest,
             f"<b>Last {week.days} days</b>", *quality_lines(week), *correction_lines(week), *offers,
             f"➡️ {esc(week.hint, 400)}"]
    if any(v.open_by_priority.get(p.value) for p in (Priority.P0, Priority.P1)):
        lines.append("Open P0/P1 incidents: /incidents")
    return "\n".join(caption), fit(lines)


class DigestService:
    def __init__(self, db: Database, cards: CardPublisher, policy: RolloutPolicy, *, at: time, tz: ZoneInfo,
                 clock: Callable[[], datetime] = utcnow, overrides: OverrideService | None = None,
                 claude_on: bool | None = None) -> None:
        self.db = db
        self.claude_on = claude_on  # ANTHROPIC_API_KEY set: "no Claude calls" then needs no reason
        # The Apply buttons for rule + project pairs corrected the same way often enough.
        self.overrides = overrides or OverrideService(db, cards)
        self.cards = cards
        self.policy = policy
        self.at = at
        self.tz = tz
        self.clock = clock

    @property
    def trigger(self) -> CronTrigger:
        return digest_trigger(self.at, self.tz)

    async def text(self, on: date | None = None) -> str:
        day, week, today = await self._figures()
        return digest_text(day, week, on or today)

    async def _figures(self) -> tuple[Metrics, Metrics, date]:
        now = self.clock()
        day = await compute_metrics(self.db, self.policy, until=now, days=1, claude_on=self.claude_on)
        week = await compute_metrics(self.db, self.policy, until=now, days=QUALITY_DAYS, claude_on=self.claude_on)
        return day, week, now.astimezone(self.tz).date()

    async def chart(self, day: Metrics) -> bytes | None:
        """The 14-day chart as PNG, or None: on a quiet day, with no incident in 14 days, or when it
        cannot be drawn (the digest then goes as text: a chart is never worth losing the digest)."""
        if day.volume.quiet:
            return None
        now = self.clock()
        last_day = now.astimezone(self.tz).date()
        first_day = last_day - timedelta(days=CHART_DAYS - 1)
        since = datetime.combine(first_day, time(0), tzinfo=self.tz)
        series = daily_series(await MetricsRepository(self.db).day_incidents(since, now), last_day=last_day,
                              tz=self.tz)
        if not has_data(series):
            return None
        try:
            # About a second of CPU: in a thread, so the bot keeps answering meanwhile.
            return await asyncio.to_thread(
                render_chart, series, title=f"Incidents per day by priority, last {CHART_DAYS} days ({self.tz.key})")
        except Exception:
            log.exception("the digest's chart could not be drawn; sending the digest without it")
            return None

    async def _queue(self, tx: Executor, day: Metrics, week: Metrics, on: date, chat_id: int | None = None,
                     chart: bytes | None = None) -> None:
        """The digest (after its chart, when there is one), with an Apply button per override it
        offers (recorded in the same transaction)."""
        offers = await self.overrides.offers(tx, week)
        offered = offer_lines(offers, self.overrides.threshold)
        if chart is None or day.volume.quiet:
            text = digest_text(day, week, on, offered)
        else:
            caption, text = digest_with_chart(day, week, on, offered)
            await self.cards.send_file(tx, kind="photo", filename=f"digest-{on.isoformat()}.png", content=chart,
                                       caption=caption, chat_id=chat_id)
        await self.cards.say(tx, text, chat_id=chat_id, buttons=offer_buttons(offers))

    async def send_now(self, chat_id: int | None = None) -> None:
        """/digest: queue it now (to the chat that asked); the daily one still comes at its time."""
        day, week, today = await self._figures()
        chart = await self.chart(day)
        async with self.db.transaction() as tx:
            await self._queue(tx, day, week, today, chat_id, chart)

    async def send_scheduled(self) -> bool:
        """The scheduler's job: send the digest of the newest slot unless it was sent already."""
        return await self._send_once(due_date(self.clock(), self.at, self.tz))

    async def catch_up(self) -> bool:
        """At start: a digest whose time passed while the bot was down is sent now, once. The very
        first start only notes the date: nothing was missed before the bot existed."""
        due = due_date(self.clock(), self.at, self.tz)
        kv = KeyValueRepository(self.db)
        if await kv.get(LAST_SENT_KEY) is None:
            await kv.set(LAST_SENT_KEY, due.isoformat())
            return False
        return await self._send_once(due)

    async def _send_once(self, due: date) -> bool:
        if await self._sent_already(due):
            return False  # checked again below, in the transaction; this spares the figures and the chart
        day, week, _ = await self._figures()
        chart = await self.chart(day)
        async with self.db.transaction() as tx:
            kv = KeyValueRepository(tx)
            last = await kv.get(LAST_SENT_KEY)
            if last is not None and date.fromisoformat(last) >= due:
                return False
            await self._queue(tx, day, week, due, chart=chart)
            await kv.set(LAST_SENT_KEY, due.isoformat())
        log.info("daily digest for %s queued", due)
        return True

    async def _sent_already(self, due: date) -> bool:
        last = await KeyValueRepository(self.db).get(LAST_SENT_KEY)
        return last is not None and date.fromisoformat(last) >= due

    async def run_scheduled(self) -> None:
        """The scheduler's entry point: a failure is logged, never raised into APScheduler."""
        try:
            await self.send_scheduled()
        except Exception:
            log.exception("the daily digest could not be sent")
