"""Group commit for the inbox: concurrent webhook requests share one transaction.

Each request still gets its 202 only after its row is committed; under load, the rows that
arrived while a commit was running are written together in the next one, so the database
lock is taken once per group instead of once per alert.
"""

from __future__ import annotations

import asyncio

from storage.db import Database
from storage.inbox import InboxRepository


class InboxWriter:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: list[tuple[str, bytes, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def add(self, source: str, body: bytes) -> int:
        """Commit one body to the inbox; returns its id once the commit is done."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((source, body, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._queue:
            group, self._queue = self._queue, []
            try:
                async with self.db.transaction() as tx:
                    ids = await InboxRepository(tx).add_many([(source, body) for source, body, _ in group])
            except Exception as exc:  # every waiting request learns it was not stored
                for _, _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future), row_id in zip(group, ids, strict=True):
                if not future.done():
                    future.set_result(row_id)
