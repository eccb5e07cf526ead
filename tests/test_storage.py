"""Storage behaviour a user relies on: append-only audit, inbox retention, migrations once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.audit import AuditRepository
from storage.db import Database
from storage.inbox import InboxRepository

MIGRATIONS = Path(__file__).resolve().parents[1] / "storage" / "migrations"


async def test_audit_rows_cannot_be_changed_or_deleted(tmp_path):
    async with Database(tmp_path / "a.db") as db:
        await AuditRepository(db).record("proposal.approve", "approved", actor_id=1, actor_name="Ann")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            await db.execute("UPDATE audit SET outcome = 'rejected'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            await db.execute("DELETE FROM audit")
        assert [e.outcome for e in await AuditRepository(db).list()] == ["approved"]


async def test_processed_inbox_bodies_are_purged_after_retention_pending_ones_never(tmp_path):
    async with Database(tmp_path / "a.db") as db:
        inbox = InboxRepository(db)
        old = await inbox.add("generic", b'{"title": "password=hunter2"}')
        pending = await inbox.add("generic", b'{"title": "x"}')
        await inbox.mark_done_many([old])
        await db.execute("UPDATE inbox SET processed_at = '2000-01-01T00:00:00.000+00:00' WHERE id = ?", (old,))
        assert await inbox.purge_done(older_than_days=7) == 1
        rows = await db.fetchall("SELECT id FROM inbox")
        assert [r["id"] for r in rows] == [pending]


async def test_migrations_apply_once_across_restarts(tmp_path):
    path = tmp_path / "a.db"
    shipped = sorted(int(f.name.split("_")[0]) for f in MIGRATIONS.glob("[0-9]*.sql"))
    async with Database(path) as db:
        await InboxRepository(db).add("generic", b"{}")
    async with Database(path) as db:
        versions = await db.fetchall("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == shipped
        assert await InboxRepository(db).depth() == 1
