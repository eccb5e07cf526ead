"""A background loop that works while there is work and otherwise sleeps until notified."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


class WakeableLoop:
    """Subclasses implement `step()`: do what is due, return the seconds until the next look
    (0 = look again at once). `notify()` cuts a sleep short; `stop()` ends the loop after the
    step in flight, so work in progress finishes (or stays resumable in SQLite)."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self._stopping = False

    def notify(self) -> None:
        self.wake.set()

    def stop(self) -> None:
        self._stopping = True
        self.wake.set()

    async def step(self) -> float:
        raise NotImplementedError

    async def run(self) -> None:
        while not self._stopping:
            # Cleared before looking for work, so a notify during the step is not lost.
            self.wake.clear()
            try:
                wait = await self.step()
            except Exception:  # the loop must survive anything; its rows stay pending in SQLite
                log.exception("%s failed; retrying shortly", type(self).__name__)
                wait = 1.0
            if wait <= 0 or self._stopping:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), wait)
