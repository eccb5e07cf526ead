"""The emulator itself: an aiohttp server speaking the Bot API wire format.

Why a real HTTP server rather than a mocked ``Bot``: the bot under test then runs its
production code path unchanged (aiogram's session, form encoding, JSON decoding, error
classes, retry logic, polling loop), and a benchmark in another process can watch the
same traffic. Everything lives in one event loop; the emulator is not thread-safe.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web

from .markup import (
    MAX_MESSAGE_UTF16,
    HTMLParseError,
    MarkupError,
    bot_command_entities,
    parse_html,
    trim,
    utf16_len,
    validate_reply_markup,
)

log = logging.getLogger(__name__)

EventKind = Literal["new", "edit", "delete", "answer", "message", "press"]

_CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
_QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: _CONFLICT,
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_CHAT_ACTIONS = frozenset(
    [
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    ]
)
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


class ApiError(Exception):
    """A Bot API error answer: raised by method handlers, rendered in Telegram's JSON shape."""

    def __init__(
        self, status: int, description: str, retry_after: int | None = None, migrate_to_chat_id: int | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.migrate_to_chat_id = migrate_to_chat_id

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        if self.migrate_to_chat_id is not None:
            body["parameters"] = {"migrate_to_chat_id": self.migrate_to_chat_id}
        return body


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


@dataclass
class StoredMessage:
    """The emulator's current view of one message (bot's or user's).

    ``text`` is exactly what was sent (HTML markup included, so tests can assert on
    formatting); ``plain_text`` is what a user sees. ``history`` holds every text the
    message has had, oldest first, the current one last.
    """

    chat_id: int
    message_id: int
    date: int
    sender: dict[str, Any]
    chat: dict[str, Any]
    text: str
    plain_text: str
    parse_mode: str | None
    entities: list[dict[str, Any]]
    reply_markup: dict[str, Any] | None
    from_bot: bool
    reply_to_message_id: int | None = None
    edit_count: int = 0
    edit_date: int | None = None
    history: list[str] = field(default_factory=list)
    deleted: bool = False

    @property
    def buttons(self) -> list[list[dict[str, Any]]]:
        """Inline keyboard rows (empty when there is none)."""
        if not self.reply_markup:
            return []
        return list(self.reply_markup.get("inline_keyboard") or [])

    @property
    def button_texts(self) -> list[str]:
        """Labels of all inline buttons, row by row."""
        return [b.get("text", "") for row in self.buttons for b in row]

    def find_button(self, data: str) -> dict[str, Any] | None:
        """The inline button whose callback_data is ``data``."""
        for row in self.buttons:
            for button in row:
                if button.get("callback_data") == data:
                    return button
        return None

    def to_api(self, reply_to: StoredMessage | None = None) -> dict[str, Any]:
        """The Bot API ``Message`` object, as aiogram expects to parse it."""
        msg: dict[str, Any] = {
            "message_id": self.message_id,
            "from": self.sender,
            "chat": self.chat,
            "date": self.date,
            "text": self.plain_text,
        }
        if self.entities:
            msg["entities"] = self.entities
        if self.edit_date is not None:
            msg["edit_date"] = self.edit_date
        if self.reply_markup and "inline_keyboard" in self.reply_markup:
            msg["reply_markup"] = self.reply_markup
        if reply_to is not None:
            msg["reply_to_message"] = reply_to.to_api()
        return msg

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state for the HTTP control API."""
        return asdict(self)


@dataclass(frozen=True)
class ApiCall:
    """One Bot API request as received: what was asked and how it was answered."""

    method: str
    params: dict[str, Any]
    token: str
    time: float  # wall clock (time.time()) when the request arrived
    duration: float  # seconds until the answer (long polls included)
    status: int  # HTTP status of the answer
    description: str | None = None  # error description when not ok

    @property
    def ok(self) -> bool:
        return self.status == 200

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class EmulatorEvent:
    """What ``on_event`` observers receive: one visible thing happening in the chat.

    kinds: ``new`` / ``edit`` / ``delete`` (bot changed a message), ``answer`` (bot
    answered a callback query), ``message`` / ``press`` (a user wrote / pressed a button).
    """

    kind: EventKind
    chat_id: int | None = None
    message_id: int | None = None
    text: str | None = None  # message text as sent (HTML included) / answer text
    plain_text: str | None = None
    parse_mode: str | None = None
    reply_markup: dict[str, Any] | None = None
    markup_only: bool = False  # an edit that changed only the keyboard
    user_id: int | None = None
    user_name: str | None = None
    data: str | None = None  # callback_data of a pressed button
    button_text: str | None = None
    callback_query_id: str | None = None
    show_alert: bool = False
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Fault:
    method: str | None  # lower-case method name, None = any but getUpdates
    status: int
    remaining: int
    retry_after: int | None
    description: str | None


@dataclass
class _CallbackQuery:
    id: str
    chat_id: int
    message_id: int
    user_id: int
    data: str
    created: float = field(default_factory=time.monotonic)
    answer: dict[str, Any] | None = None


class BotAPIEmulator:
    """A local stand-in for ``api.telegram.org`` that keeps chat state and can misbehave on demand.

    Point aiogram at it with
    ``Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(emu.base_url)))``.

    :param token: if set, only this bot token is accepted (others get 401); otherwise any
        token is, and each call records the one it used.
    :param on_event: called with an :class:`EmulatorEvent` for every visible change
        (the demo prints them with :func:`format_event`); may return an awaitable.
    :param strict_html: also refuse a bare ``&`` in HTML (real Telegram shows it
        literally); on by default because it is always an escaping bug.
    :param latency: seconds added before answering each API call, to mimic the network.
    :param query_ttl: seconds a callback query can still be answered, as in Telegram
        (about 15 s); a bot that does slow work before ``answer()`` fails the same way here.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        on_event: Callable[[EmulatorEvent], Any] | None = None,
        bot_username: str = "remediator_bot",
        bot_first_name: str = "Remediator",
        strict_html: bool = True,
        latency: float = 0.0,
        query_ttl: float = 15.0,
    ) -> None:
        self.token = token
        self.on_event = on_event
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        self.strict_html = strict_html
        self.latency = latency
        self.query_ttl = query_ttl
        self.calls: list[ApiCall] = []
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._closing = False
        self._changed = asyncio.Event()
        self._event_tasks: set[asyncio.Task[Any]] = set()
        self._query_ids = itertools.count(random.randint(10**15, 9 * 10**15))
        # Poll bookkeeping survives reset(): a poll held open across it must not see a 409.
        self._poll_generation = 0
        self._waiting_polls = 0
        self._init_state()

    def _init_state(self) -> None:
        self._chats: dict[int, dict[int, StoredMessage]] = {}
        self._next_message_id: dict[int, int] = {}
        self._chat_users: dict[int, dict[str, Any]] = {}
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 1
        self._allowed_updates: list[str] | None = None
        self._queries: dict[str, _CallbackQuery] = {}
        self._faults: list[_Fault] = []
        self._down = False
        self._down_until: float | None = None
        self._commands: dict[str, list[dict[str, Any]]] = {}
        self._bot_id = 1
        self._migrated: dict[int, int] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port``; port 0 picks a free one (read it back from ``base_url``)."""
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        self._closing = False
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/_emulator/state", self._ctl_state)
        app.router.add_get("/_emulator/calls", self._ctl_calls)
        app.router.add_get("/_emulator/answer", self._ctl_answer)
        app.router.add_post("/_emulator/message", self._ctl_message)
        app.router.add_post("/_emulator/press", self._ctl_press)
        app.router.add_post("/_emulator/fail", self._ctl_fail)
        app.router.add_post("/_emulator/outage", self._ctl_outage)
        app.router.add_post("/_emulator/reset", self._ctl_reset)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self._base_url = f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        """Release pending long polls (they answer ``[]``) and shut the server down."""
        self._closing = True
        self._notify()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        for task in list(self._event_tasks):
            task.cancel()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``; pass it to ``TelegramAPIServer.from_base``."""
        if self._base_url is None:
            raise RuntimeError("emulator not started")
        return self._base_url

    # ------------------------------------------------------------------ fault injection

    def fail(
        self,
        method: str | None,
        status: int,
        times: int = 1,
        retry_after: int | None = None,
        description: str | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` (None: any method but getUpdates) fail.

        The failing calls change no state. 429 answers carry ``parameters.retry_after``
        (default 1), which aiogram turns into ``TelegramRetryAfter``. Several ``fail()``
        calls queue up in order: ``fail(m, 429, times=2); fail(m, 500)`` is 429, 429, 500.
        """
        if status == 429 and retry_after is None:
            retry_after = 1
        self._faults.append(_Fault(method.lower() if method else None, status, times, retry_after, description))

    def migrate_chat(self, old_chat_id: int, new_chat_id: int) -> None:
        """The group becomes a supergroup: calls to the old id answer 400 with migrate_to_chat_id."""
        self._migrated[old_chat_id] = new_chat_id

    def set_down(self, down: bool) -> None:
        """Answer every method except getUpdates with 502 Bad Gateway until lifted."""
        self._down = down
        self._down_until = None

    def outage(self, seconds: float) -> None:
        """A 502 outage (every method except getUpdates) that ends by itself after ``seconds``."""
        self._down = False
        self._down_until = time.monotonic() + seconds

    @property
    def is_down(self) -> bool:
        return self._down or (self._down_until is not None and time.monotonic() < self._down_until)

    # ------------------------------------------------------------------ driving (the user's side)

    def send_user_message(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        first_name: str = "Ann",
        username: str | None = None,
        *,
        reply_to_message_id: int | None = None,
    ) -> dict[str, Any]:
        """A user writes ``text`` in ``chat_id``; queues the Update and returns its Message.

        Commands such as ``/start`` get ``bot_command`` entities, as from real Telegram.
        """
        user = self._user(user_id, first_name, username)
        if chat_id > 0:
            self._chat_users[chat_id] = user
        msg = self._store(
            chat_id,
            sender=user,
            text=text,
            plain_text=text,
            parse_mode=None,
            entities=bot_command_entities(text),
            reply_markup=None,
            from_bot=False,
            reply_to_message_id=reply_to_message_id,
        )
        api = self._message_api(msg)
        self._queue_update("message", api)
        self._emit(
            EmulatorEvent(
                kind="message",
                chat_id=chat_id,
                message_id=msg.message_id,
                text=text,
                plain_text=text,
                user_id=user_id,
                user_name=_display_name(user),
            )
        )
        return api

    def press_button(
        self,
        chat_id: int,
        message_id: int,
        user_id: int,
        data: str,
        first_name: str = "Ann",
        username: str | None = None,
        *,
        stale: bool = False,
    ) -> str:
        """A user presses the inline button with callback_data ``data``; returns the query id.

        Raises ``LookupError`` if the message or the button does not exist (a real user
        cannot press a button that is not there, so neither can a test), unless ``stale``:
        a client that has not yet received the latest edit still shows, and sends, the old
        button, which is how real users press stale cards.
        """
        msg = self._find(chat_id, message_id)
        if msg is None:
            raise LookupError(f"no message #{message_id} in chat {chat_id}")
        button = msg.find_button(data) or ({"text": "(stale)", "callback_data": data} if stale else None)
        if button is None:
            available = [b.get("callback_data") for row in msg.buttons for b in row]
            raise LookupError(f"message #{message_id} in chat {chat_id} has no button {data!r}; has {available}")
        user = self._user(user_id, first_name, username)
        query_id = str(next(self._query_ids))
        self._queries[query_id] = _CallbackQuery(query_id, chat_id, message_id, user_id, data)
        self._queue_update(
            "callback_query",
            {
                "id": query_id,
                "from": user,
                "message": self._message_api(msg),
                "chat_instance": str(abs(hash(("chat", chat_id)))),
                "data": data,
            },
        )
        self._emit(
            EmulatorEvent(
                kind="press",
                chat_id=chat_id,
                message_id=message_id,
                user_id=user_id,
                user_name=_display_name(user),
                data=data,
                button_text=button.get("text"),
                callback_query_id=query_id,
            )
        )
        return query_id

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:  # noqa: ASYNC109 - see wait_for_answer
        """Wait until ``predicate()`` is truthy and return its value; ``TimeoutError`` otherwise.

        Re-checked on every state change (and every 50 ms, for predicates on outside state).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            try:
                await asyncio.wait_for(changed.wait(), min(remaining, 0.05))
            except TimeoutError:
                pass

    async def wait_for_answer(
        self,
        callback_query_id: str,
        timeout: float = 5.0,  # noqa: ASYNC109 - a per-call timeout is the test-friendly API
    ) -> dict[str, Any]:
        """Wait for the bot's answerCallbackQuery; returns its params (text, show_alert, url, cache_time)."""
        query = self._queries.get(callback_query_id)
        if query is None:
            raise LookupError(f"unknown callback query {callback_query_id}")
        try:
            await self.wait_for(lambda: query.answer is not None, timeout)
        except TimeoutError:
            raise TimeoutError(f"callback query {callback_query_id} not answered within {timeout}s") from None
        assert query.answer is not None
        return query.answer

    # ------------------------------------------------------------------ inspection

    def messages(
        self, chat_id: int, *, include_user: bool = False, include_deleted: bool = False
    ) -> list[StoredMessage]:
        """Current state of the messages in ``chat_id``, oldest first; the bot's only by default."""
        return [
            m
            for m in self._chats.get(chat_id, {}).values()
            if (include_user or m.from_bot) and (include_deleted or not m.deleted)
        ]

    def message(self, chat_id: int, message_id: int) -> StoredMessage:
        """One message by id (deleted ones included); ``KeyError`` if it never existed."""
        return self._chats[chat_id][message_id]

    @property
    def chats(self) -> list[int]:
        """Chat ids that have seen any message."""
        return list(self._chats)

    def call_count(self, method: str | None = None, *, ok: bool | None = None) -> int:
        """Number of calls of ``method`` (None: all but getUpdates), optionally only (un)successful."""
        wanted = method.lower() if method else None
        return sum(
            1
            for c in self.calls
            if (c.method.lower() == wanted if wanted else c.method != "getUpdates") and (ok is None or c.ok == ok)
        )

    @property
    def commands(self) -> list[dict[str, Any]]:
        """Commands set by setMyCommands for the default scope and language."""
        return list(self._commands.get(_commands_key(None, None), []))

    @property
    def answers(self) -> dict[str, dict[str, Any] | None]:
        """callback_query_id -> answerCallbackQuery params (None while unanswered)."""
        return {qid: q.answer for qid, q in self._queries.items()}

    @property
    def waiting_polls(self) -> int:
        """getUpdates requests being held open right now (> 0 means the bot is polling)."""
        return self._waiting_polls

    @property
    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed by a getUpdates offset."""
        return len(self._updates)

    def reset(self) -> None:
        """Forget all chats, updates, calls, faults and commands (the server keeps running)."""
        self._init_state()
        self.calls.clear()
        self._notify()

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state: what ``GET /_emulator/state`` returns."""
        counts = Counter(c.method for c in self.calls)
        return {
            "messages": {
                str(chat_id): [m.to_dict() for m in self.messages(chat_id, include_user=True)]
                for chat_id in self._chats
            },
            "call_counts": dict(counts),
            "failed_calls": sum(1 for c in self.calls if not c.ok),
            "calls_total": len(self.calls),
            "answers": self.answers,
            "commands": self.commands,
            "pending_updates": self.pending_updates,
            "down": self.is_down,
        }

    # ------------------------------------------------------------------ internals: state

    def _notify(self) -> None:
        """Wake everyone waiting for a state change (long polls, wait_for)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _emit(self, event: EmulatorEvent) -> None:
        self._notify()
        if self.on_event is None:
            return
        try:
            result = self.on_event(event)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._event_tasks.add(task)
                task.add_done_callback(self._event_tasks.discard)
        except Exception:
            log.exception("on_event observer failed")

    def _user(self, user_id: int, first_name: str, username: str | None) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        return user

    def _bot_user(self) -> dict[str, Any]:
        return {
            "id": self._bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    def _chat(self, chat_id: int) -> dict[str, Any]:
        if chat_id < 0:
            kind = "supergroup" if chat_id <= -1_000_000_000_000 else "group"
            return {"id": chat_id, "type": kind, "title": f"Chat {chat_id}"}
        user = self._chat_users.get(chat_id, {})
        chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": user.get("first_name", "User")}
        if "username" in user:
            chat["username"] = user["username"]
        return chat

    def _store(self, chat_id: int, **fields: Any) -> StoredMessage:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        msg = StoredMessage(
            chat_id=chat_id,
            message_id=message_id,
            date=int(time.time()),
            chat=self._chat(chat_id),
            history=[fields["text"]],
            **fields,
        )
        self._chats.setdefault(chat_id, {})[message_id] = msg
        return msg

    def _find(self, chat_id: int, message_id: int) -> StoredMessage | None:
        msg = self._chats.get(chat_id, {}).get(message_id)
        return None if msg is None or msg.deleted else msg

    def _message_api(self, msg: StoredMessage) -> dict[str, Any]:
        reply_to = None
        if msg.reply_to_message_id is not None:
            reply_to = self._find(msg.chat_id, msg.reply_to_message_id)
        return msg.to_api(reply_to)

    def _queue_update(self, kind: str, payload: dict[str, Any]) -> int:
        update_id = self._next_update_id
        self._next_update_id += 1
        self._updates.append({"update_id": update_id, kind: payload})
        self._notify()
        return update_id

    # ------------------------------------------------------------------ internals: HTTP

    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        """Decode a Bot API request the ways Telegram accepts: query, urlencoded, multipart, JSON."""
        raw: dict[str, Any] = dict(request.query)
        if request.body_exists:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise _bad("can't parse JSON request body") from None
                if not isinstance(body, dict):
                    raise _bad("JSON request body must be an object")
                raw.update(body)
            else:
                form = await request.post()
                for key, value in form.items():
                    raw[key] = value if isinstance(value, str) else f"<file {getattr(value, 'filename', key)}>"
        return {key: _coerce(key, value) for key, value in raw.items()}

    async def _handle_api(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        asked = request.match_info["method"]
        received = time.time()
        started = time.monotonic()
        method = _METHOD_NAMES.get(asked.lower(), asked)
        params: dict[str, Any] = {}
        try:
            params = await self._read_params(request)
            if self.latency:
                await asyncio.sleep(self.latency)
            if self.token is not None and token != self.token:
                raise ApiError(401, "Unauthorized")
            handler = _HANDLERS.get(method)
            if handler is None:
                raise ApiError(404, "Not Found: method not found")
            self._check_faults(method)
            self._bot_id = _bot_id(token)
            result = await handler(self, params)
            status, body = 200, {"ok": True, "result": result}
        except ApiError as err:
            status, body = err.status, err.payload()
        except Exception:
            # An emulator bug must look like a Telegram 500 to the bot, not a decode error.
            log.exception("emulator failed handling %s", method)
            status, body = 500, ApiError(500, "Internal Server Error").payload()
        self.calls.append(
            ApiCall(
                method=method,
                params=params,
                token=token,
                time=received,
                duration=time.monotonic() - started,
                status=status,
                description=None if status == 200 else body.get("description"),
            )
        )
        self._notify()
        return web.json_response(body, status=status)

    def _check_faults(self, method: str) -> None:
        key = method.lower()
        if key != "getupdates" and self.is_down:
            raise ApiError(502, "Bad Gateway")
        for fault in self._faults:
            if fault.method == key or (fault.method is None and key != "getupdates"):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                if fault.status == 429:
                    description = fault.description or f"Too Many Requests: retry after {fault.retry_after}"
                else:
                    description = fault.description or _DEFAULT_DESCRIPTIONS.get(
                        fault.status, HTTPStatus(fault.status).phrase
                    )
                raise ApiError(fault.status, description, fault.retry_after)

    # ------------------------------------------------------------------ Bot API methods

    def _chat_id(self, params: dict[str, Any]) -> int:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise _bad("chat_id is empty")
        if not isinstance(chat_id, int) or chat_id == 0:
            raise _bad("chat not found")
        if chat_id in self._migrated:
            raise ApiError(400, "Bad Request: group chat was upgraded to a supergroup chat",
                           migrate_to_chat_id=self._migrated[chat_id])
        return chat_id

    def _render(self, params: dict[str, Any]) -> tuple[str, str, str | None, list[dict[str, Any]]]:
        """Validate text + parse_mode; returns (text, plain_text, parse_mode, entities)."""
        text = params.get("text")
        if not isinstance(text, str) or not text:
            raise _bad("message text is empty")
        parse_mode = params.get("parse_mode") or None
        if parse_mode is not None and parse_mode.lower() not in ("html", "markdown", "markdownv2"):
            raise _bad(f"unsupported parse_mode {parse_mode!r}")
        if parse_mode is not None and parse_mode.lower() == "html":
            try:
                plain, entities = parse_html(text, strict=self.strict_html)
            except HTMLParseError as err:
                raise _bad(f"can't parse entities: {err}") from None
        else:
            # Markdown modes are stored verbatim: the bot under test sends HTML.
            plain = text
            given = params.get("entities")
            entities = given if isinstance(given, list) else []
        plain, entities = trim(plain, entities)
        if not plain:
            raise _bad("message text is empty")
        if utf16_len(plain) > MAX_MESSAGE_UTF16:
            raise _bad("message is too long")
        return text, plain, parse_mode, entities

    @staticmethod
    def _markup(params: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return validate_reply_markup(params.get("reply_markup"))
        except MarkupError as err:
            raise ApiError(400, str(err)) from None

    def _editable(self, params: dict[str, Any]) -> StoredMessage:
        if params.get("inline_message_id"):
            raise _bad("message to edit not found")
        chat_id = self._chat_id(params)
        message_id = params.get("message_id")
        msg = self._find(chat_id, message_id) if isinstance(message_id, int) else None
        if msg is None:
            raise _bad("message to edit not found")
        if not msg.from_bot:
            raise _bad("message can't be edited")
        return msg

    async def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _delete_webhook(self, params: dict[str, Any]) -> bool:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)}

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Long poll: answer as soon as an update is queued, or ``[]`` after ``timeout`` seconds.

        Like Telegram, updates stay queued until a later call confirms them with
        ``offset``, and a newer getUpdates terminates an older pending one with 409.
        """
        offset = params.get("offset")
        limit = params.get("limit")
        timeout = params.get("timeout") or 0
        limit = min(max(limit, 1), 100) if isinstance(limit, int) else 100
        timeout = max(0, int(timeout)) if isinstance(timeout, int) else 0
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = [str(a) for a in allowed] or None
        if isinstance(offset, int):
            if offset < 0:
                self._updates = self._updates[offset:]
            elif offset:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if self._allowed_updates is not None:
            self._updates = [u for u in self._updates if _update_type(u) in self._allowed_updates]

        self._poll_generation += 1
        generation = self._poll_generation
        self._notify()  # wakes an older pending poll, which then answers 409
        self._waiting_polls += 1
        try:
            return await self._long_poll(generation, limit, timeout)
        finally:
            self._waiting_polls -= 1

    async def _long_poll(self, generation: int, limit: int, wait_seconds: int) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            changed = self._changed
            if self._closing:
                return []
            if generation != self._poll_generation:
                raise ApiError(409, _CONFLICT)
            if self._allowed_updates is not None:
                self._updates = [u for u in self._updates if _update_type(u) in self._allowed_updates]
            remaining = deadline - loop.time()
            if self._updates or remaining <= 0:
                return self._updates[:limit]
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                pass

    async def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        text, plain, parse_mode, entities = self._render(params)
        markup = self._markup(params)
        reply_to = params.get("reply_to_message_id")
        allow_missing = bool(params.get("allow_sending_without_reply"))
        reply_parameters = params.get("reply_parameters")
        if isinstance(reply_parameters, dict):
            reply_to = reply_parameters.get("message_id")
            allow_missing = bool(reply_parameters.get("allow_sending_without_reply"))
        if reply_to is not None and (not isinstance(reply_to, int) or self._find(chat_id, reply_to) is None):
            if not allow_missing:
                raise _bad("message to be replied not found")
            reply_to = None
        msg = self._store(
            chat_id,
            sender=self._bot_user(),
            text=text,
            plain_text=plain,
            parse_mode=parse_mode,
            entities=entities,
            reply_markup=markup,
            from_bot=True,
            reply_to_message_id=reply_to,
        )
        self._emit(
            EmulatorEvent(
                kind="new",
                chat_id=chat_id,
                message_id=msg.message_id,
                text=text,
                plain_text=plain,
                parse_mode=parse_mode,
                reply_markup=markup,
            )
        )
        return self._message_api(msg)

    async def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any]:
        text, plain, parse_mode, entities = self._render(params)
        msg = self._editable(params)
        # Like Telegram: an edit without reply_markup removes the inline keyboard.
        markup = self._markup(params)
        if plain == msg.plain_text and entities == msg.entities and markup == msg.reply_markup:
            raise ApiError(400, _NOT_MODIFIED)
        msg.text, msg.plain_text, msg.parse_mode, msg.entities = text, plain, parse_mode, entities
        msg.reply_markup = markup
        msg.edit_count += 1
        msg.edit_date = int(time.time())
        msg.history.append(text)
        self._emit(
            EmulatorEvent(
                kind="edit",
                chat_id=msg.chat_id,
                message_id=msg.message_id,
                text=text,
                plain_text=plain,
                parse_mode=parse_mode,
                reply_markup=markup,
            )
        )
        return self._message_api(msg)

    async def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any]:
        msg = self._editable(params)
        markup = self._markup(params)
        if markup == msg.reply_markup:
            raise ApiError(400, _NOT_MODIFIED)
        msg.reply_markup = markup
        msg.edit_count += 1
        msg.edit_date = int(time.time())
        self._emit(
            EmulatorEvent(
                kind="edit",
                chat_id=msg.chat_id,
                message_id=msg.message_id,
                text=msg.text,
                plain_text=msg.plain_text,
                parse_mode=msg.parse_mode,
                reply_markup=markup,
                markup_only=True,
            )
        )
        return self._message_api(msg)

    async def _delete_message(self, params: dict[str, Any]) -> bool:
        chat_id = self._chat_id(params)
        message_id = params.get("message_id")
        msg = self._find(chat_id, message_id) if isinstance(message_id, int) else None
        if msg is None:
            raise _bad("message to delete not found")
        msg.deleted = True
        self._emit(EmulatorEvent(kind="delete", chat_id=chat_id, message_id=msg.message_id))
        return True

    async def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        query = self._queries.get(str(params.get("callback_query_id", "")))
        if query is None or query.answer is not None or time.monotonic() - query.created > self.query_ttl:
            raise ApiError(400, _QUERY_INVALID)
        text = params.get("text")
        if isinstance(text, str) and len(text) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        query.answer = {
            "text": text,
            "show_alert": bool(params.get("show_alert")),
            "url": params.get("url"),
            "cache_time": params.get("cache_time"),
        }
        self._emit(
            EmulatorEvent(
                kind="answer",
                chat_id=query.chat_id,
                message_id=query.message_id,
                text=text,
                user_id=query.user_id,
                data=query.data,
                callback_query_id=query.id,
                show_alert=bool(params.get("show_alert")),
            )
        )
        return True

    async def _set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad("can't parse commands JSON object")
        for command in commands:
            name = command.get("command") if isinstance(command, dict) else None
            description = command.get("description") if isinstance(command, dict) else None
            if not isinstance(name, str) or not _valid_command(name):
                raise _bad("BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        key = _commands_key(params.get("scope"), params.get("language_code"))
        self._commands[key] = [{"command": c["command"], "description": c["description"]} for c in commands]
        self._notify()
        return True

    async def _get_my_commands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self._commands.get(_commands_key(params.get("scope"), params.get("language_code")), []))

    async def _delete_my_commands(self, params: dict[str, Any]) -> bool:
        self._commands.pop(_commands_key(params.get("scope"), params.get("language_code")), None)
        return True

    async def _send_chat_action(self, params: dict[str, Any]) -> bool:
        self._chat_id(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        return True

    # ------------------------------------------------------------------ HTTP control API

    async def _ctl_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _ctl_calls(self, request: web.Request) -> web.Response:
        """``?since=N`` returns calls[N:] and ``next`` to pass as since the next time."""
        since = _int_arg(request.query.get("since"), 0)
        method = request.query.get("method")
        calls = [c.to_dict() for c in self.calls[since:] if method is None or c.method.lower() == method.lower()]
        return web.json_response({"calls": calls, "next": len(self.calls)})

    async def _ctl_answer(self, request: web.Request) -> web.Response:
        """``?id=Q&timeout=S``: wait for the answer to a callback query (404 unknown, 408 timeout)."""
        query_id = request.query.get("id", "")
        try:
            timeout = float(request.query.get("timeout", "5"))
        except ValueError:
            return web.json_response({"error": "timeout must be a number"}, status=400)
        try:
            answer = await self.wait_for_answer(query_id, timeout)
        except LookupError as err:
            return web.json_response({"error": str(err)}, status=404)
        except TimeoutError as err:
            return web.json_response({"error": str(err)}, status=408)
        return web.json_response(answer)

    async def _ctl_message(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            message = self.send_user_message(
                int(body["chat_id"]),
                int(body["user_id"]),
                str(body["text"]),
                first_name=str(body.get("first_name", "Ann")),
                username=body.get("username"),
            )
        except (KeyError, TypeError, ValueError) as err:
            return web.json_response({"error": f"bad request: {err}"}, status=400)
        return web.json_response(message)

    async def _ctl_press(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            query_id = self.press_button(
                int(body["chat_id"]),
                int(body["message_id"]),
                int(body["user_id"]),
                str(body["data"]),
                first_name=str(body.get("first_name", "Ann")),
                username=body.get("username"),
            )
        except LookupError as err:
            return web.json_response({"error": str(err)}, status=404)
        except (TypeError, ValueError) as err:
            return web.json_response({"error": f"bad request: {err}"}, status=400)
        return web.json_response({"callback_query_id": query_id})

    async def _ctl_fail(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            self.fail(
                body.get("method"),
                int(body["status"]),
                times=int(body.get("times", 1)),
                retry_after=None if body.get("retry_after") is None else int(body["retry_after"]),
                description=body.get("description"),
            )
        except (KeyError, TypeError, ValueError) as err:
            return web.json_response({"error": f"bad request: {err}"}, status=400)
        return web.json_response({"ok": True})

    async def _ctl_outage(self, request: web.Request) -> web.Response:
        """``{"seconds": S}`` for a timed outage, ``{"down": true|false}`` to switch by hand."""
        body = await _json_body(request)
        if "seconds" in body:
            try:
                self.outage(float(body["seconds"]))
            except (TypeError, ValueError):
                return web.json_response({"error": "seconds must be a number"}, status=400)
        else:
            self.set_down(bool(body.get("down", True)))
        return web.json_response({"ok": True, "down": self.is_down})

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


_Handler = Callable[[BotAPIEmulator, dict[str, Any]], Awaitable[Any]]
_HANDLERS: dict[str, _Handler] = {
    "getMe": BotAPIEmulator._get_me,
    "deleteWebhook": BotAPIEmulator._delete_webhook,
    "getWebhookInfo": BotAPIEmulator._get_webhook_info,
    "getUpdates": BotAPIEmulator._get_updates,
    "sendMessage": BotAPIEmulator._send_message,
    "editMessageText": BotAPIEmulator._edit_message_text,
    "editMessageReplyMarkup": BotAPIEmulator._edit_message_reply_markup,
    "deleteMessage": BotAPIEmulator._delete_message,
    "answerCallbackQuery": BotAPIEmulator._answer_callback_query,
    "setMyCommands": BotAPIEmulator._set_my_commands,
    "getMyCommands": BotAPIEmulator._get_my_commands,
    "deleteMyCommands": BotAPIEmulator._delete_my_commands,
    "sendChatAction": BotAPIEmulator._send_chat_action,
}
# Telegram method names are case-insensitive.
_METHOD_NAMES = {name.lower(): name for name in _HANDLERS}


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
                raise _bad("can't parse reply keyboard markup JSON object") from None
            raise _bad(f"can't parse {key} JSON object") from None
    return value


def _bot_id(token: str) -> int:
    """aiogram derives ``bot.id`` from the token prefix; getMe must agree with it."""
    prefix = token.split(":", 1)[0]
    return int(prefix) if prefix.isdigit() else 1


def _update_type(update: dict[str, Any]) -> str:
    return next((k for k in update if k != "update_id"), "")


def _valid_command(name: str) -> bool:
    return 1 <= len(name) <= 32 and all(c.islower() or c.isdigit() or c == "_" for c in name) and name.isascii()


def _commands_key(scope: Any, language_code: Any) -> str:
    scope = scope if isinstance(scope, dict) else {"type": "default"}
    return json.dumps([scope, language_code or ""], sort_keys=True)


def _display_name(user: dict[str, Any]) -> str:
    return str(user.get("username") or user.get("first_name") or user.get("id"))


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
