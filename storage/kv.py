"""Small durable values: the kill switch, the last alert time."""

from __future__ import annotations

import json
from typing import Any

from storage.db import Executor
from storage.timefmt import now_db


class KeyValueRepository:
    def __init__(self, db: Executor) -> None:
        self.db = db

    async def get(self, key: str, default: Any = None) -> Any:
        row = await self.db.fetchone("SELECT value FROM kv WHERE key = ?", (key,))
        return default if row is None else json.loads(row["value"])

    async def set(self, key: str, value: Any) -> None:
        await self.db.execute(
            "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (key, json.dumps(value), now_db()),
        )

    async def delete(self, key: str) -> None:
        await self.db.execute("DELETE FROM kv WHERE key = ?", (key,))

    async def has_prefix(self, prefix: str) -> bool:
        row = await self.db.fetchone("SELECT 1 FROM kv WHERE key >= ? AND key < ? LIMIT 1", (prefix, prefix + "\uffff"))
        return row is not None
