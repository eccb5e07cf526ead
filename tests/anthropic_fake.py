"""A loopback fake of Anthropic's Messages API, for the real `anthropic` SDK pointed at it by base_url.

    async with anthropic_fake() as fake:
        fake.script(tool_use_reply("triage", {...}), error_reply(429, "slow down"))
        client = fake.client()  # the SDK's client (bot.llm.gate.claude_client) at fake.base_url

Replies are served in order to POST /v1/messages; once the script is used up, `fake.default`
(a callable taking the request body) answers, and without one the fake answers 500 so a test
that made more calls than it scripted fails loudly. Every request body is kept in
`fake.requests` (what left the machine: redaction, tools, model).

The answers have the shape of the real API's (`id`, `type`, `role`, `model` echoing the
request's, `content`, `stop_reason`, `usage.input_tokens/output_tokens`; errors as
{"type": "error", "error": {"type": ..., "message": ...}}).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.llm.gate import claude_client

if TYPE_CHECKING:
    # The SDK takes seconds to import: only the tests that make a client (`AnthropicFake.client`)
    # load it, not every pytest worker that merely collects the files importing this one.
    import anthropic

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_ids = itertools.count(1)


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `body` None with `raw` set: that text as-is (malformed JSON)."""

    status: int = 200
    body: dict[str, Any] | None = None
    raw: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hold: asyncio.Event | None = None  # answered only once set


def _message(content: list[dict[str, Any]], *, stop_reason: str, input_tokens: int, output_tokens: int,
             model: str | None) -> dict[str, Any]:
    return {
        "id": f"msg_fake{next(_ids):06d}",
        "type": "message",
        "role": "assistant",
        "model": model,  # None: the request's model is echoed
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def text_reply(text: str, *, input_tokens: int = 100, output_tokens: int = 50, model: str | None = None,
               stop_reason: str = "end_turn") -> Reply:
    return Reply(body=_message([{"type": "text", "text": text}], stop_reason=stop_reason,
                               input_tokens=input_tokens, output_tokens=output_tokens, model=model))


def json_reply(obj: Any, **kwargs: Any) -> Reply:
    """A text answer whose text is the JSON of `obj`."""
    return text_reply(json.dumps(obj), **kwargs)


def tool_use_reply(name: str, input: dict[str, Any], *, tool_id: str | None = None, text: str | None = None,
                   input_tokens: int = 100, output_tokens: int = 50, model: str | None = None,
                   stop_reason: str = "tool_use") -> Reply:
    """Claude calling tool `name` with `input` (after an optional text block)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text is not None else []
    content.append({"type": "tool_use", "id": tool_id or f"toolu_fake{next(_ids):06d}", "name": name,
                    "input": input})
    return Reply(body=_message(content, stop_reason=stop_reason, input_tokens=input_tokens,
                               output_tokens=output_tokens, model=model))


def error_reply(status: int, message: str = "error", *, headers: dict[str, str] | None = None) -> Reply:
    """An API error in Anthropic's shape (429 rate_limit_error, 529 overloaded_error, 500 api_error…)."""
    kind = _ERROR_TYPES.get(status, "api_error")
    return Reply(status=status, body={"type": "error", "error": {"type": kind, "message": message}},
                 headers=dict(headers or {}))


def slow_reply(seconds: float, reply: Reply) -> Reply:
    """`reply`, answered `seconds` late (for timeouts)."""
    return Reply(status=reply.status, body=reply.body, raw=reply.raw, headers=reply.headers, delay_s=seconds)


def held_reply(reply: Reply) -> tuple[Reply, asyncio.Event]:
    """`reply`, answered only when the test sets the event: Claude "still thinking" for exactly as long
    as the test looks at what happens meanwhile, instead of a delay long enough for a loaded machine."""
    release = asyncio.Event()
    return Reply(status=reply.status, body=reply.body, raw=reply.raw, headers=reply.headers, hold=release), release


def raw_reply(status: int, body_text: str) -> Reply:
    """A body sent as-is with a JSON content type (malformed JSON)."""
    return Reply(status=status, raw=body_text)


class AnthropicFake:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.default: Callable[[dict[str, Any]], Reply] | None = None
        self._script: list[Reply] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.received = asyncio.Event()  # set at each request (tests may clear it and wait)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        """Queue answers, served in order (after any still queued)."""
        self._script.extend(replies)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def client(self, api_key: str = "sk-ant-test") -> anthropic.AsyncAnthropic:
        """The real SDK's client, pointed at this fake, without retries (a test scripts each answer)."""
        return claude_client(api_key, base_url=self.base_url)

    async def start(self) -> AnthropicFake:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _unknown(self, request: web.Request) -> web.Response:
        return web.json_response({"type": "error", "error": {"type": "not_found_error",
                                                             "message": f"{request.path} is not faked"}},
                                 status=404)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        self.received.set()
        if self._script:
            reply = self._script.pop(0)
        elif self.default is not None:
            reply = self.default(body)
        else:
            reply = error_reply(500, "the fake has no scripted answer left")
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.hold is not None:
            await reply.hold.wait()
        headers = {"request-id": f"req_fake{next(_ids):06d}", **reply.headers}
        if reply.body is None:
            return web.Response(status=reply.status, text=reply.raw or "", content_type="application/json",
                                headers=headers)
        answer = dict(reply.body)
        if answer.get("type") == "message" and answer.get("model") is None:
            answer["model"] = body.get("model", "unknown")
        return web.json_response(answer, status=reply.status, headers=headers)


@asynccontextmanager
async def anthropic_fake() -> AsyncIterator[AnthropicFake]:
    fake = await AnthropicFake().start()
    try:
        yield fake
    finally:
        await fake.stop()
