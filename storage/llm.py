"""Claude's calls and their cost (the spend cap), cached triage answers, and who triaged an incident."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from storage.db import Executor
from storage.timefmt import now_db, to_db


@dataclass(frozen=True)
class UsageSummary:
    """Claude's calls since a moment: for the digest's and metrics' "Claude calls and cost" line."""

    calls: int = 0
    failed_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    #: purpose ("triage", "investigate") -> (calls, cost in USD)
    by_purpose: dict[str, tuple[int, float]] = field(default_factory=dict)


class LlmUsageRepository:
    def __init__(self, db: Executor) -> None:
        self.db = db

    async def record(self, *, purpose: str, model: str, incident_id: int | None, input_tokens: int,
                     output_tokens: int, cost_usd: float, ok: bool, error: str | None = None,
                     at: datetime | None = None) -> int:
        return await self.db.insert(
            "INSERT INTO llm_calls (at, purpose, model, incident_id, input_tokens, output_tokens, cost_usd, ok, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (to_db(at) if at else now_db(), purpose, model, incident_id, input_tokens, output_tokens, cost_usd,
             int(ok), error[:500] if error else None),
        )

    async def spent_since(self, since: datetime) -> float:
        row = await self.db.fetchone("SELECT COALESCE(SUM(cost_usd), 0) FROM llm_calls WHERE at >= ?",
                                     (to_db(since),))
        return float(row[0]) if row else 0.0

    async def summary(self, since: datetime) -> UsageSummary:
        rows = await self.db.fetchall(
            "SELECT purpose, COUNT(*) AS calls, SUM(1 - ok) AS failed, SUM(input_tokens) AS tin, "
            "SUM(output_tokens) AS tout, SUM(cost_usd) AS cost FROM llm_calls WHERE at >= ? GROUP BY purpose "
            "ORDER BY purpose",
            (to_db(since),),
        )
        return UsageSummary(
            calls=sum(int(r["calls"]) for r in rows),
            failed_calls=sum(int(r["failed"] or 0) for r in rows),
            input_tokens=sum(int(r["tin"] or 0) for r in rows),
            output_tokens=sum(int(r["tout"] or 0) for r in rows),
            cost_usd=sum(float(r["cost"] or 0) for r in rows),
            by_purpose={r["purpose"]: (int(r["calls"]), float(r["cost"] or 0)) for r in rows},
        )


class TriageCacheRepository:
    """Claude's triage answer per fingerprint, so a repeat of a known error costs no second call."""

    def __init__(self, db: Executor) -> None:
        self.db = db

    async def get(self, fingerprint: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT triage_json FROM llm_triage_cache WHERE fingerprint = ?", (fingerprint,))
        return None if row is None else dict(json.loads(row["triage_json"]))

    async def put(self, fingerprint: str, model: str, triage: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO llm_triage_cache (fingerprint, model, triage_json, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (fingerprint) DO UPDATE SET model = excluded.model, triage_json = excluded.triage_json, "
            "created_at = excluded.created_at",
            (fingerprint, model, json.dumps(triage), now_db()),
        )


async def set_incident_triage(db: Executor, incident_id: int, *, triage_json: str, priority: str,
                              priority_original: str, category: str, source: str, fallback: str | None) -> None:
    """Store Claude's answer (or the rules' fallback) for an incident; Claude's question is settled.
    A priority a person already corrected stays as they set it: only `priority_original` (what
    triage said, which the metrics judge) moves then."""
    await db.execute(
        "UPDATE incidents SET triage_json = ?, category = ?, triage_source = ?, triage_fallback = ?, "
        "claude_state = CASE WHEN ? = 'claude' THEN 'done' ELSE 'failed' END, "
        "priority = CASE WHEN priority = priority_original THEN ? ELSE priority END, priority_original = ? "
        "WHERE id = ?",
        (triage_json, category, source, fallback, source, priority, priority_original, incident_id),
    )


async def set_triage_note(db: Executor, incident_id: int, triage_json: str) -> None:
    """The card's triage while Claude is still asked ("rules; asking Claude…"); the question stays open."""
    await db.execute("UPDATE incidents SET triage_json = ? WHERE id = ?", (triage_json, incident_id))


async def mark_claude_pending(db: Executor, incident_id: int) -> None:
    """Claude is asked for this incident's triage: kept across a crash, asked again at the next start."""
    await db.execute("UPDATE incidents SET claude_state = 'pending' WHERE id = ?", (incident_id,))


async def claude_pending(db: Executor, limit: int = 100_000) -> list[int]:
    """Incidents whose Claude triage was asked and never settled (the process stopped meanwhile)."""
    rows = await db.fetchall("SELECT id FROM incidents WHERE claude_state = 'pending' ORDER BY id LIMIT ?", (limit,))
    return [int(r["id"]) for r in rows]


async def triage_state(db: Executor, incident_id: int) -> tuple[str, str | None, str | None] | None:
    """(triage_source, claude_state, triage_fallback) of an incident, or None when there is none."""
    row = await db.fetchone("SELECT triage_source, claude_state, triage_fallback FROM incidents WHERE id = ?",
                            (incident_id,))
    return None if row is None else (row["triage_source"], row["claude_state"], row["triage_fallback"])
