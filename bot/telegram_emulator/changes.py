"""How waiting works in the emulator: one change signal, and the feed of visible events.

Long polls, ``wait_for`` and ``wait_for_answer`` all wait for "something changed" rather
than sleeping, so a test or a poll wakes the moment a message is stored or a query is
answered. Observers (the demo's printer) get an :class:`EmulatorEvent` for each visible
change; an observer may be async, and a failing one never breaks the emulator.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, Protocol

from .models import EmulatorEvent

log = logging.getLogger(__name__)

# Predicates may depend on state outside the emulator (a database, a subprocess), which
# never notifies: re-check them at least this often.
_RECHECK_SECONDS = 0.05


class ChangeSignal:
    """Wakes everyone waiting for the emulator's state to change. Not thread-safe."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Wake every current waiter; later waiters wait for the next change."""
        self._changed.set()
        self._changed = asyncio.Event()

    def next_change(self) -> asyncio.Event:
        """The event the next :meth:`notify` sets: take it *before* checking a condition."""
        return self._changed

    async def wait_for(self, predicate: Callable[[], Any], timeout: float) -> Any:  # noqa: ASYNC109 - test-friendly API
        """Wait until ``predicate()`` is truthy and return its value; ``TimeoutError`` otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self.next_change()
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            await wait_event(changed, min(remaining, _RECHECK_SECONDS))


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait until ``event`` is set or ``seconds`` pass, whichever comes first."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        pass


class Observed(Protocol):
    """Where the feed finds its observer; read on every event, so it can be swapped live."""

    on_event: Callable[[EmulatorEvent], Any] | None


class EventFeed:
    """Delivers :class:`EmulatorEvent` values to the ``on_event`` observer."""

    def __init__(self, source: Observed, signal: ChangeSignal) -> None:
        self._source = source
        self._signal = signal
        self._tasks: set[asyncio.Task[Any]] = set()

    def emit(self, event: EmulatorEvent) -> None:
        """A visible change: wake waiters, then tell the observer (an async one runs as a task)."""
        self._signal.notify()
        observer = self._source.on_event
        if observer is None:
            return
        try:
            result = observer(event)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:
            log.exception("on_event observer failed")

    def cancel_pending(self) -> None:
        """Stop async observers still running (the emulator is shutting down)."""
        for task in list(self._tasks):
            task.cancel()
