"""aiogram's aiohttp session, minus three costs it pays again and again for nothing.

- `AiohttpSession.__init__` loads certifi's CA bundle into a new `SSLContext` for every session
  (about 30 ms of CPU each time); one context, made on first use, serves every session here.
- Each answer is validated with `Response[<the method's result type>]`, a pydantic generic that
  pydantic keeps only in a weak cache: once nothing else holds it, the garbage collector drops it
  and the next answer builds its validator again (2-8 ms of CPU each time, hundreds of times in
  a test run). The ones this process has used are kept here, so each is built once.
- Over plain http (the emulator, a local Bot API server) `close` does not wait the quarter of a
  second aiogram waits for TLS connections to shut down: there are none.
"""

from __future__ import annotations

import functools
import ssl
from typing import TYPE_CHECKING, Any

import certifi
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import PRODUCTION, TelegramAPIServer
from aiogram.methods import Response, TelegramMethod
from aiohttp import TCPConnector

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.methods.base import TelegramType

#: `Response[T]` per result type T used so far: held so pydantic's weak cache keeps each one.
_RESPONSE_MODELS: dict[Any, type[Response[Any]]] = {}


@functools.cache
def telegram_tls_context() -> ssl.SSLContext:
    """The TLS context aiogram would make for each session (certifi's CAs), made once per process."""
    return ssl.create_default_context(cafile=certifi.where())


class BotSession(AiohttpSession):
    """`AiohttpSession` with a shared TLS context, validators built once, and no TLS wait over http."""

    def __init__(self, api: TelegramAPIServer = PRODUCTION) -> None:
        # Not AiohttpSession.__init__: it would load the CA bundle again. These are the attributes
        # it sets, without a proxy (tests/test_outbox_sender.py checks none is missing).
        BaseSession.__init__(self, api=api)
        self._session = None
        self._connector_type = TCPConnector
        self._connector_init = {"ssl": telegram_tls_context(), "limit": 100, "ttl_dns_cache": 3600}
        self._should_reset_connector = True
        self._proxy = None
        self._plain_http = api.base.startswith("http://")

    def check_response(
        self, bot: Bot, method: TelegramMethod[TelegramType], status_code: int, content: str
    ) -> Response[TelegramType]:
        returning = method.__returning__
        if returning not in _RESPONSE_MODELS:
            _RESPONSE_MODELS[returning] = Response[returning]  # type: ignore[valid-type]
        return super().check_response(bot, method, status_code, content)

    async def close(self) -> None:
        if not self._plain_http:
            await super().close()
        elif self._session is not None and not self._session.closed:
            await self._session.close()
