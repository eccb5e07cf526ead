"""The HTTP server for incoming alerts (aiohttp).

`POST /webhook/{source}/{token}`: the token travels in the URL because GlitchTip cannot send
a header or signature. Checks run cheapest first (token, size, JSON, shape); a rejected request
leaves only an audit line. An accepted body is committed to the inbox before the 202.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from aiohttp import web

from bot import __version__
from bot.inbox_writer import InboxWriter
from bot.ingest import SOURCES, PayloadError, parse_payload
from storage.audit import AuditRepository
from storage.db import Database
from storage.inbox import InboxRepository
from storage.outbox import OutboxRepository

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024


def _json_error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


class WebhookServer:
    def __init__(self, db: Database, token: str, on_accepted: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self._token = token.encode()
        self.on_accepted = on_accepted
        self.inbox = InboxWriter(db)
        self.app = web.Application(client_max_size=MAX_BODY)
        self.app.router.add_post("/webhook/{source}/{token}", self.webhook)
        self.app.router.add_get("/healthz", self.healthz)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses
        self.port = addresses[0][1] if addresses else port
        log.info("webhook server listening on http://%s:%s", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _reject(self, request: web.Request, status: int, reason: str) -> web.Response:
        source = request.match_info.get("source", "?")
        await AuditRepository(self.db).record(
            "webhook.rejected", f"http {status}",
            detail={"source": source[:40], "reason": reason[:300], "remote": request.remote},
        )
        return _json_error(status, reason)

    async def webhook(self, request: web.Request) -> web.Response:
        source = request.match_info["source"]
        given = request.match_info["token"].encode()
        # Constant-time comparison; a wrong token looks exactly like a missing route.
        if not hmac.compare_digest(given, self._token) or source not in SOURCES:
            return await self._reject(request, 404, "not found")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return await self._reject(request, 413, f"body over {MAX_BODY} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return await self._reject(request, 413, f"body over {MAX_BODY} bytes")
        try:
            parse_payload(source, body)
        except PayloadError as exc:
            return await self._reject(request, exc.status, exc.reason)
        try:
            inbox_id = await self.inbox.add(source, body)
        except Exception:
            log.exception("could not store an incoming alert")
            return _json_error(503, "could not store the alert; please retry")
        self.on_accepted()
        return web.json_response({"accepted": True, "inbox_id": inbox_id}, status=202)

    async def healthz(self, request: web.Request) -> web.Response:
        inbox = await InboxRepository(self.db).depth()
        outbox = await OutboxRepository(self.db).depth()
        return web.json_response(
            {"status": "ok", "version": __version__, "inbox_depth": inbox, "outbox_depth": outbox}
        )
