"""Limits on the webhook port, so no client can hold it, flood it, or fill the disk with logs.

aiohttp bounds the size of a request head and closes idle kept-alive connections, but it has no
cap on open connections and no deadline for a client that sends its request head one byte at a
time (slowloris). `ConnectionGuard`, the protocol factory of the listening socket, adds both.
`RejectionTally` counts refused requests in memory and logs one summary line at most once a
minute; `RateLimitFilter` keeps library log records (aiohttp, asyncio) to a few a minute each.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable

REASONS = (
    "not_found",  # wrong token or unknown source: strangers, never audited
    "too_large",  # 413
    "not_json",  # 400
    "invalid",  # 422
    "slow_headers",  # the request head did not arrive in time: connection closed
    "slow_body",  # 408
    "connection_limit",  # every connection busy: refused with 503 at once
)

_BUSY_BODY = b'{"error": "too many connections; retry shortly"}'
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


def connections_within_file_limit(wanted: int) -> int:
    """`wanted`, lowered so open connections take at most half the process's file limit.

    The database, the Telegram client and the fixes' subprocesses need the other half; a
    connection refused by our cap costs one short log line a minute, a file limit hit costs
    failed writes and an error per accept.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft // 2))


class RejectionTally:
    """Refused requests and connections, counted by reason since start.

    The first refusal after a quiet minute is logged at once; later ones are added to one
    summary line a minute, so a flood of any size costs one log line a minute.
    """

    def __init__(self, log: logging.Logger, interval_s: float = 60.0) -> None:
        self.totals: dict[str, int] = dict.fromkeys(REASONS, 0)
        self._log = log
        self._interval = interval_s
        self._pending: Counter[str] = Counter()
        self._last_remote: str | None = None
        self._quiet_until = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, reason: str, remote: str | None = None) -> None:
        self.totals[reason] = self.totals.get(reason, 0) + 1
        self._pending[reason] += 1
        if remote:
            self._last_remote = remote
        if time.monotonic() >= self._quiet_until:
            self._summarise()

    def snapshot(self) -> dict[str, int]:
        return dict(self.totals)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            self._write_line()

    def _summarise(self) -> None:
        """Log what is pending now, and look again in a minute."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return  # quiet for a whole minute: the next refusal is logged at once
        self._write_line()
        self._quiet_until = time.monotonic() + self._interval
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._summarise)

    def _write_line(self) -> None:
        count = sum(self._pending.values())
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in self._pending.most_common())
        self._log.warning(
            "webhook refused %s %s since the last summary (%s), last from %s; next summary in %.0f s at most",
            f"{count:,}", "request" if count == 1 else "requests", reasons, self._last_remote or "?", self._interval,
        )
        self._pending.clear()


class RateLimitFilter(logging.Filter):
    """At most `per_minute` records of each message a minute; the next one let through says how many were dropped.

    For loggers a client can make speak (aiohttp's "Error handling request", asyncio's accept
    errors): without it, a flood of bad requests is a flood of tracebacks.
    """

    def __init__(self, per_minute: int = 5, interval_s: float = 60.0, max_keys: int = 1000) -> None:
        super().__init__()
        self.per_minute = per_minute
        self.interval = interval_s
        self.max_keys = max_keys
        self._windows: dict[tuple[str, str], list[float]] = {}  # key -> [window start, passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg).split("\n", 1)[0][:80])
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.interval:
            dropped = int(window[2]) if window else 0
            if len(self._windows) >= self.max_keys:
                self._windows.clear()
            self._windows[key] = [now, 1, 0]
            if dropped:
                record.msg = f"{record.msg} [{dropped} more like this in the last minute not logged]"
            return True
        if window[1] < self.per_minute:
            window[1] += 1
            return True
        window[2] += 1
        return False


class GuardedConnection(asyncio.Protocol):
    """One accepted connection: aiohttp's protocol inside, with a deadline for each request head."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.served = 0  # requests answered on this connection
        self.received_while_idle = False  # part of a request head has arrived since the last answer
        self.deadline: asyncio.TimerHandle | None = None
        self._made = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.closed:  # dropped between accept and now
            transport.close()
            return
        self._made = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.received_while_idle = True
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self._made:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def close(self) -> None:
        self.closed = True
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.transport is not None:
            self.transport.close()

    @property
    def remote(self) -> str | None:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else None


