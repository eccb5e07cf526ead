"""GlitchTip's API: each incident's link to its issue or monitor, and the durable job queue.

A link exists only for incidents opened while the API is configured, so "is this incident
GlitchTip's, and may we talk to GlitchTip about it?" is one lookup, and with the API off nothing
here is ever written (bot/resolution.py asks for a resolve job on every resolve; it is a no-op
without a link).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.db import Executor, Row
from storage.timefmt import from_db, now_db, to_db

JOB_KINDS = ("resolve", "enrich", "refresh")  # in the order the worker takes them


@dataclass(frozen=True)
class GlitchTipLink:
    incident_id: int
    kind: str  # issue | monitor
    external_id: str
    org: str | None
    details: dict[str, Any] | None
    fetched_at: datetime | None
    problem: str | None
    api_status: str | None
    resolve_state: str | None
    resolve_note: str | None
    comebacks: int
    comeback_at: datetime | None


@dataclass(frozen=True)
class GlitchTipJob:
    id: int
    incident_id: int
    kind: str  # enrich | refresh | resolve
    attempts: int


def _link(row: Row) -> GlitchTipLink:
    return GlitchTipLink(
        incident_id=row["incident_id"], kind=row["kind"], external_id=row["external_id"], org=row["org"],
        details=json.loads(row["details_json"]) if row["details_json"] else None,
        fetched_at=from_db(row["fetched_at"]), problem=row["problem"], api_status=row["api_status"],
        resolve_state=row["resolve_state"], resolve_note=row["resolve_note"], comebacks=row["comebacks"],
        comeback_at=from_db(row["comeback_at"]),
    )


class GlitchTipRepository:
    def __init__(self, db: Executor) -> None:
        self.db = db

    # ---- links

    async def link(self, incident_id: int) -> GlitchTipLink | None:
        row = await self.db.fetchone("SELECT * FROM glitchtip_links WHERE incident_id = ?", (incident_id,))
        return _link(row) if row else None

    async def add_link(self, incident_id: int, kind: str, external_id: str, org: str | None) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO glitchtip_links (incident_id, kind, external_id, org) VALUES (?, ?, ?, ?)",
            (incident_id, kind, external_id, org),
        )

    async def store_details(
        self, incident_id: int, details: dict[str, Any], *, api_status: str | None = None,
        api_last_seen: datetime | None = None,
    ) -> None:
        """Fresh details: the problem line goes, the status and last-seen are what GlitchTip said."""
        await self.db.execute(
            "UPDATE glitchtip_links SET details_json = ?, fetched_at = ?, problem = NULL, "
            "api_status = COALESCE(?, api_status), api_last_seen = COALESCE(?, api_last_seen) WHERE incident_id = ?",
            (json.dumps(details), now_db(), api_status, to_db(api_last_seen), incident_id),
        )

    async def set_problem(self, incident_id: int, problem: str | None) -> bool:
        """Say on the card why details are missing; True when that changed what the card says."""
        changed = await self.db.execute(
            "UPDATE glitchtip_links SET problem = ? WHERE incident_id = ? AND problem IS NOT ?",
            (problem, incident_id, problem),
        )
        return changed == 1

    async def set_api_status(self, incident_id: int, status: str) -> None:
        await self.db.execute("UPDATE glitchtip_links SET api_status = ? WHERE incident_id = ?", (status, incident_id))

    async def mark_comeback(self, incident_id: int, at: datetime) -> bool:
        """It came back in GlitchTip after GlitchTip had it resolved; False when it was not resolved there."""
        changed = await self.db.execute(
            "UPDATE glitchtip_links SET api_status = 'unresolved', comebacks = comebacks + 1, comeback_at = ? "
            "WHERE incident_id = ? AND api_status = 'resolved'",
            (to_db(at), incident_id),
        )
        return changed == 1

    async def set_resolve_state(self, incident_id: int, state: str, note: str | None) -> None:
        await self.db.execute(
            "UPDATE glitchtip_links SET resolve_state = ?, resolve_note = ? WHERE incident_id = ?",
            (state, note, incident_id),
        )

    async def request_resolve(self, incident_id: int) -> bool:
        """Queue `PUT status=resolved` for the incident's GlitchTip issue; False when it has none."""
        linked = await self.db.execute(
            "UPDATE glitchtip_links SET resolve_state = 'pending', resolve_note = NULL "
            "WHERE incident_id = ? AND kind = 'issue'",
            (incident_id,),
        )
        if linked:
            await self.enqueue(incident_id, "resolve")
        return linked == 1

    async def open_resolved_upstream(self) -> list[int]:
        """Open incidents whose GlitchTip issue was resolved in GlitchTip (a new alert is a comeback)."""
        rows = await self.db.fetchall(
            "SELECT l.incident_id FROM glitchtip_links l JOIN incidents i ON i.id = l.incident_id "
            "WHERE l.api_status = 'resolved' AND i.status = 'open'"
        )
        return [r["incident_id"] for r in rows]

    async def newer_open_incident(self, incident_id: int) -> int | None:
        """An open incident of the same error opened after this one (it came back meanwhile)."""
        row = await self.db.fetchone(
            "SELECT n.id FROM incidents o JOIN incidents n ON n.fingerprint = o.fingerprint "
            "WHERE o.id = ? AND n.id > o.id AND n.status = 'open' ORDER BY n.id DESC LIMIT 1",
            (incident_id,),
        )
        return row["id"] if row else None

    async def refresh_candidates(self, seen_since: datetime, limit: int) -> list[int]:
        """Open GlitchTip issues seen (by GlitchTip or here) since then, most recently seen first."""
        rows = await self.db.fetchall(
            "SELECT l.incident_id FROM glitchtip_links l JOIN incidents i ON i.id = l.incident_id "
            "WHERE l.kind = 'issue' AND i.status = 'open' AND l.api_status IS NOT 'gone' "
            "AND MAX(COALESCE(l.api_last_seen, ''), i.last_seen) >= ? "
            "ORDER BY MAX(COALESCE(l.api_last_seen, ''), i.last_seen) DESC LIMIT ?",
            (to_db(seen_since), limit),
        )
        return [r["incident_id"] for r in rows]

    # ---- jobs

    async def enqueue(self, incident_id: int, kind: str, at: float = 0.0) -> bool:
        """Queue a job (once: a pending job of that kind for that incident already covers it)."""
        added = await self.db.execute(
            "INSERT OR IGNORE INTO glitchtip_jobs (incident_id, kind, next_attempt_at, created_at) VALUES (?, ?, ?, ?)",
            (incident_id, kind, at, now_db()),
        )
        return added == 1

    async def due_jobs(self, limit: int, kinds: tuple[str, ...] = JOB_KINDS, now: float | None = None) -> list[GlitchTipJob]:
        if not kinds:
            return []
        marks = ",".join("?" * len(kinds))
        order = " ".join(f"WHEN '{k}' THEN {n}" for n, k in enumerate(JOB_KINDS))
        rows = await self.db.fetchall(
            f"SELECT id, incident_id, kind, attempts FROM glitchtip_jobs WHERE state = 'pending' "
            f"AND next_attempt_at <= ? AND kind IN ({marks}) ORDER BY CASE kind {order} END, id LIMIT ?",
            (time.time() if now is None else now, *kinds, limit),
        )
        return [GlitchTipJob(r["id"], r["incident_id"], r["kind"], r["attempts"]) for r in rows]

    async def next_due_at(self, kinds: tuple[str, ...] = JOB_KINDS) -> float | None:
        if not kinds:
            return None
        marks = ",".join("?" * len(kinds))
        row = await self.db.fetchone(
            f"SELECT MIN(next_attempt_at) FROM glitchtip_jobs WHERE state = 'pending' AND kind IN ({marks})", kinds
        )
        return None if row is None or row[0] is None else float(row[0])

    async def finish_job(self, job_id: int, *, failed: bool = False, error: str | None = None) -> None:
        await self.db.execute(
            "UPDATE glitchtip_jobs SET state = ?, finished_at = ?, last_error = COALESCE(?, last_error) "
            "WHERE id = ? AND state = 'pending'",
            ("failed" if failed else "done", now_db(), error, job_id),
        )

    async def retry_job(self, job_id: int, error: str, at: float, *, counts: bool) -> None:
        """Try again at `at`; `counts`: the failure was the job's own (an outage does not count)."""
        await self.db.execute(
            "UPDATE glitchtip_jobs SET next_attempt_at = ?, last_error = ?, attempts = attempts + ? "
            "WHERE id = ? AND state = 'pending'",
            (at, error, 1 if counts else 0, job_id),
        )

    async def purge_finished(self, older_than: datetime) -> int:
        """Finished jobs are history only: a refresh every few minutes would otherwise pile them up."""
        return await self.db.execute(
            "DELETE FROM glitchtip_jobs WHERE state != 'pending' AND finished_at < ?", (to_db(older_than),)
        )

    async def pending_count(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM glitchtip_jobs WHERE state = 'pending'")
        return int(row[0]) if row else 0
