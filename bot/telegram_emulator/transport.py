"""The HTTP side of the Bot API: ``/bot{token}/{method}`` requests in, Telegram's JSON out.

Everything a call goes through before and after a method runs, in Telegram's order:
decode the parameters (query string, urlencoded, multipart or JSON, then give them
their real types), wait the configured latency, check the token (401), find the method
(404), apply injected faults, run it, answer ``{"ok": ...}`` and record the call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Protocol

from aiohttp import web

from .changes import ChangeSignal
from .errors import ApiError, bad_request
from .faults import FaultInjector
from .methods import BotMethods
from .models import ApiCall, UploadedFile
from .state import ChatState

log = logging.getLogger(__name__)

# Bot API parameters arrive as strings (form encoding); these are decoded to their real types
# so handlers and ``calls`` see what the bot meant to send.
_INT_PARAMS = frozenset(
    [
        "chat_id",
        "message_id",
        "offset",
        "limit",
        "timeout",
        "message_thread_id",
        "reply_to_message_id",
        "cache_time",
        "user_id",
        "from_chat_id",
    ]
)
_BOOL_PARAMS = frozenset(
    [
        "show_alert",
        "disable_notification",
        "protect_content",
        "drop_pending_updates",
        "disable_web_page_preview",
        "allow_sending_without_reply",
        "allow_paid_broadcast",
    ]
)
_JSON_PARAMS = frozenset(
    [
        "reply_markup",
        "allowed_updates",
        "commands",
        "scope",
        "entities",
        "caption_entities",
        "link_preview_options",
        "reply_parameters",
    ]
)


class TransportSettings(Protocol):
    """Settings read on every request, so a test can change them on a running emulator."""

    token: str | None
    latency: float


class BotApiTransport:
    """Serves Bot API requests: one aiohttp handler in front of :class:`BotMethods`."""

    def __init__(
        self,
        settings: TransportSettings,
        methods: BotMethods,
        faults: FaultInjector,
        state: ChatState,
        calls: list[ApiCall],
        signal: ChangeSignal,
    ) -> None:
        self._settings = settings
        self._methods = methods
        self._faults = faults
        self._state = state
        self._calls = calls
        self._signal = signal

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one ``/bot{token}/{method}`` request; an emulator bug answers 500, like Telegram's."""
        token = request.match_info["token"]
        received = time.time()
        started = time.monotonic()
        method = self._methods.canonical_name(request.match_info["method"])
        params: dict[str, Any] = {}
        try:
            params = await read_params(request)
            result = await self._call(token, method, params)
            status, body = 200, {"ok": True, "result": result}
        except ApiError as err:
            status, body = err.status, err.payload()
        except Exception:
            # An emulator bug must look like a Telegram 500 to the bot, not a decode error.
            log.exception("emulator failed handling %s", method)
            status, body = 500, ApiError(500, "Internal Server Error").payload()
        self._calls.append(
            ApiCall(
                method=method,
                params=_recorded(params),
                token=token,
                time=received,
                duration=time.monotonic() - started,
                status=status,
                description=None if status == 200 else body.get("description"),
            )
        )
        self._signal.notify()
        return web.json_response(body, status=status)

    async def _call(self, token: str, method: str, params: dict[str, Any]) -> Any:
        if self._settings.latency:
            await asyncio.sleep(self._settings.latency)
        if self._settings.token is not None and token != self._settings.token:
            raise ApiError(401, "Unauthorized")
        handler = self._methods.handler(method)
        if handler is None:
            raise ApiError(404, "Not Found: method not found")
        self._faults.check(method)
        self._state.bot_id = _bot_id(token)
        return await handler(params)


async def read_params(request: web.Request) -> dict[str, Any]:
    """Decode a Bot API request the ways Telegram accepts: query, urlencoded, multipart, JSON."""
    raw: dict[str, Any] = dict(request.query)
    if request.body_exists:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise bad_request("can't parse JSON request body") from None
            if not isinstance(body, dict):
                raise bad_request("JSON request body must be an object")
            raw.update(body)
        else:
            try:
                form = await request.post()
            except web.HTTPRequestEntityTooLarge:
                raise ApiError(413, "Request Entity Too Large") from None
            for key, value in form.items():
                raw[key] = value if isinstance(value, str) else _uploaded(key, value)
    return {key: _coerce(key, value) for key, value in raw.items()}


def _uploaded(key: str, part: Any) -> UploadedFile:
    """A multipart file part, read whole (the methods check its size and kind as Telegram does)."""
    filename = getattr(part, "filename", None) or key
    stream = getattr(part, "file", None)
    return UploadedFile(filename, stream.read() if stream is not None else bytes(part))


def _recorded(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as the call log keeps them: an uploaded file by its name, not its bytes."""
    return {key: str(value) if isinstance(value, UploadedFile) else value for key, value in params.items()}


def _coerce(key: str, value: Any) -> Any:
    """Give a form-encoded parameter its real type (ints, booleans, JSON objects)."""
    if not isinstance(value, str):
        return value
    if key in _INT_PARAMS:
        try:
            return int(value)
        except ValueError:
            return value
    if key in _BOOL_PARAMS:
        return value.strip().lower() in ("true", "1")
    if key in _JSON_PARAMS:
        try:
            return json.loads(value)
        except ValueError:
            if key == "reply_markup":
                raise bad_request("can't parse reply keyboard markup JSON object") from None
            raise bad_request(f"can't parse {key} JSON object") from None
    return value


def _bot_id(token: str) -> int:
    """aiogram derives ``bot.id`` from the token prefix; getMe must agree with it."""
    prefix = token.split(":", 1)[0]
    return int(prefix) if prefix.isdigit() else 1