class _RefusedConnection(asyncio.Protocol):
    """Over the limit with every connection busy: a 503 at once, then close."""

    def __init__(self, on_refused: Callable[[str, str | None], None]) -> None:
        self.on_refused = on_refused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        self.on_refused("connection_limit", str(peer[0]) if isinstance(peer, tuple) and peer else None)
        transport.write(_BUSY_RESPONSE)
        transport.close()


class ConnectionGuard:
    """The protocol factory for the webhook's listening socket.

    - A connection must deliver a complete request head within `header_timeout` of opening, and
      again of each answer (so this is also the keep-alive timeout); otherwise it is closed.
    - At most `max_connections` are open. At the limit, a new connection replaces the oldest one
      that is only waiting for a request head (a slow or idle client); when every connection is
      mid-request, the new one gets a 503 at once. So slow clients cannot lock a real sender out,
      and no flood of connections can exhaust the process's files.

    The request handler marks requests with `request_started` / `request_finished`.
    """

    def __init__(
        self,
        make_protocol: Callable[[], asyncio.Protocol],
        *,
        max_connections: int,
        header_timeout: float,
        on_refused: Callable[[str, str | None], None],
    ) -> None:
        self.make_protocol = make_protocol
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.on_refused = on_refused
        self.dropped_idle = 0  # waiting connections closed to make room for a new one
        self._waiting: dict[GuardedConnection, None] = {}  # for a request head; oldest first
        self._busy: set[GuardedConnection] = set()
        self._by_inner: dict[object, GuardedConnection] = {}

    @property
    def open(self) -> int:
        return len(self._waiting) + len(self._busy)

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.max_connections and not self._drop_oldest_waiting():
            return _RefusedConnection(self.on_refused)
        conn = GuardedConnection(self, self.make_protocol())
        self._by_inner[conn.inner] = conn
        self._wait_for_head(conn)
        return conn

    def request_started(self, inner: object) -> None:
        conn = self._by_inner.get(inner)
        if conn is None or conn.closed:
            return
        self._waiting.pop(conn, None)
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        self._busy.add(conn)

    def request_finished(self, inner: object) -> None:
        conn = self._by_inner.get(inner)
        if conn is None or conn.closed:
            return
        self._busy.discard(conn)
        conn.served += 1
        self._wait_for_head(conn)

    def forget(self, conn: GuardedConnection) -> None:
        """The connection is gone (closed by either side)."""
        conn.closed = True
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        self._waiting.pop(conn, None)
        self._busy.discard(conn)
        self._by_inner.pop(conn.inner, None)

    def close_all(self) -> None:
        for conn in [*self._waiting, *self._busy]:
            conn.close()
            self.forget(conn)

    def _wait_for_head(self, conn: GuardedConnection) -> None:
        conn.received_while_idle = False
        self._waiting[conn] = None
        conn.deadline = asyncio.get_running_loop().call_later(self.header_timeout, self._head_deadline, conn)

    def _head_deadline(self, conn: GuardedConnection) -> None:
        conn.deadline = None
        if conn.closed or conn not in self._waiting:
            return
        # An idle kept-alive connection simply expires; one that never sent a whole request
        # head, or started one and stalled, is a slow client.
        if conn.served == 0 or conn.received_while_idle:
            self.on_refused("slow_headers", conn.remote)
        conn.close()
        self.forget(conn)

    def _drop_oldest_waiting(self) -> bool:
        oldest = next(iter(self._waiting), None)
        if oldest is None:
            return False
        self.dropped_idle += 1
        oldest.close()
        self.forget(oldest)
        return True
