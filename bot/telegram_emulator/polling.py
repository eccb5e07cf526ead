"""Update delivery: ``getUpdates`` long polling, and the webhook methods a polling bot calls first.

The subtle part of the Bot API lives here, so it has its own module: updates stay queued
until a later call confirms them with ``offset``, ``allowed_updates`` is sticky across
calls, a newer getUpdates terminates an older pending one with 409 (how Telegram tells
two bot instances apart), and a poll answers the moment an update is queued.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .changes import ChangeSignal, wait_event
from .errors import CONFLICT, ApiError
from .state import ChatState

_MAX_LIMIT = 100


class UpdatePoller:
    """Answers getUpdates from the queue in :class:`ChatState`.

    Its bookkeeping survives a reset of the state: a poll held open across a reset must
    not be mistaken for a second bot instance.
    """

    def __init__(self, state: ChatState, signal: ChangeSignal) -> None:
        self._state = state
        self._signal = signal
        self._generation = 0  # bumped by every getUpdates; a poll whose number is stale is the older one
        self.waiting = 0  # polls being held open right now
        self.closing = False  # set while the server stops: pending polls answer [] at once

    async def get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Long poll: answer as soon as an update is queued, or ``[]`` after ``timeout`` seconds.

        Like Telegram, updates stay queued until a later call confirms them with
        ``offset``, and a newer getUpdates terminates an older pending one with 409.
        """
        offset = params.get("offset")
        limit = params.get("limit")
        timeout = params.get("timeout") or 0
        limit = min(max(limit, 1), _MAX_LIMIT) if isinstance(limit, int) else _MAX_LIMIT
        timeout = max(0, int(timeout)) if isinstance(timeout, int) else 0
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._state.allowed_updates = [str(a) for a in allowed] or None
        if isinstance(offset, int):
            self._confirm(offset)
        self._state.drop_disallowed_updates()

        self._generation += 1
        generation = self._generation
        self._signal.notify()  # wakes an older pending poll, which then answers 409
        self.waiting += 1
        try:
            return await self._long_poll(generation, limit, timeout)
        finally:
            self.waiting -= 1

    def _confirm(self, offset: int) -> None:
        """Forget updates the bot has confirmed (a negative offset keeps only the last -offset)."""
        state = self._state
        if offset < 0:
            state.updates = state.updates[offset:]
        elif offset:
            state.updates = [u for u in state.updates if u["update_id"] >= offset]

    async def _long_poll(self, generation: int, limit: int, wait_seconds: int) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            changed = self._signal.next_change()
            if self.closing:
                return []
            if generation != self._generation:
                raise ApiError(409, CONFLICT)
            self._state.drop_disallowed_updates()
            remaining = deadline - loop.time()
            if self._state.updates or remaining <= 0:
                return self._state.updates[:limit]
            await wait_event(changed, remaining)

    async def delete_webhook(self, params: dict[str, Any]) -> bool:
        if params.get("drop_pending_updates"):
            self._state.updates.clear()
        return True

    async def get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._state.updates)}
