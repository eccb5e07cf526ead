"""The audit log: append-only (the schema's triggers refuse UPDATE and DELETE)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.db import Executor
from storage.timefmt import from_db, now_db, to_db


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor_id: int | None
    actor_name: str | None
    action: str
    incident_id: int | None
    proposal_id: int | None
    outcome: str
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "at": to_db(self.at), "actor_id": self.actor_id, "actor_name": self.actor_name,
            "action": self.action, "incident_id": self.incident_id, "proposal_id": self.proposal_id,
            "outcome": self.outcome, "detail": self.detail,
        }


class AuditRepository:
    def __init__(self, db: Executor) -> None:
        self.db = db

    async def record(
        self,
        action: str,
        outcome: str,
        *,
        actor_id: int | None = None,
        actor_name: str | None = None,
        incident_id: int | None = None,
        proposal_id: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        return await self.db.insert(
            "INSERT INTO audit (at, actor_id, actor_name, action, incident_id, proposal_id, outcome, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (now_db(), actor_id, actor_name, action, incident_id, proposal_id, outcome,
             json.dumps(detail or {}, default=str)),
        )

    async def list(
        self, *, since: datetime | None = None, incident_id: int | None = None, limit: int | None = None
    ) -> list[AuditEntry]:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("at >= ?")
            params.append(to_db(since))
        if incident_id is not None:
            clauses.append("incident_id = ?")
            params.append(incident_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = f" LIMIT {int(limit)}" if limit else ""
        rows = await self.db.fetchall(f"SELECT * FROM audit {where} ORDER BY id{tail}", params)
        return [
            AuditEntry(
                r["id"], from_db(r["at"]) or datetime.min, r["actor_id"], r["actor_name"], r["action"],
                r["incident_id"], r["proposal_id"], r["outcome"], json.loads(r["detail"]),
            )
            for r in rows
        ]
