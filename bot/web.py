"""The HTTP server for incoming alerts (aiohttp).

`POST /webhook/{source}/{token}`: the token travels in the URL because GlitchTip cannot send
a header or signature. Checks run cheapest first (token, size, JSON, shape). A request without
the right token is only counted in memory (strangers leave no rows); a refused request with the
right token leaves an audit line (a few a minute, the rest summed up in one). An accepted body is
parsed once (a big one in a worker thread) and committed to the inbox before the 202; the parsed
alerts go to `on_parsed` so the pipeline need not parse them again.

Connection limits and read deadlines are in `bot.web_guard`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from bot import __version__
from bot.audit_budget import AuditBudget
from bot.inbox_writer import InboxWriter
from bot.ingest import SOURCES, ParsedPayload, PayloadError, parse_payload
from bot.web_guard import ConnectionGuard, RateLimitFilter, RejectionTally, connections_within_file_limit
from storage.audit import AuditRepository
from storage.db import Database
from storage.inbox import InboxRepository
from storage.outbox import OutboxRepository

if TYPE_CHECKING:
    from bot.settings import Settings

log = logging.getLogger(__name__)
http_log = logging.getLogger("bot.web.http")  # aiohttp's per-connection errors, rate-limited
MAX_BODY = 1024 * 1024
# After answering a request whose body was not read, aiohttp reads and drops the rest for this long
# before closing (its default is 10 s), inflating a compressed body as it goes: `_track_request`
# closes a compressed body's connection as soon as the answer is written instead (see there).
LINGER_S = 2.0
PARSE_INLINE_MAX = 64 * 1024  # bytes; bigger bodies are parsed in a worker thread
SHUTDOWN_S = 5.0  # at stop, how long a request in flight may take to finish (an inbox commit)
_REASON_BY_STATUS = {404: "not_found", 413: "too_large", 400: "not_json", 422: "invalid", 408: "slow_body"}


@dataclass(frozen=True)
class WebhookLimits:
    """How much of the process one client may hold. Documented in the README (WEBHOOK_* settings)."""

    max_connections: int = 256
    header_timeout: float = 10.0  # to send a whole request head; also the keep-alive timeout
    body_timeout: float = 30.0  # to send the body once the head is in
    audit_rows_per_minute: int = 10  # right-token refusals audited one by one; the rest summed up

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookLimits:
        return cls(
            max_connections=settings.webhook_max_connections,
            header_timeout=settings.webhook_header_timeout,
            body_timeout=settings.webhook_body_timeout,
        )


def _json_error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


async def _close_if_body_unread(request: web.Request, response: web.StreamResponse) -> None:
    """Answered before the body was read to its end: the answer says `Connection: close`; a
    compressed body's connection is also closed at once, reading nothing more.

    Left to itself, aiohttp reads the rest for up to LINGER_S before closing, and a compressed body
    is inflated as it is read: a 66 KB gzip bomb costs a quarter of a second of CPU, as often as
    anyone cares to send one, token or not. A plain body is only read and dropped, which is cheap
    and keeps the answer safe: closing while a sender is still uploading makes the kernel reset the
    connection, and the sender could lose the 413 already written (measured with httpx and 8 MiB).
    """
    if request.content.is_eof():  # read to its end (or no body): the connection may be kept
        return
    response.force_close()
    if request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower() not in ("", "identity"):
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()  # stop reading; the answer already written is still sent


class RejectionAudit:
    """Audit rows for refused requests that carried the right token: a sender we trust, so
    worth a row, but a buggy one posting 422s in a loop must not grow the append-only log
    without bound. The first `per_minute` a minute are rows; the rest are counted and written
    as one summary row when the minute ends.
    """

    def __init__(self, db: Database, per_minute: int, interval_s: float = 60.0) -> None:
        self.db = db
        self.per_minute = per_minute
        self._budget = AuditBudget(db, per_window=per_minute, window_s=interval_s, summary_action="webhook.rejected",
                                   summary="{total} more refused, not audited one by one")

    async def record(self, source: str, status: int, reason: str, remote: str | None) -> None:
        if await self._budget.take():
            await AuditRepository(self.db).record(
                "webhook.rejected", f"http {status}",
                detail={"source": source[:40], "reason": reason[:300], "remote": remote},
            )
        else:
            self._budget.count(f"http {status}")

    async def flush(self) -> None:
        await self._budget.flush()

    async def close(self) -> None:
        await self._budget.close()


class WebhookServer:
    def __init__(
        self,
        db: Database,
        token: str,
        on_accepted: Callable[[], None] = lambda: None,
        *,
        on_parsed: Callable[[int, ParsedPayload], None] | None = None,
        limits: WebhookLimits | None = None,
    ) -> None:
        self.db = db
        self._token = token.encode()
        self.on_accepted = on_accepted
        self.on_parsed = on_parsed  # (inbox id, parsed body), after the commit
        self.limits = limits or WebhookLimits()
        self.inbox = InboxWriter(db)
        self.rejected = RejectionTally(log)
        self.audit = RejectionAudit(db, self.limits.audit_rows_per_minute)
        self.guard: ConnectionGuard | None = None
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self._track_request])
        self.app.router.add_post("/webhook/{source}/{token}", self.webhook)
        self.app.router.add_get("/healthz", self.healthz)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._log_filter = RateLimitFilter()
        self.port: int | None = None

    async def start(self, host: str, port: int) -> None:
        limits = self.limits
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, logger=http_log,
            # aiohttp closes idle kept-alive connections by itself too; a little later than the guard,
            # which counts the slow ones, so the guard always acts first and aiohttp is the backstop.
            keepalive_timeout=limits.header_timeout + 1.0,
            lingering_time=LINGER_S, shutdown_timeout=SHUTDOWN_S,
        )
        await self._runner.setup()
        assert self._runner.server is not None
        max_connections = connections_within_file_limit(limits.max_connections)
        if max_connections < limits.max_connections:
            log.warning("webhook: at most %s connections (half the file limit), not %s",
                        max_connections, limits.max_connections)
        self.guard = ConnectionGuard(
            self._runner.server, max_connections=max_connections, header_timeout=limits.header_timeout,
            on_refused=self.rejected.add,
        )
        for logger in (http_log, log, logging.getLogger("asyncio")):
            logger.addFilter(self._log_filter)
        # Our own listening socket (not web.TCPSite) so every connection goes through the guard.
        # asyncio accepts up to `backlog` sockets in one go before the guard sees any of them: keep that
        # burst inside the other half of the file limit, or a CPU-starved server hits EMFILE on a flood.
        self._listener = await asyncio.get_running_loop().create_server(
            self.guard, host, port, backlog=min(128, max(8, max_connections // 2)))
        self.port = self._listener.sockets[0].getsockname()[1] if self._listener.sockets else port
        log.info("webhook server listening on http://%s:%s", host, self.port)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.guard is not None:
            self.guard.close_all()
        self.rejected.close()
        await self.audit.close()
        for logger in (http_log, log, logging.getLogger("asyncio")):
            logger.removeFilter(self._log_filter)

    @property
    def connections(self) -> dict[str, int]:
        guard = self.guard
        if guard is None:
            return {"open": 0, "max": self.limits.max_connections, "dropped_idle": 0}
        return {"open": guard.open, "max": guard.max_connections, "dropped_idle": guard.dropped_idle}

    @web.middleware
    async def _track_request(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Tells the guard a request head is in (no head deadline while it is handled), and closes the
        connection after answering a request whose body was not read to its end (every route and
        every miss goes through here, so a stranger's 404 too)."""
        guard = self.guard
        if guard is not None:
            guard.request_started(request.protocol)
        try:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # a 404/405 from the router: a response too
                await _close_if_body_unread(request, exc)
                raise
            await _close_if_body_unread(request, response)
            return response
        finally:
            if guard is not None:
                guard.request_finished(request.protocol)

    async def _reject(self, request: web.Request, status: int, reason: str) -> web.Response:
        """A refusal of a request that carried the right token: counted, and audited within limits."""
        self.rejected.add(_REASON_BY_STATUS.get(status, "invalid"), request.remote)
        try:
            await self.audit.record(request.match_info.get("source", "?"), status, reason, request.remote)
        except Exception:  # the sender still gets its 4xx; the log says the audit row is missing
            log.exception("webhook: could not audit a refused request")
        return _json_error(status, reason)

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        source = request.match_info["source"]
        given = request.match_info["token"].encode()
        # Constant-time comparison; a wrong token looks exactly like a missing route. Strangers
        # are only counted: a row per request would let anyone grow the append-only audit log.
        if not hmac.compare_digest(given, self._token) or source not in SOURCES:
            self.rejected.add("not_found", request.remote)
            return _json_error(404, "not found")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return await self._reject(request, 413, f"body over {MAX_BODY} bytes")
        body = await self._read_body(request)
        if isinstance(body, web.StreamResponse):
            return body
        try:
            parsed = await self._parse(source, body)
        except PayloadError as exc:
            return await self._reject(request, exc.status, exc.reason)
        except Exception as exc:  # a parser bug must still be a 4xx for the sender, and a log line for us
            log.exception("webhook: could not parse a %s body", source)
            return await self._reject(request, 422, f"body could not be parsed ({type(exc).__name__})")
        try:
            inbox_id = await self.inbox.add(source, body)
        except Exception:
            log.exception("could not store an incoming alert")
            return _json_error(503, "could not store the alert; please retry")
        self._hand_over(inbox_id, parsed)
        return web.json_response({"accepted": True, "inbox_id": inbox_id}, status=202)

    @staticmethod
    async def _parse(source: str, body: bytes) -> ParsedPayload:
        """Parse once. A big body is parsed in a worker thread so the loop keeps answering; a small
        one (every real alert) inline: with every field capped it takes well under a millisecond,
        less than the thread hop (measured: -30% throughput at 32 concurrent senders)."""
        if len(body) <= PARSE_INLINE_MAX:
            return parse_payload(source, body)
        return await asyncio.to_thread(parse_payload, source, body)

    async def _read_body(self, request: web.Request) -> bytes | web.StreamResponse:
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                return await request.read()
        # Each refusal below leaves the rest of the body unread: `_track_request` closes the connection.
        except web.HTTPRequestEntityTooLarge:
            return await self._reject(request, 413, f"body over {MAX_BODY} bytes")
        except web.RequestPayloadError as exc:  # e.g. Content-Encoding: gzip over a body that is not
            return await self._reject(request, 400, f"body could not be decoded: {exc}")
        except TimeoutError:
            return await self._reject(request, 408, f"body not received within {self.limits.body_timeout:g} s")

    def _hand_over(self, inbox_id: int, parsed: ParsedPayload) -> None:
        """The row is committed: hand the parsed body over, then wake the pipeline. A failing callback
        must not turn a stored alert into a 500 (the pipeline parses the stored body instead)."""
        try:
            if self.on_parsed is not None:
                self.on_parsed(inbox_id, parsed)
            self.on_accepted()
        except Exception:
            log.exception("webhook: the pipeline callback failed (the alert is stored and will be processed)")

    async def healthz(self, request: web.Request) -> web.Response:
        inbox = await InboxRepository(self.db).depth()
        outbox = await OutboxRepository(self.db).depth()
        return web.json_response({
            "status": "ok", "version": __version__, "inbox_depth": inbox, "outbox_depth": outbox,
            "rejected": self.rejected.snapshot(), "connections": self.connections,
        })
