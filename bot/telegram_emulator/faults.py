"""Fault injection: make the emulated Telegram refuse calls the way the real one sometimes does.

A bot's retry and back-off paths (429 with ``retry_after``, 5xx, a whole outage) only run
when Telegram misbehaves, which a test cannot wait for. Faults are checked before a method
runs, so a failed call changes nothing, just as with Telegram. ``getUpdates`` is spared by
outages and by "any method" faults: the bot keeps polling while sending fails, which is
the case worth testing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from .errors import CONFLICT, ApiError

_GET_UPDATES = "getupdates"
_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: CONFLICT,
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class _Fault:
    method: str | None  # lower-case method name, None = any but getUpdates
    status: int
    remaining: int
    retry_after: int | None
    description: str | None

    def applies_to(self, method: str) -> bool:
        return self.method == method or (self.method is None and method != _GET_UPDATES)

    def error(self) -> ApiError:
        if self.status == 429:
            description = self.description or f"Too Many Requests: retry after {self.retry_after}"
        else:
            description = self.description or _DEFAULT_DESCRIPTIONS.get(self.status, HTTPStatus(self.status).phrase)
        return ApiError(self.status, description, self.retry_after)


class FaultInjector:
    """Queued one-off failures plus an on/off or timed outage. ``clock`` is monotonic seconds."""

    _faults: list[_Fault]  # queued one-off failures, used up in order
    _down: bool  # switched on by hand (set_down)
    _down_until: float | None  # end of a timed outage, on ``clock``

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.clear()

    def clear(self) -> None:
        self._faults = []
        self._down = False
        self._down_until = None

    def fail(
        self,
        method: str | None,
        status: int,
        times: int = 1,
        retry_after: int | None = None,
        description: str | None = None,
    ) -> None:
        """Queue ``times`` failures of ``method`` (None: any but getUpdates); see ``BotAPIEmulator.fail``."""
        if status == 429 and retry_after is None:
            retry_after = 1
        self._faults.append(_Fault(method.lower() if method else None, status, times, retry_after, description))

    def set_down(self, down: bool) -> None:
        """Switch an outage on or off by hand (cancels a timed one)."""
        self._down = down
        self._down_until = None

    def outage(self, seconds: float) -> None:
        """An outage that ends by itself ``seconds`` from now."""
        self._down = False
        self._down_until = self._clock() + seconds

    @property
    def is_down(self) -> bool:
        return self._down or (self._down_until is not None and self._clock() < self._down_until)

    def check(self, method: str) -> None:
        """Raise the :class:`ApiError` this call should get, if any; a fault is used up by raising."""
        key = method.lower()
        if key != _GET_UPDATES and self.is_down:
            raise ApiError(502, "Bad Gateway")
        for fault in self._faults:
            if fault.applies_to(key):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                raise fault.error()
