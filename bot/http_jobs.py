"""What the GitHub and GlitchTip integrations share: one HTTP call under a total deadline, the
wait a rate limit asks for, the worker's outage pause, its job guard, and the check's lines.

Why shared: both clients were written to the same rules (a total deadline, because httpx's
timeouts are per read and a server that drips bytes could hold a call for ever; a cap on the
answer's size; `Retry-After` honoured as seconds or an HTTP date), and both workers wait out an
outage the same way (every job pauses, backing off, and an outage does not spend a job's
attempts). What each says to people — its error kinds, its messages, its hints — stays in
bot/github/ and bot/glitchtip/.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

# The failure kinds both clients' `FailureKind` enums spell the same way: `send_capped` names them.
RATE_LIMITED, SERVER, NETWORK, TIMEOUT, BAD_ANSWER = "rate limited", "server error", "network", "timeout", "bad answer"
#: kinds that waiting may fix (an outage, a limit), as opposed to something a person must fix
TRANSIENT = frozenset({RATE_LIMITED, SERVER, NETWORK, TIMEOUT})

#: makes the client's own error from a failure kind above and a message
FailureFactory = Callable[[str, str], Exception]
T = TypeVar("T")
E = TypeVar("E", bound=Exception)


def short(exc: BaseException) -> str:
    """An exception's text on one line, cut to what a card or a log line can hold."""
    return " ".join(str(exc).split())[:300]


# --------------------------------------------------------------------------- one call


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's own default (certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR), built once per
    process: reading the CA bundle costs about 50 ms of CPU, which every client made would pay
    again (each start, each `check`). A context is safe to share between clients."""
    return httpx.create_ssl_context()


async def send_capped(
    http: httpx.AsyncClient, method: str, path: str, *, timeout_s: float, max_bytes: int, fail: FailureFactory,
    body: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
) -> tuple[int, bytes, httpx.Headers]:
    """(status, body, headers) of one call, all of it within `timeout_s`; no answer, a dropped
    connection or an answer over `max_bytes` raise `fail(kind, message)`."""
    try:
        async with asyncio.timeout(timeout_s):
            async with http.stream(method, path, json=body, params=params) as response:
                raw = await _read_capped(response, max_bytes, fail)
                return response.status_code, raw, response.headers
    except (TimeoutError, httpx.TimeoutException):
        raise fail(TIMEOUT, f"no answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        # The exception names the URL (no token: it travels in a header) and what went wrong.
        raise fail(NETWORK, f"{type(exc).__name__}: {short(exc)}") from None


async def _read_capped(response: httpx.Response, max_bytes: int, fail: FailureFactory) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise fail(BAD_ANSWER, f"answer larger than {max_bytes // 2**20} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header: a number, or an HTTP date; None when absent or unreadable."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# --------------------------------------------------------------------------- the worker


class OutagePause:
    """An outage or a rate limit belongs to the service, not to one job: every job waits until
    `until`, and each pause in a row waits twice as long (up to `longest`) unless the service
    asked for longer. A job that gets an answer ends the streak."""

    def __init__(self, backoff: Callable[[], tuple[float, float]], clock: Callable[[], float]) -> None:
        self.backoff = backoff  # (first, longest) read at each pause: the service's setting stays live
        self.clock = clock
        self.until = 0.0
        self.streak = 0

    def left(self) -> float:
        """Seconds until calls may be made again (0: now)."""
        return max(0.0, self.until - self.clock())

    def pause(self, at_least_s: float = 0.0) -> float:
        """Pause every call; returns how long."""
        first, longest = self.backoff()
        delay = max(at_least_s, min(longest, first * 2 ** min(self.streak, 20)))
        self.streak += 1
        self.until = max(self.until, self.clock() + delay)
        return delay

    def end(self) -> None:
        """Call again now (a person or the schedule said so); the streak stays."""
        self.until = 0.0

    def answered(self) -> None:
        self.streak = 0


def idle_wait(next_due_at: float | None, poll_s: float) -> float:
    """How long an idle worker sleeps: until its next job is due (wall clock), at most `poll_s`
    (other services queue jobs too), never a busy spin."""
    wait = poll_s if next_due_at is None else min(poll_s, next_due_at - time.time())
    return max(0.05, wait)


async def guarded(
    work: Awaitable[T], *, error_type: type[E], failed: Callable[[E], Awaitable[None]],
    bug: Callable[[str], E], log: logging.Logger, what: str,
) -> T | None:
    """Run one job: the client's error goes to `failed`; anything else is a bug, logged and made
    a "bad answer" (so it spends the job's attempts instead of spinning). None when it failed."""
    try:
        return await work
    except error_type as error:
        await failed(error)
    except Exception as exc:
        log.exception("%s failed", what)
        await failed(bug(f"{type(exc).__name__}: {exc}"))
    return None


# --------------------------------------------------------------------------- `remediator … check`


@dataclass(frozen=True)
class CheckLine:
    name: str
    ok: bool | None  # None: skipped (an earlier line failed)
    text: str

    def render(self, width: int = 9) -> str:
        """One line, the name in a column `width` wide (9 fits `resolve:`, the longest name)."""
        mark = {True: "ok", False: "FAILED", None: "skipped"}[self.ok]
        return f"{self.name + ':':<{width}}{mark} — {self.text}"


def skipped(after: str, names: Iterable[str]) -> list[CheckLine]:
    """The lines an earlier failure leaves unanswered."""
    return [CheckLine(name, None, f"needs {after}") for name in names]


def rendered(lines: list[CheckLine], width: int) -> tuple[list[str], bool]:
    """The lines to print, names in a column `width` wide, and whether everything works."""
    return [line.render(width) for line in lines], all(line.ok for line in lines)
