"""The emulator's public face: :class:`BotAPIEmulator` builds the parts and runs the server.

Why a real HTTP server rather than a mocked ``Bot``: the bot under test then runs its
production code path unchanged (aiogram's session, form encoding, JSON decoding, error
classes, retry logic, polling loop), and a benchmark in another process can watch the
same traffic. Everything lives in one event loop; the emulator is not thread-safe.

The work is done by one part per job, which this class only composes and exposes:

:mod:`.state` what Telegram remembers; :mod:`.methods` and :mod:`.polling` the Bot API
methods, checked by :mod:`.validation`; :mod:`.users` what people in the chat do;
:mod:`.faults` injected failures; :mod:`.transport` the ``/bot{token}/{method}`` endpoint;
:mod:`.control` the ``/_emulator/`` control API; :mod:`.changes` waking waiters and observers.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from .changes import ChangeSignal, EventFeed
from .control import add_control_routes
from .faults import FaultInjector
from .media import MAX_REQUEST_BYTES
from .methods import BotMethods
from .models import ApiCall, EmulatorEvent, StoredMessage
from .polling import UpdatePoller
from .state import ChatState
from .transport import BotApiTransport
from .users import ChatUsers


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
    :param clock: monotonic seconds, for the age of callback queries and the end of timed
        outages; a test passes a fake one to expire a query or end an outage without sleeping.

    The settings above are plain attributes, read on every use: changing one on a running
    emulator (``emu.query_ttl = 0.05``) takes effect at the next call.
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.on_event = on_event
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        self.strict_html = strict_html
        self.latency = latency
        self.query_ttl = query_ttl
        self.calls: list[ApiCall] = []
        self._signal = ChangeSignal()
        self._feed = EventFeed(self, self._signal)
        self._state = ChatState(self, self._signal.notify)
        self._faults = FaultInjector(clock)
        self._poller = UpdatePoller(self._state, self._signal)
        self._users = ChatUsers(self._state, self._feed, clock)
        methods = BotMethods(self._state, self._poller, self._feed, self._signal, self, clock)
        self._transport = BotApiTransport(self, methods, self._faults, self._state, self.calls, self._signal)
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port``; port 0 picks a free one (read it back from ``base_url``)."""
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        self._poller.closing = False
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)  # documents up to Telegram's 50 MB
        app.router.add_route("*", "/bot{token}/{method}", self._transport.handle)
        add_control_routes(app, self)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self._base_url = f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        """Release pending long polls (they answer ``[]``) and shut the server down."""
        self._poller.closing = True
        self._signal.notify()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self._feed.cancel_pending()

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
        self._faults.fail(method, status, times, retry_after, description)

    def migrate_chat(self, old_chat_id: int, new_chat_id: int) -> None:
        """The group becomes a supergroup: calls to the old id answer 400 with migrate_to_chat_id."""
        self._state.migrated[old_chat_id] = new_chat_id

    def set_down(self, down: bool) -> None:
        """Answer every method except getUpdates with 502 Bad Gateway until lifted."""
        self._faults.set_down(down)

    def outage(self, seconds: float) -> None:
        """A 502 outage (every method except getUpdates) that ends by itself after ``seconds``."""
        self._faults.outage(seconds)

    @property
    def is_down(self) -> bool:
        return self._faults.is_down

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
        return self._users.send_message(chat_id, user_id, text, first_name, username, reply_to_message_id)

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
        return self._users.press_button(chat_id, message_id, user_id, data, first_name, username, stale)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:  # noqa: ASYNC109 - see wait_for_answer
        """Wait until ``predicate()`` is truthy and return its value; ``TimeoutError`` otherwise.

        Re-checked on every state change (and every 50 ms, for predicates on outside state).
        """
        return await self._signal.wait_for(predicate, timeout)

    async def wait_for_answer(
        self,
        callback_query_id: str,
        timeout: float = 5.0,  # noqa: ASYNC109 - a per-call timeout is the test-friendly API
    ) -> dict[str, Any]:
        """Wait for the bot's answerCallbackQuery; returns its params (text, show_alert, url, cache_time)."""
        query = self._state.queries.get(callback_query_id)
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
        return self._state.messages(chat_id, include_user=include_user, include_deleted=include_deleted)

    def message(self, chat_id: int, message_id: int) -> StoredMessage:
        """One message by id (deleted ones included); ``KeyError`` if it never existed."""
        return self._state.chats[chat_id][message_id]

    @property
    def chats(self) -> list[int]:
        """Chat ids that have seen any message."""
        return list(self._state.chats)

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
        return self._state.commands_for(None, None)

    @property
    def answers(self) -> dict[str, dict[str, Any] | None]:
        """callback_query_id -> answerCallbackQuery params (None while unanswered)."""
        return {qid: q.answer for qid, q in self._state.queries.items()}

    @property
    def waiting_polls(self) -> int:
        """getUpdates requests being held open right now (> 0 means the bot is polling)."""
        return self._poller.waiting

    @property
    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed by a getUpdates offset."""
        return len(self._state.updates)

    def reset(self) -> None:
        """Forget all chats, updates, calls, faults and commands (the server keeps running)."""
        self._state.clear()
        self._faults.clear()
        self.calls.clear()
        self._signal.notify()

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state: what ``GET /_emulator/state`` returns."""
        return {
            "messages": {
                str(chat_id): [m.to_dict() for m in self.messages(chat_id, include_user=True)]
                for chat_id in self._state.chats
            },
            "call_counts": dict(Counter(c.method for c in self.calls)),
            "failed_calls": sum(1 for c in self.calls if not c.ok),
            "calls_total": len(self.calls),
            "answers": self.answers,
            "commands": self.commands,
            "pending_updates": self.pending_updates,
            "down": self.is_down,
        }
