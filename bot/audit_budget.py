"""Audit rows within a budget: the first few in each window are rows, the rest one summary row.

Who uses it: refused webhook requests that carried the right token (bot/web.py) and open
commands anyone may send (bot/open_commands.py). Both are worth a row, and both can come in a
loop that must not grow the append-only audit log without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from storage.audit import AuditRepository
from storage.db import Database

log = logging.getLogger(__name__)


class AuditBudget:
    """`per_window` rows per window of `window_s` seconds (it restarts at the first event after it
    ends); what is over is counted by key and written as one `summary_action` row when the window
    ends (or at close). `summary` is the row's outcome, with ``{total}`` for the count."""

    def __init__(
        self, db: Database, *, per_window: int, window_s: float, summary_action: str, summary: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.per_window = per_window
        self.window_s = window_s
        self.summary_action = summary_action
        self.summary = summary
        self.clock = clock
        self._ends = 0.0
        self._written = 0
        self._counted: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def take(self) -> bool:
        """True: write this event's own row now. False: it was counted for the summary (see `count`)."""
        now = self.clock()
        if now >= self._ends:
            await self.flush()  # the previous window's summary first, so rows stay in time order
            self._ends, self._written = now + self.window_s, 0
        if self._written < self.per_window:
            self._written += 1
            return True
        return False

    def count(self, key: str) -> None:
        """An event over the budget: counted, and the summary is written when the window ends."""
        self._counted[key] += 1
        if self._timer is None:
            delay = max(0.0, self._ends - self.clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._flush_soon)

    def _flush_soon(self) -> None:
        self._timer = None
        task = asyncio.create_task(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        """One row for the events counted since the last flush."""
        counts, self._counted = self._counted, Counter()
        if not counts:
            return
        total = sum(counts.values())
        try:
            await AuditRepository(self.db).record(
                self.summary_action, self.summary.format(total=total),
                detail={"counts": dict(counts), "limit_per_minute": self.per_window},
            )
        except Exception:
            log.exception("could not write the audit summary %s", self.summary_action)

    async def close(self) -> None:
        """At shutdown: write what is still only counted."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        await self.flush()
