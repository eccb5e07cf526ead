"""Investigations: the durable row per press, the 👍/👎 votes on reports, and the similar-incident index.

An investigation row is written in the press's transaction and moves queued → running → done |
failed; a row still queued or running at the next start is marked interrupted (never re-run by
itself: the person presses again). The search index (`incident_search`, FTS5) holds normalised
text that Python computes, so it is filled here on demand rather than by triggers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from storage.db import Executor, Row
from storage.timefmt import from_db, now_db, to_db

ACTIVE_STATES = ("queued", "running")


@dataclass(frozen=True)
class Investigation:
    id: int
    incident_id: int
    state: str  # queued | running | done | failed | interrupted
    requested_by: str
    requested_id: int
    via: str
    requested_at: datetime | None
    report_html: str | None
    error: str | None
    report_markdown: str | None = None  # the full report (redacted): the chat's document, a GitHub issue body
    report_json: str | None = None  # the structured report (bot/investigate/model.py InvestigationReport)


@dataclass(frozen=True)
class IndexRow:
    """An incident's text as stored, before normalising."""

    incident_id: int
    title: str
    culprit: str
    stack: str


@dataclass(frozen=True)
class PastIncident:
    """A search hit and how it ended: resolved by whom and when, its last proposal, its GitHub issue."""

    id: int
    title: str
    message: str
    status: str
    first_seen: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    proposal_summary: str | None
    proposal_state: str | None
    proposal_kind: str | None
    github_number: int | None
    github_url: str | None
    rank: float


def _investigation(row: Row) -> Investigation:
    return Investigation(
        id=row["id"], incident_id=row["incident_id"], state=row["state"], requested_by=row["requested_by"],
        requested_id=row["requested_id"], via=row["via"], requested_at=from_db(row["requested_at"]),
        report_html=row["report_html"], error=row["error"],
        report_markdown=row["report_markdown"], report_json=row["report_json"],
    )


