"""SQLite through aiosqlite: one connection, WAL, numbered migrations, explicit transactions.

One connection is shared by the web server, the pipeline, the outbox sender and the handlers;
an asyncio lock serialises statements so a transaction opened by one task never sees another
task's statements inside it. Repositories take anything with `execute/fetchone/fetchall`:
the `Database` itself (each statement commits on its own) or a `Transaction`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

Row = aiosqlite.Row
Params = Sequence[Any] | dict[str, Any]


class Executor(Protocol):
    async def execute(self, sql: str, params: Params = ()) -> int: ...
    async def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...
    async def insert(self, sql: str, params: Params = ()) -> int: ...
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...


class Transaction:
    """Statements run inside `BEGIN IMMEDIATE … COMMIT`; the database lock is held."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; returns the number of rows it changed."""
        cur = await self._conn.execute(sql, params)
        return cur.rowcount

    async def insert(self, sql: str, params: Params = ()) -> int:
        """Run an INSERT; returns the new row id."""
        cur = await self._conn.execute(sql, params)
        return int(cur.lastrowid or 0)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._conn.executemany(sql, rows)

    async def savepoint(self, name: str) -> None:
        await self._conn.execute(f"SAVEPOINT {name}")

    async def release(self, name: str) -> None:
        await self._conn.execute(f"RELEASE {name}")

    async def rollback_to(self, name: str) -> None:
        """Undo everything since the savepoint, and drop it."""
        await self._conn.execute(f"ROLLBACK TO {name}")
        await self._conn.execute(f"RELEASE {name}")

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        cur = await self._conn.execute(sql, params)
        return await cur.fetchone()

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        cur = await self._conn.execute(sql, params)
        return list(await cur.fetchall())


class Database:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> Database:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, transactions only where we open them.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        # WAL + synchronous=NORMAL: a commit survives a process crash (SIGKILL); only an OS crash
        # or power loss can lose the last commits. busy_timeout covers a second process (the CLI).
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
            await conn.execute(f"PRAGMA {pragma}")
        self._conn = conn
        await self._migrate()
        return self

    async def close(self) -> None:
        if self._conn is not None:
            async with self._lock:
                await self._conn.close()
                self._conn = None

    async def __aenter__(self) -> Database:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("database is not connected")
        return self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self.conn)
                await self.conn.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself failed: never leave the shared connection inside a transaction.
                if self.conn.in_transaction:
                    await self.conn.execute("ROLLBACK")
                raise

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._lock:
            cur = await self.conn.execute(sql, params)
            return cur.rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        async with self._lock:
            await self.conn.executemany(sql, rows)

    async def insert(self, sql: str, params: Params = ()) -> int:
        async with self._lock:
            cur = await self.conn.execute(sql, params)
            return int(cur.lastrowid or 0)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._lock:
            cur = await self.conn.execute(sql, params)
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._lock:
            cur = await self.conn.execute(sql, params)
            return list(await cur.fetchall())

    async def _migrate(self) -> None:
        """Apply `storage/migrations/NNN_*.sql` in order, each once, each in a transaction."""
        await self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        cur = await self.conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for version, sql in _migrations():
            if version in done:
                continue
            await self.conn.executescript(
                f"BEGIN IMMEDIATE;\n{sql}\nINSERT INTO schema_migrations VALUES ({version}, datetime('now'));\nCOMMIT;"
            )


def _migrations() -> list[tuple[int, str]]:
    found = []
    for entry in resources.files("storage.migrations").iterdir():
        match = re.fullmatch(r"(\d+)_.*\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)
