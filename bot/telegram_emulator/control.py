"""The HTTP control API under ``/_emulator/``: drive and inspect the emulator from another process.

In-process code calls :class:`BotAPIEmulator` directly; a benchmark, a shell or a test in
another process uses these endpoints instead. Each one is a thin JSON wrapper over a
public emulator method, so both ways behave the same:

=========================  =====================================================
``GET  /_emulator/state``    :meth:`~BotAPIEmulator.snapshot`
``GET  /_emulator/calls``    recorded calls; ``?since=N&method=M``
``GET  /_emulator/answer``   wait for a query's answer; ``?id=Q&timeout=S``
``GET  /_emulator/file``     a photo's or document's bytes; ``?chat_id=C&message_id=M``
``POST /_emulator/message``  a user writes: ``{chat_id, user_id, text}``
``POST /_emulator/press``    a user presses: ``{chat_id, message_id, user_id, data}``
``POST /_emulator/fail``     queue a fault: ``{method, status, times, retry_after}``
``POST /_emulator/outage``   ``{"seconds": S}`` or ``{"down": true|false}``
``POST /_emulator/reset``    forget everything
=========================  =====================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .server import BotAPIEmulator


def add_control_routes(app: web.Application, emulator: BotAPIEmulator) -> None:
    """Register the ``/_emulator/`` endpoints for ``emulator`` on ``app``."""
    control = _ControlAPI(emulator)
    app.router.add_get("/_emulator/state", control.state)
    app.router.add_get("/_emulator/calls", control.calls)
    app.router.add_get("/_emulator/answer", control.answer)
    app.router.add_get("/_emulator/file", control.file)
    app.router.add_post("/_emulator/message", control.message)
    app.router.add_post("/_emulator/press", control.press)
    app.router.add_post("/_emulator/fail", control.fail)
    app.router.add_post("/_emulator/outage", control.outage)
    app.router.add_post("/_emulator/reset", control.reset)


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status)


class _ControlAPI:
    def __init__(self, emulator: BotAPIEmulator) -> None:
        self._emu = emulator

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(self._emu.snapshot())

    async def calls(self, request: web.Request) -> web.Response:
        """``?since=N`` returns calls[N:] and ``next`` to pass as since the next time."""
        since = _int_arg(request.query.get("since"), 0)
        method = request.query.get("method")
        recorded = self._emu.calls
        calls = [c.to_dict() for c in recorded[since:] if method is None or c.method.lower() == method.lower()]
        return web.json_response({"calls": calls, "next": len(recorded)})

    async def answer(self, request: web.Request) -> web.Response:
        """``?id=Q&timeout=S``: wait for the answer to a callback query (404 unknown, 408 timeout)."""
        query_id = request.query.get("id", "")
        try:
            timeout = float(request.query.get("timeout", "5"))
        except ValueError:
            return _error("timeout must be a number", 400)
        try:
            answer = await self._emu.wait_for_answer(query_id, timeout)
        except LookupError as err:
            return _error(str(err), 404)
        except TimeoutError as err:
            return _error(str(err), 408)
        return web.json_response(answer)

    async def file(self, request: web.Request) -> web.Response:
        """``?chat_id=C&message_id=M``: the bytes of that message's photo or document (404 if it has none)."""
        try:
            msg = self._emu.message(int(request.query["chat_id"]), int(request.query["message_id"]))
        except (KeyError, ValueError):
            return _error("no such message", 404)
        if msg.media is None:
            return _error("the message has no photo or document", 404)
        return web.Response(
            body=msg.media.content,
            content_type=msg.media.mime_type,
            headers={"Content-Disposition": f'attachment; filename="{msg.media.file_name.replace(chr(34), "")}"'},
        )

    async def message(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            message = self._emu.send_user_message(
                int(body["chat_id"]),
                int(body["user_id"]),
                str(body["text"]),
                first_name=str(body.get("first_name", "Ann")),
                username=body.get("username"),
            )
        except (KeyError, TypeError, ValueError) as err:
            return _error(f"bad request: {err}", 400)
        return web.json_response(message)

    async def press(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            query_id = self._emu.press_button(
                int(body["chat_id"]),
                int(body["message_id"]),
                int(body["user_id"]),
                str(body["data"]),
                first_name=str(body.get("first_name", "Ann")),
                username=body.get("username"),
            )
        except LookupError as err:  # a missing field is a KeyError, so it also answers 404
            return _error(str(err), 404)
        except (TypeError, ValueError) as err:
            return _error(f"bad request: {err}", 400)
        return web.json_response({"callback_query_id": query_id})

    async def fail(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            self._emu.fail(
                body.get("method"),
                int(body["status"]),
                times=int(body.get("times", 1)),
                retry_after=None if body.get("retry_after") is None else int(body["retry_after"]),
                description=body.get("description"),
            )
        except (KeyError, TypeError, ValueError) as err:
            return _error(f"bad request: {err}", 400)
        return web.json_response({"ok": True})

    async def outage(self, request: web.Request) -> web.Response:
        """``{"seconds": S}`` for a timed outage, ``{"down": true|false}`` to switch by hand."""
        body = await _json_body(request)
        if "seconds" in body:
            try:
                self._emu.outage(float(body["seconds"]))
            except (TypeError, ValueError):
                return _error("seconds must be a number", 400)
        else:
            self._emu.set_down(bool(body.get("down", True)))
        return web.json_response({"ok": True, "down": self._emu.is_down})

    async def reset(self, request: web.Request) -> web.Response:
        self._emu.reset()
        return web.json_response({"ok": True})


def _int_arg(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body
