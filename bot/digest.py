"""The daily digest: the day's volume and the week's figures, sent to the chat at DIGEST_TIME in
TIMEZONE (bot/app.py schedules `send_scheduled`), through the outbox like every message.

Once per local day, never twice: the date of the last digest is stored (kv `digest.last_sent`)
and checked in the same transaction that queues the message. A digest missed while the bot was
down is sent once at start (`catch_up`), however many days it missed. A quiet day gets one line:
silence would look like a dead bot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from bot.card_publisher import CardPublisher
from bot.card_render import esc
from bot.metrics import Metrics, compute_metrics, correction_lines, fit, quality_lines, volume_lines
from bot.models import Priority, utcnow
from bot.rollout import RolloutPolicy
from storage.db import Database
from storage.kv import KeyValueRepository

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


def digest_text(day: Metrics, week: Metrics, on: date) -> str:
    """The digest as Telegram HTML: one line on a quiet day, else volume, figures, corrections, hint."""
    v = day.volume
    open_now = sum(v.open_by_priority.values())
    if v.quiet:
        return (f"📰 <b>Digest {on:%a %d %b}</b>: a quiet day — no new errors, nothing resolved, no actions. "
                f"Open: {open_now}.")
    lines = [f"📰 <b>Daily digest</b> — {on:%a %d %b %Y}", "<b>Last 24 hours</b>", *volume_lines(v),
             f"<b>Last {week.days} days</b>", *quality_lines(week), *correction_lines(week),
             f"➡️ {esc(week.hint, 400)}"]
    if any(v.open_by_priority.get(p.value) for p in (Priority.P0, Priority.P1)):
        lines.append("Open P0/P1 incidents: /incidents")
    return fit(lines)


class DigestService:
    def __init__(self, db: Database, cards: CardPublisher, policy: RolloutPolicy, *, at: time, tz: ZoneInfo,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.cards = cards
        self.policy = policy
        self.at = at
        self.tz = tz
        self.clock = clock

    @property
    def trigger(self) -> CronTrigger:
        return digest_trigger(self.at, self.tz)

    async def text(self, on: date | None = None) -> str:
        now = self.clock()
        day = await compute_metrics(self.db, self.policy, until=now, days=1)
        week = await compute_metrics(self.db, self.policy, until=now, days=QUALITY_DAYS)
        return digest_text(day, week, on or now.astimezone(self.tz).date())

    async def send_now(self, chat_id: int | None = None) -> None:
        """/digest: queue it now (to the chat that asked); the daily one still comes at its time."""
        text = await self.text()
        async with self.db.transaction() as tx:
            await self.cards.say(tx, text, chat_id=chat_id)

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
        text = await self.text(due)
        async with self.db.transaction() as tx:
            kv = KeyValueRepository(tx)
            last = await kv.get(LAST_SENT_KEY)
            if last is not None and date.fromisoformat(last) >= due:
                return False
            await self.cards.say(tx, text)
            await kv.set(LAST_SENT_KEY, due.isoformat())
        log.info("daily digest for %s queued", due)
        return True

    async def run_scheduled(self) -> None:
        """The scheduler's entry point: a failure is logged, never raised into APScheduler."""
        try:
            await self.send_scheduled()
        except Exception:
            log.exception("the daily digest could not be sent")
