"""What the metrics read (bot/metrics.py computes them): incidents, corrections, proposals and
the audit log over a window [since, until). Read-only; every query is bounded by the window."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from bot.proposals import ProposalKind
from storage.db import Executor
from storage.timefmt import from_db, to_db


@dataclass(frozen=True)
class TriagedIncident:
    """An incident first seen in the window, with what triage said and what humans did to it."""

    id: int
    priority: str  # now (after any correction)
    priority_original: str  # as triaged
    category: str
    source: str  # who triaged it: rules | claude (incidents.triage_source, migration 008)
    rule_id: str | None
    project: str | None
    regression: bool
    # The priority a human last set, when it differs from the triage's own (`priority_original`):
    # None when nobody corrected it, or a person only put it back where triage had it (an override
    # set aside, or P1 -> P2 -> P1). What triage accuracy and the corrected rules judge.
    corrected_to: str | None
    rejected: bool  # a proposal of it was rejected
    # A human set its priority at all, even back to the triage's own: a human intervention.
    reprioritized: bool = False


@dataclass(frozen=True)
class FixRun:
    proposal_id: int
    outcome: str  # succeeded | failed
    verify_failed: bool
    recurred: bool


class Resolution(NamedTuple):
    """An incident resolved in the window: its priority now, seconds from first alert to resolve,
    and whether an investigation report was delivered before it was resolved."""

    priority: str
    seconds: float
    investigated: bool


@dataclass(frozen=True)
class DayIncident:
    """An incident as the digest's chart counts it (bot/chart.py): when it was first seen, its
    priority now, and whether a human corrected its priority."""

    first_seen: datetime
    priority: str
    corrected: bool


class MetricsRepository:
    def __init__(self, db: Executor) -> None:
        self.db = db

    async def triaged(self, since: datetime, until: datetime) -> list[TriagedIncident]:
        rows = await self.db.fetchall(
            "SELECT i.id, i.priority, i.priority_original, i.category, i.project, i.regression_of, "
            "i.triage_source AS triage_source, "
            "json_extract(i.triage_json, '$.rule_id') AS rule_id, "
            f"{_LAST_CORRECTION} AS last_corrected, "
            "EXISTS (SELECT 1 FROM proposals p WHERE p.incident_id = i.id AND p.state = 'rejected') AS rejected "
            "FROM incidents i WHERE i.first_seen >= ? AND i.first_seen < ? ORDER BY i.id",
            (to_db(since), to_db(until)),
        )
        return [
            TriagedIncident(r["id"], r["priority"], r["priority_original"], r["category"], str(r["triage_source"]),
                            r["rule_id"], r["project"], r["regression_of"] is not None,
                            _against_triage(r["last_corrected"], r["priority_original"]), bool(r["rejected"]),
                            reprioritized=r["last_corrected"] is not None)
            for r in rows
        ]

    async def day_incidents(self, since: datetime, until: datetime) -> list[DayIncident]:
        """Incidents first seen in the window, for the per-day chart (binned by local day in Python)."""
        rows = await self.db.fetchall(
            f"SELECT i.first_seen, i.priority, i.priority_original, {_LAST_CORRECTION} AS last_corrected "
            "FROM incidents i WHERE i.first_seen >= ? AND i.first_seen < ? ORDER BY i.id",
            (to_db(since), to_db(until)),
        )
        return [DayIncident(_moment(r["first_seen"]), r["priority"],
                            _against_triage(r["last_corrected"], r["priority_original"]) is not None) for r in rows]

    async def resolutions(self, since: datetime, until: datetime) -> list[Resolution]:
        """Incidents resolved in the window. "Investigated": a report was delivered (state 'done')
        before the resolve; one asked for but failed, or finished after, did not help resolve it."""
        rows = await self.db.fetchall(
            "SELECT i.priority, (julianday(i.resolved_at) - julianday(i.first_seen)) * 86400.0 AS seconds, "
            "EXISTS (SELECT 1 FROM investigations v WHERE v.incident_id = i.id AND v.state = 'done' "
            " AND v.finished_at <= i.resolved_at) AS investigated "
            "FROM incidents i WHERE i.status = 'resolved' AND i.resolved_at >= ? AND i.resolved_at < ? ORDER BY i.id",
            (to_db(since), to_db(until)),
        )
        return [Resolution(r["priority"], max(0.0, float(r["seconds"])), bool(r["investigated"])) for r in rows]

    async def open_by_priority(self) -> dict[str, int]:
        rows = await self.db.fetchall("SELECT priority, COUNT(*) AS n FROM incidents WHERE status = 'open' GROUP BY priority")
        return {r["priority"]: r["n"] for r in rows}

    async def noisiest(self, since: datetime, until: datetime, limit: int = 5) -> list[tuple[str, int]]:
        """(title, events) of the errors most often seen among those active in the window, by fingerprint."""
        rows = await self.db.fetchall(
            "SELECT fingerprint, SUM(count) AS events, "
            "(SELECT title FROM incidents t WHERE t.fingerprint = i.fingerprint ORDER BY t.id DESC LIMIT 1) AS title "
            "FROM incidents i WHERE last_seen >= ? AND first_seen < ? "
            "GROUP BY fingerprint ORDER BY events DESC, fingerprint LIMIT ?",
            (to_db(since), to_db(until), limit),
        )
        return [(r["title"], int(r["events"])) for r in rows]

    async def audit_outcomes(self, action: str, since: datetime, until: datetime) -> list[tuple[str, dict[str, Any]]]:
        """(outcome, detail) of the audit rows of one action in the window."""
        rows = await self.db.fetchall(
            "SELECT outcome, detail FROM audit WHERE action = ? AND at >= ? AND at < ? ORDER BY id",
            (action, to_db(since), to_db(until)),
        )
        return [(r["outcome"], json.loads(r["detail"] or "{}")) for r in rows]

    async def fix_runs(self, since: datetime, until: datetime) -> list[FixRun]:
        """Allow-listed fixes that finished in the window, and whether verify or a recurrence failed them."""
        rows = await self.db.fetchall(
            "SELECT a.proposal_id, a.outcome, json_extract(a.detail, '$.verify_ok') AS verify_ok, "
            "EXISTS (SELECT 1 FROM audit r WHERE r.action = 'fix.recurred' AND r.proposal_id = a.proposal_id) "
            "AS recurred "
            "FROM audit a JOIN proposals p ON p.id = a.proposal_id "
            "WHERE a.action = 'action.finish' AND p.kind = ? AND a.at >= ? AND a.at < ? "
            "AND COALESCE(json_extract(a.detail, '$.action_ran'), 1) != 0 ORDER BY a.id",
            (ProposalKind.PATTERN.value, to_db(since), to_db(until)),
        )
        return [
            FixRun(r["proposal_id"], r["outcome"], r["outcome"] == "failed" and r["verify_ok"] == 0,
                   bool(r["recurred"]))
            for r in rows
        ]


# The priority a human last set on incident `i` (NULL when nobody did).
_LAST_CORRECTION = (
    "(SELECT c.corrected FROM priority_corrections c WHERE c.incident_id = i.id ORDER BY c.id DESC LIMIT 1)"
)


def _against_triage(last_corrected: str | None, priority_original: str) -> str | None:
    """A human's last priority as a correction of the triage: None when it is the triage's own
    priority. An overridden incident keeps the rules' priority as its original (bot/overrides.py),
    so putting it back there sets the override aside; the rules were right, not corrected."""
    return last_corrected if last_corrected != priority_original else None


def _moment(value: str) -> datetime:
    """A NOT NULL timestamp column."""
    moment = from_db(value)
    assert moment is not None
    return moment
