"""The lifecycle the loopback fakes share (tests/github_fake.py, tests/glitchtip_fake.py): one
aiohttp catch-all route on 127.0.0.1, a port kept across a stop, and a real outage."""

from __future__ import annotations

from typing import Self

from aiohttp import web


class LoopbackServer:
    """Subclasses answer every request in `_handle`."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0  # chosen at the first start, kept by `come_back`

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A stop (or an outage) does not wait for a scripted slow answer to finish.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def go_down(self) -> None:
        """An outage: nothing listens on the port any more (connection refused)."""
        await self.stop()

    async def come_back(self) -> None:
        await self.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
