"""The inbox: raw alert bodies, committed before the sender is answered."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from storage.db import Executor
from storage.timefmt import now_db


@dataclass(frozen=True)
class InboxItem:
    id: int
    source: str
    body: bytes
    attempts: int  # times its work was started (claimed), including an interrupted one
    started: bool = False  # its last attempt was interrupted before it ended


class InboxRepository:
    def __init__(self, db: Executor) -> None:
        self.db = db

    async def add(self, source: str, body: bytes) -> int:
        return await self.db.insert(
            "INSERT INTO inbox (source, received_at, body) VALUES (?, ?, ?)", (source, now_db(), body)
        )

    async def due(self, limit: int = 100) -> list[InboxItem]:
        rows = await self.db.fetchall(
            "SELECT id, source, body, attempts, started FROM inbox WHERE state = 'pending' AND next_attempt_at <= ? "
            "ORDER BY id LIMIT ?",
            (time.time(), limit),
        )
        return [InboxItem(r["id"], r["source"], bytes(r["body"]), r["attempts"], bool(r["started"])) for r in rows]

    async def claim(self, item_ids: list[int]) -> None:
        """Count an attempt and mark the work started, committed before the work itself starts."""
        for chunk in _chunks(item_ids):
            marks = ",".join("?" * len(chunk))
            await self.db.execute(
                f"UPDATE inbox SET attempts = attempts + 1, started = 1 WHERE state = 'pending' AND id IN ({marks})",
                chunk,
            )

    async def next_due_at(self) -> float | None:
        row = await self.db.fetchone("SELECT MIN(next_attempt_at) FROM inbox WHERE state = 'pending'")
        return None if row is None or row[0] is None else float(row[0])

    async def retry_later(self, item_id: int, error: str, delay: float) -> None:
        await self.db.execute(
            "UPDATE inbox SET started = 0, last_error = ?, next_attempt_at = ? WHERE id = ?",
            (error, time.time() + delay, item_id),
        )

    async def park(self, item_id: int, error: str) -> None:
        await self.db.execute(
            "UPDATE inbox SET state = 'failed', started = 0, last_error = ?, processed_at = ? "
            "WHERE id = ?",
            (error, now_db(), item_id),
        )

    async def depth(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM inbox WHERE state = 'pending'")
        return int(row[0]) if row else 0

    async def failed_count(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM inbox WHERE state = 'failed'")
        return int(row[0]) if row else 0

    async def mark_done_many(self, item_ids: list[int]) -> None:
        now = now_db()
        for chunk in _chunks(item_ids):
            marks = ",".join("?" * len(chunk))
            await self.db.execute(
                f"UPDATE inbox SET state = 'done', started = 0, processed_at = ? WHERE state = 'pending' AND id IN ({marks})",
                (now, *chunk),
            )

    async def add_many(self, rows: list[tuple[str, bytes]]) -> list[int]:
        """Insert several bodies in one statement; call inside a transaction. Returns their ids.

        Inside the transaction nothing else inserts, so the new rowids are consecutive and end
        at last_insert_rowid().
        """
        if not rows:
            return []
        now = now_db()
        await self.db.executemany(
            "INSERT INTO inbox (source, received_at, body) VALUES (?, ?, ?)",
            [(source, now, body) for source, body in rows],
        )
        row = await self.db.fetchone("SELECT last_insert_rowid()")
        last = int(row[0]) if row else 0
        return list(range(last - len(rows) + 1, last + 1))

    async def purge_done(self, older_than_days: float) -> int:
        """Delete processed bodies after a while: they hold the raw, unredacted alert text."""
        cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
        return await self.db.execute(
            "DELETE FROM inbox WHERE state = 'done' AND processed_at < ?", (cutoff.isoformat(timespec="milliseconds"),)
        )


def _chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    """SQLite limits the number of `?` in one statement."""
    return [ids[start : start + size] for start in range(0, len(ids), size)]