class InvestigationRepository:
    def __init__(self, db: Executor) -> None:
        self.db = db

    # ---- the investigation rows

    async def create(self, incident_id: int, by: str, by_id: int, via: str) -> int | None:
        """A new queued investigation; None when one is already queued or running for this incident."""
        changed = await self.db.execute(
            "INSERT OR IGNORE INTO investigations (incident_id, requested_by, requested_id, via, requested_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (incident_id, by, by_id, via, now_db()),
        )
        if not changed:
            return None
        row = await self.db.fetchone(
            "SELECT id FROM investigations WHERE incident_id = ? AND state = 'queued' ORDER BY id DESC LIMIT 1",
            (incident_id,),
        )
        return int(row["id"]) if row else None

    async def get(self, investigation_id: int) -> Investigation | None:
        row = await self.db.fetchone("SELECT * FROM investigations WHERE id = ?", (investigation_id,))
        return _investigation(row) if row else None

    async def active_for(self, incident_id: int) -> Investigation | None:
        row = await self.db.fetchone(
            "SELECT * FROM investigations WHERE incident_id = ? AND state IN ('queued', 'running')", (incident_id,)
        )
        return _investigation(row) if row else None

    async def start(self, investigation_id: int) -> bool:
        """queued → running (compare-and-set); False when it is not queued any more."""
        return await self.db.execute(
            "UPDATE investigations SET state = 'running', started_at = ? WHERE id = ? AND state = 'queued'",
            (now_db(), investigation_id),
        ) == 1

    async def finish(self, investigation_id: int, report_html: str, report_markdown: str | None = None,
                     report_json: str | None = None) -> bool:
        """running → done with its reports (all redacted by the caller)."""
        return await self.db.execute(
            "UPDATE investigations SET state = 'done', finished_at = ?, report_html = ?, report_markdown = ?, "
            "report_json = ? WHERE id = ? AND state = 'running'",
            (now_db(), report_html, report_markdown, report_json, investigation_id),
        ) == 1

    async def latest_report_markdown(self, incident_id: int) -> str | None:
        """The newest finished investigation's full Markdown report for this incident (stored redacted)."""
        row = await self.db.fetchone(
            "SELECT report_markdown FROM investigations WHERE incident_id = ? AND state = 'done' "
            "AND report_markdown IS NOT NULL ORDER BY id DESC LIMIT 1",
            (incident_id,),
        )
        return str(row["report_markdown"]) if row else None

    async def fail(self, investigation_id: int, error: str) -> bool:
        return await self.db.execute(
            "UPDATE investigations SET state = 'failed', finished_at = ?, error = ? "
            "WHERE id = ? AND state IN ('queued', 'running')",
            (now_db(), error[:500], investigation_id),
        ) == 1

    async def interrupt_active(self) -> list[Investigation]:
        """At start: every investigation a crash left queued or running, now marked interrupted."""
        rows = await self.db.fetchall("SELECT * FROM investigations WHERE state IN ('queued', 'running') ORDER BY id")
        await self.db.execute(
            "UPDATE investigations SET state = 'interrupted', finished_at = ?, error = 'interrupted by a restart' "
            "WHERE state IN ('queued', 'running')",
            (now_db(),),
        )
        return [_investigation(r) for r in rows]

    # ---- votes

    async def vote(self, investigation_id: int, user_id: int, user_name: str, helpful: bool) -> bool | None:
        """Record (or change) this person's vote; returns their previous vote, None when it is the first."""
        row = await self.db.fetchone(
            "SELECT helpful FROM investigation_votes WHERE investigation_id = ? AND user_id = ?",
            (investigation_id, user_id),
        )
        await self.db.execute(
            "INSERT INTO investigation_votes (investigation_id, user_id, user_name, helpful, voted_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (investigation_id, user_id) DO UPDATE SET "
            "helpful = excluded.helpful, user_name = excluded.user_name, voted_at = excluded.voted_at",
            (investigation_id, user_id, user_name, int(helpful), now_db()),
        )
        return bool(row["helpful"]) if row else None

    async def votes(self, investigation_id: int) -> tuple[int, int]:
        row = await self.db.fetchone(
            "SELECT COALESCE(SUM(helpful), 0) AS up, COUNT(*) - COALESCE(SUM(helpful), 0) AS down "
            "FROM investigation_votes WHERE investigation_id = ?",
            (investigation_id,),
        )
        return (int(row["up"]), int(row["down"])) if row else (0, 0)

    async def helpfulness(self, since: datetime) -> tuple[int, int]:
        """(👍, 👎) over the votes cast (or last changed) since then: one per person per report."""
        row = await self.db.fetchone(
            "SELECT COALESCE(SUM(helpful), 0) AS up, COUNT(*) - COALESCE(SUM(helpful), 0) AS down "
            "FROM investigation_votes WHERE voted_at >= ?",
            (to_db(since),),
        )
        return (int(row["up"]), int(row["down"])) if row else (0, 0)

    # ---- similar incidents

    async def unindexed(self, limit: int = 5000) -> list[IndexRow]:
        """Incidents not in the search index yet (oldest first)."""
        rows = await self.db.fetchall(
            "SELECT id, title, message, substr(stacktrace, 1, 8000) AS stack FROM incidents "
            "WHERE id > COALESCE((SELECT MAX(rowid) FROM incident_search), 0) ORDER BY id LIMIT ?",
            (limit,),
        )
        return [IndexRow(r["id"], r["title"], r["message"], r["stack"]) for r in rows]

    async def index(self, rows: list[tuple[int, str, str, str]]) -> None:
        """(incident id, normalised title, culprit, stack) into the search index."""
        await self.db.executemany(
            "INSERT OR REPLACE INTO incident_search (rowid, title, culprit, stack) VALUES (?, ?, ?, ?)", rows
        )

    async def search(self, match: str, exclude_id: int, limit: int = 20) -> list[PastIncident]:
        """Incidents matching an FTS5 query (best first), each with how it ended."""
        rows = await self.db.fetchall(
            "SELECT i.id, i.title, i.message, i.status, i.first_seen, i.resolved_at, i.resolved_by, s.rank, "
            "  (SELECT p.summary FROM proposals p WHERE p.incident_id = i.id ORDER BY p.id DESC LIMIT 1) AS p_summary, "
            "  (SELECT p.state FROM proposals p WHERE p.incident_id = i.id ORDER BY p.id DESC LIMIT 1) AS p_state, "
            "  (SELECT p.kind FROM proposals p WHERE p.incident_id = i.id ORDER BY p.id DESC LIMIT 1) AS p_kind, "
            "  g.number AS gh_number, g.html_url AS gh_url "
            "FROM incident_search s JOIN incidents i ON i.id = s.rowid "
            "LEFT JOIN github_issues g ON g.incident_id = i.id AND g.state = 'filed' "
            "WHERE incident_search MATCH ? AND i.id != ? ORDER BY s.rank LIMIT ?",
            (match, exclude_id, limit),
        )
        return [
            PastIncident(
                id=r["id"], title=r["title"], message=r["message"], status=r["status"],
                first_seen=from_db(r["first_seen"]), resolved_at=from_db(r["resolved_at"]),
                resolved_by=r["resolved_by"], proposal_summary=r["p_summary"], proposal_state=r["p_state"],
                proposal_kind=r["p_kind"], github_number=r["gh_number"], github_url=r["gh_url"], rank=r["rank"],
            )
            for r in rows
        ]
