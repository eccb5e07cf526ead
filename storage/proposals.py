"""Proposals and their approvals. Every state change is a compare-and-set."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bot.models import Proposal, ProposalState
from bot.proposals import ProposalKind, check_transition
from storage.db import Executor, Row
from storage.timefmt import from_db, now_db, to_db

_SELECT = (
    "SELECT p.*, (SELECT json_group_array(json_array(a.user_id, COALESCE(a.user_name, a.user_id))) "
    "FROM (SELECT * FROM approvals WHERE proposal_id = p.id ORDER BY at) a) AS approvals_json FROM proposals p "
)


def _with_approvals(row: Row) -> Proposal:
    pairs = json.loads(row["approvals_json"] or "[]")
    return _proposal(row, [(int(uid), str(name)) for uid, name in pairs])


def _proposal(row: Row, approvals: list[tuple[int, str]]) -> Proposal:
    return Proposal(
        id=row["id"], incident_id=row["incident_id"], kind=ProposalKind(row["kind"]), summary=row["summary"],
        state=ProposalState(row["state"]), approvals_required=row["approvals_required"],
        created_at=from_db(row["created_at"]) or datetime.min, expires_at=from_db(row["expires_at"]) or datetime.min,
        pattern_id=row["pattern_id"], action=json.loads(row["action_json"]) if row["action_json"] else None,
        requires_approval=bool(row["requires_approval"]), approvals=approvals, decided_by=row["decided_by"],
        decided_at=from_db(row["decided_at"]), result=row["result"],
    )


class ProposalRepository:
    def __init__(self, db: Executor) -> None:
        self.db = db

    async def create(
        self,
        incident_id: int,
        kind: str,
        summary: str,
        expires_at: datetime,
        *,
        pattern_id: str | None = None,
        action: dict[str, Any] | None = None,
        approvals_required: int = 1,
        requires_approval: bool = True,
    ) -> int:
        return await self.db.insert(
            "INSERT INTO proposals (incident_id, kind, summary, pattern_id, action_json, requires_approval, "
            "approvals_required, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (incident_id, kind, summary, pattern_id, json.dumps(action) if action else None,
             int(requires_approval), approvals_required, now_db(), to_db(expires_at)),
        )

    async def get(self, proposal_id: int) -> Proposal | None:
        row = await self.db.fetchone(_SELECT + "WHERE p.id = ?", (proposal_id,))
        return _with_approvals(row) if row else None

    async def latest_for(self, incident_id: int) -> Proposal | None:
        row = await self.db.fetchone(_SELECT + "WHERE p.incident_id = ? ORDER BY p.id DESC LIMIT 1", (incident_id,))
        return _with_approvals(row) if row else None

    async def add_approval(self, proposal_id: int, user_id: int, user_name: str) -> bool:
        """Record one person's approval; False if they had already approved."""
        changed = await self.db.execute(
            "INSERT OR IGNORE INTO approvals (proposal_id, user_id, user_name, at) VALUES (?, ?, ?, ?)",
            (proposal_id, user_id, user_name, now_db()),
        )
        return changed == 1

    async def approval_count(self, proposal_id: int) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM approvals WHERE proposal_id = ?", (proposal_id,))
        return int(row[0]) if row else 0

    async def transition(
        self,
        proposal_id: int,
        from_state: ProposalState,
        to_state: ProposalState,
        *,
        by: str | None = None,
        by_id: int | None = None,
        result: str | None = None,
    ) -> bool:
        """Compare-and-set: move only if the proposal is still in `from_state`. The move itself must be
        one the lifecycle allows (bot/proposals.py), else IllegalTransition: a bug, not a race."""
        check_transition(from_state, to_state)
        now = now_db()
        sets = ["state = ?"]
        params: list[Any] = [to_state.value]
        if to_state in (ProposalState.APPROVED, ProposalState.REJECTED, ProposalState.EXPIRED):
            sets += ["decided_at = ?", "decided_by = COALESCE(?, decided_by)", "decided_by_id = COALESCE(?, decided_by_id)"]
            params += [now, by, by_id]
        if to_state is ProposalState.RUNNING:
            sets.append("started_at = ?")
            params.append(now)
        if to_state.final:
            sets.append("finished_at = ?")
            params.append(now)
        if result is not None:
            sets.append("result = ?")
            params.append(result)
        params += [proposal_id, from_state.value]
        changed = await self.db.execute(
            f"UPDATE proposals SET {', '.join(sets)} WHERE id = ? AND state = ?", params
        )
        return changed == 1

    async def supersede_pending(self, incident_id: int) -> list[int]:
        """Close every still-pending proposal of an incident (it was resolved): a compare-and-set
        on `pending`, so one approved a moment earlier keeps its approval. Returns their ids."""
        rows = await self.db.fetchall(
            "SELECT id FROM proposals WHERE incident_id = ? AND state = ? ORDER BY id",
            (incident_id, ProposalState.PENDING.value),
        )
        return [row["id"] for row in rows
                if await self.transition(row["id"], ProposalState.PENDING, ProposalState.SUPERSEDED)]

    async def in_state(self, state: ProposalState) -> list[Proposal]:
        rows = await self.db.fetchall(_SELECT + "WHERE p.state = ? ORDER BY p.id", (state.value,))
        return [_with_approvals(r) for r in rows]

    async def expired_pending(self, now: datetime) -> list[Proposal]:
        rows = await self.db.fetchall(
            "SELECT * FROM proposals WHERE state = 'pending' AND expires_at <= ? ORDER BY id", (to_db(now),)
        )
        return [_proposal(r, []) for r in rows]

    async def runs_since(self, since: datetime, pattern_id: str | None = None) -> int:
        """Pattern runs started since `since` (for cooldowns and the global rate limit)."""
        sql = "SELECT COUNT(*) FROM proposals WHERE kind = ? AND started_at >= ?"
        params: list[Any] = [ProposalKind.PATTERN.value, to_db(since)]
        if pattern_id is not None:
            sql += " AND pattern_id = ?"
            params.append(pattern_id)
        row = await self.db.fetchone(sql, params)
        return int(row[0]) if row else 0

    async def run_start_times(self, pattern_id: str, since: datetime, exclude_id: int) -> list[datetime]:
        rows = await self.db.fetchall(
            "SELECT started_at FROM proposals WHERE kind = ? AND pattern_id = ? AND started_at >= ? AND id != ?",
            (ProposalKind.PATTERN.value, pattern_id, to_db(since), exclude_id),
        )
        return [dt for r in rows if (dt := from_db(r["started_at"])) is not None]

    async def clear_approvals(self, proposal_id: int) -> None:
        """Approvals are for one start; a start that was refused needs fresh ones."""
        await self.db.execute("DELETE FROM approvals WHERE proposal_id = ?", (proposal_id,))

    async def record_priority_correction(
        self, incident_id: int, original: str, corrected: str, user_id: int, user_name: str
    ) -> None:
        await self.db.insert(
            "INSERT INTO priority_corrections (incident_id, original, corrected, user_id, user_name, at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (incident_id, original, corrected, user_id, user_name, now_db()),
        )
