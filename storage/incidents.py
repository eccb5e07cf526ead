"""Incidents: one open row per fingerprint; repeats raise its count."""

from __future__ import annotations

import json
from datetime import datetime

from bot.models import (
    Alert,
    AlertKind,
    Category,
    Incident,
    Priority,
    Triage,
    triage_from_dict,
    triage_to_dict,
)
from bot.storm import HeldBack
from storage.db import Executor, Row
from storage.timefmt import from_db, to_db


def _incident(row: Row) -> Incident:
    return Incident(
        id=row["id"], fingerprint=row["fingerprint"], status=row["status"], source=row["source"],
        kind=AlertKind(row["kind"]), title=row["title"], message=row["message"], level=row["level"],
        project=row["project"], environment=row["environment"], release=row["release"],
        server=row["server"], url=row["url"], stacktrace=row["stacktrace"], external_id=row["external_id"],
        tags=json.loads(row["tags_json"]), count=row["count"],
        first_seen=from_db(row["first_seen"]) or datetime.min,
        last_seen=from_db(row["last_seen"]) or datetime.min,
        priority=Priority(row["priority"]), priority_original=Priority(row["priority_original"]),
        category=Category(row["category"]), triage=triage_from_dict(json.loads(row["triage_json"])),
        regression_of=row["regression_of"], chat_id=row["chat_id"], card_message_id=row["card_message_id"],
        muted_until=from_db(row["muted_until"]), resolved_at=from_db(row["resolved_at"]),
        resolved_by=row["resolved_by"], card_deferred=row["card_deferred"],
        claude_pending=row["claude_state"] == "pending",
    )


class IncidentRepository:
    def __init__(self, db: Executor) -> None:
        self.db = db

    async def get(self, incident_id: int) -> Incident | None:
        row = await self.db.fetchone("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        return _incident(row) if row else None

    async def latest_for_fingerprint(self, fingerprint: str) -> tuple[int, bool] | None:
        """(id, is open) of the newest incident with this fingerprint, in one lookup."""
        row = await self.db.fetchone(
            "SELECT id, status FROM incidents WHERE fingerprint = ? ORDER BY id DESC LIMIT 1", (fingerprint,)
        )
        return (row["id"], row["status"] == "open") if row else None

    async def latest_resolved_id(self, fingerprint: str) -> int | None:
        row = await self.db.fetchone(
            "SELECT id FROM incidents WHERE fingerprint = ? AND status = 'resolved' ORDER BY id DESC LIMIT 1",
            (fingerprint,),
        )
        return row["id"] if row else None

    async def fingerprint_states(self, fingerprints: list[str]) -> dict[str, tuple[int | None, int | None]]:
        """fingerprint -> (open incident id, newest resolved id) for many fingerprints at once."""
        found: dict[str, tuple[int | None, int | None]] = {}
        for start in range(0, len(fingerprints), 500):
            chunk = fingerprints[start : start + 500]
            rows = await self.db.fetchall(
                "SELECT fingerprint, MAX(CASE WHEN status = 'open' THEN id END) AS open_id, "
                "MAX(CASE WHEN status = 'resolved' THEN id END) AS resolved_id FROM incidents "
                f"WHERE fingerprint IN ({','.join('?' * len(chunk))}) GROUP BY fingerprint",
                chunk,
            )
            found.update({r["fingerprint"]: (r["open_id"], r["resolved_id"]) for r in rows})
        return found

    async def held_back(self) -> list[HeldBack]:
        """Incidents whose card waits for a storm summary."""
        rows = await self.db.fetchall(
            "SELECT id, source, priority, category, title, count, first_seen FROM incidents "
            "WHERE card_deferred = 1 ORDER BY id"
        )
        return [
            HeldBack(r["id"], r["source"], r["priority"], r["category"], r["title"], r["count"],
                     from_db(r["first_seen"]) or datetime.min)
            for r in rows
        ]

    async def mark_summarised(self, incident_ids: list[int]) -> None:
        for start in range(0, len(incident_ids), 500):
            chunk = incident_ids[start : start + 500]
            await self.db.execute(
                f"UPDATE incidents SET card_deferred = 2 WHERE id IN ({','.join('?' * len(chunk))})", chunk
            )

    async def create(
        self, alert: Alert, triage: Triage, now: datetime, chat_id: int | None, regression_of: int | None,
        *, card_deferred: bool = False,
    ) -> Incident:
        incident_id = await self.db.insert(
            "INSERT INTO incidents (fingerprint, source, kind, title, message, level, project, environment, "
            "release, server, url, stacktrace, external_id, tags_json, count, first_seen, last_seen, "
            "priority, priority_original, category, triage_json, regression_of, chat_id, card_deferred) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                alert.fingerprint, alert.source, alert.kind.value, alert.title, alert.message, alert.level,
                alert.project, alert.environment, alert.release, alert.server, alert.url, alert.stacktrace,
                alert.external_id, json.dumps(alert.tags), alert.count, to_db(now), to_db(now),
                triage.priority.value, (triage.priority_before_override or triage.priority).value,
                triage.category.value,
                json.dumps(triage_to_dict(triage)), regression_of, chat_id, int(card_deferred),
            ),
        )
        created = await self.get(incident_id)
        assert created is not None
        return created

    async def record_repeat(self, incident_id: int, count: int, now: datetime) -> None:
        await self.db.execute(
            "UPDATE incidents SET count = count + ?, last_seen = ? WHERE id = ?", (count, to_db(now), incident_id)
        )

    async def set_card(self, incident_id: int, chat_id: int, message_id: int | None) -> None:
        await self.db.execute(
            "UPDATE incidents SET chat_id = ?, card_message_id = ? WHERE id = ?", (chat_id, message_id, incident_id)
        )

    async def move_chat(self, old_chat_id: int, new_chat_id: int) -> None:
        await self.db.execute("UPDATE incidents SET chat_id = ? WHERE chat_id = ?", (new_chat_id, old_chat_id))

    async def resolve(self, incident_id: int, by: str, now: datetime) -> bool:
        """Compare-and-set open -> resolved; False when it was not open."""
        changed = await self.db.execute(
            "UPDATE incidents SET status = 'resolved', resolved_at = ?, resolved_by = ? "
            "WHERE id = ? AND status = 'open'",
            (to_db(now), by, incident_id),
        )
        return changed == 1

    async def set_priority(self, incident_id: int, priority: Priority) -> None:
        await self.db.execute("UPDATE incidents SET priority = ? WHERE id = ?", (priority.value, incident_id))

    async def mute(self, incident_id: int, until: datetime | None) -> None:
        await self.db.execute("UPDATE incidents SET muted_until = ? WHERE id = ?", (to_db(until), incident_id))

    async def list_open(self, limit: int = 50) -> list[Incident]:
        rows = await self.db.fetchall(
            "SELECT * FROM incidents WHERE status = 'open' ORDER BY last_seen DESC, id DESC LIMIT ?", (limit,)
        )
        return [_incident(r) for r in rows]

    async def open_counts_by_priority(self) -> dict[str, int]:
        rows = await self.db.fetchall(
            "SELECT priority, COUNT(*) AS n FROM incidents WHERE status = 'open' GROUP BY priority"
        )
        return {r["priority"]: r["n"] for r in rows}

    async def count_all(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM incidents")
        return int(row[0]) if row else 0
