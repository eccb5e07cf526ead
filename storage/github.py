"""GitHub issues: each incident's filing intent and issue, and the durable job queue that files them.

The intent row is written before GitHub is called, and `create_sent_at` is committed just before
the create itself: after a crash (or any failed try) a row with it set means "an issue may exist
already", and the worker looks for its marker before creating another. With GitHub off nothing
here is ever written (bot/resolution.py asks for a comment on every resolve; it is a no-op
without a row).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.db import Executor, Row
from storage.timefmt import from_db, now_db


@dataclass(frozen=True)
class GitHubIssueRow:
    incident_id: int
    repo: str
    state: str  # pending | filed | failed
    proposal_id: int | None
    approved_by: str | None
    requested_at: datetime
    create_sent_at: datetime | None
    number: int | None
    html_url: str | None
    assignee: str | None
    filed_at: datetime | None
    found_existing: bool
    problem: str | None
    comment_state: str | None
    comment_note: str | None

    @property
    def ref(self) -> str:
        """`owner/name#12`, as GitHub writes a reference."""
        return f"{self.repo}#{self.number}" if self.number is not None else self.repo


@dataclass(frozen=True)
class GitHubJob:
    id: int
    incident_id: int
    kind: str  # create | comment
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    payload: dict[str, Any]


def _issue(row: Row) -> GitHubIssueRow:
    return GitHubIssueRow(
        incident_id=row["incident_id"], repo=row["repo"], state=row["state"], proposal_id=row["proposal_id"],
        approved_by=row["approved_by"], requested_at=from_db(row["requested_at"]) or datetime.min,
        create_sent_at=from_db(row["create_sent_at"]), number=row["number"], html_url=row["html_url"],
        assignee=row["assignee"], filed_at=from_db(row["filed_at"]), found_existing=bool(row["found_existing"]),
        problem=row["problem"], comment_state=row["comment_state"], comment_note=row["comment_note"],
    )


def _job(row: Row) -> GitHubJob:
    return GitHubJob(
        id=row["id"], incident_id=row["incident_id"], kind=row["kind"], attempts=row["attempts"],
        created_at=from_db(row["created_at"]) or datetime.min, sent_at=from_db(row["sent_at"]),
        payload=json.loads(row["payload_json"]) if row["payload_json"] else {},
    )


class GitHubIssueRepository:
    def __init__(self, db: Executor) -> None:
        self.db = db

    # ---- the intent and the issue

    async def issue(self, incident_id: int) -> GitHubIssueRow | None:
        row = await self.db.fetchone("SELECT * FROM github_issues WHERE incident_id = ?", (incident_id,))
        return _issue(row) if row else None

    async def request_issue(self, incident_id: int, repo: str, proposal_id: int | None,
                            approved_by: str | None, *, investigation_id: int | None = None,
                            ) -> tuple[str, GitHubIssueRow | None]:
        """Record the intent to file (once per incident) and queue its creation.

        `investigation_id`: the report whose 📝 button was pressed, kept in the create job so the
        body carries that report (None: Approve, the newest report). A job already pending keeps
        the report it was queued with.

        Returns what was there before: ("new", None), or the state of the existing row with it —
        "filed" (nothing to do: link it), "pending" (already on its way), "failed" (tried again).
        """
        job = {"investigation_id": investigation_id} if investigation_id is not None else None
        existing = await self.issue(incident_id)
        if existing is None:
            await self.db.execute(
                "INSERT INTO github_issues (incident_id, repo, proposal_id, approved_by, requested_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (incident_id, repo, proposal_id, approved_by, now_db()),
            )
            await self.enqueue(incident_id, "create", payload=job)
            return "new", None
        if existing.state == "failed":
            # A person approved again (after fixing the token, say). `create_sent_at` is kept: if an
            # earlier try may have created it after all, the worker finds it instead of a second one.
            await self.db.execute(
                "UPDATE github_issues SET state = 'pending', problem = NULL, proposal_id = ?, approved_by = ?, "
                "repo = ? WHERE incident_id = ? AND state = 'failed'",
                (proposal_id, approved_by, repo, incident_id),
            )
            await self.enqueue(incident_id, "create", payload=job)
        elif existing.state == "pending":
            await self.enqueue(incident_id, "create", payload=job)  # a no-op while its job is pending
        return existing.state, existing

    async def mark_create_sent(self, incident_id: int) -> None:
        """Committed before the create call: from now on an issue may exist for this incident."""
        await self.db.execute(
            "UPDATE github_issues SET create_sent_at = COALESCE(create_sent_at, ?) WHERE incident_id = ?",
            (now_db(), incident_id),
        )

    async def mark_filed(self, incident_id: int, number: int, html_url: str, assignee: str | None,
                         *, found_existing: bool) -> bool:
        changed = await self.db.execute(
            "UPDATE github_issues SET state = 'filed', number = ?, html_url = ?, assignee = ?, filed_at = ?, "
            "found_existing = ?, problem = NULL WHERE incident_id = ? AND state = 'pending'",
            (number, html_url, assignee, now_db(), int(found_existing), incident_id),
        )
        return changed == 1

    async def mark_failed(self, incident_id: int, problem: str) -> bool:
        changed = await self.db.execute(
            "UPDATE github_issues SET state = 'failed', problem = ? WHERE incident_id = ? AND state = 'pending'",
            (problem, incident_id),
        )
        return changed == 1

    async def set_problem(self, incident_id: int, problem: str | None) -> bool:
        """Say on the card why it is not filed yet; True when that changed what the card says."""
        changed = await self.db.execute(
            "UPDATE github_issues SET problem = ? WHERE incident_id = ? AND problem IS NOT ?",
            (problem, incident_id, problem),
        )
        return changed == 1

    async def issue_of_incident(self, incident_id: int | None) -> GitHubIssueRow | None:
        """The filed issue of another incident (a regression's earlier one), if any."""
        if incident_id is None:
            return None
        found = await self.issue(incident_id)
        return found if found is not None and found.state == "filed" else None

    # ---- the comment a resolve asks for

    async def request_comment(self, incident_id: int, payload: dict[str, Any]) -> bool:
        """Queue "resolved in chat by …" for the incident's issue; False when it has none (or none
        on its way). A failed filing gets no comment."""
        changed = await self.db.execute(
            "UPDATE github_issues SET comment_state = 'pending', comment_note = NULL "
            "WHERE incident_id = ? AND state IN ('pending', 'filed')",
            (incident_id,),
        )
        if changed:
            await self.enqueue(incident_id, "comment", payload=payload)
        return changed == 1

    async def set_comment_state(self, incident_id: int, state: str, note: str | None) -> bool:
        changed = await self.db.execute(
            "UPDATE github_issues SET comment_state = ?, comment_note = ? WHERE incident_id = ? "
            "AND (comment_state IS NOT ? OR comment_note IS NOT ?)",
            (state, note, incident_id, state, note),
        )
        return changed == 1

    # ---- jobs

    async def enqueue(self, incident_id: int, kind: str, *, payload: dict[str, Any] | None = None,
                      at: float = 0.0) -> bool:
        """Queue a job (once: a pending job of that kind for that incident already covers it)."""
        added = await self.db.execute(
            "INSERT OR IGNORE INTO github_jobs (incident_id, kind, next_attempt_at, created_at, payload_json) "
            "VALUES (?, ?, ?, ?, ?)",
            (incident_id, kind, at, now_db(), json.dumps(payload) if payload else None),
        )
        return added == 1

    async def due_jobs(self, limit: int, now: float | None = None) -> list[GitHubJob]:
        """Due jobs, creates first (a comment waits for its issue anyway), oldest first."""
        rows = await self.db.fetchall(
            "SELECT * FROM github_jobs WHERE state = 'pending' AND next_attempt_at <= ? "
            "ORDER BY CASE kind WHEN 'create' THEN 0 ELSE 1 END, id LIMIT ?",
            (time.time() if now is None else now, limit),
        )
        return [_job(r) for r in rows]

    async def next_due_at(self) -> float | None:
        row = await self.db.fetchone("SELECT MIN(next_attempt_at) FROM github_jobs WHERE state = 'pending'")
        return None if row is None or row[0] is None else float(row[0])

    async def mark_job_sent(self, job_id: int) -> None:
        await self.db.execute(
            "UPDATE github_jobs SET sent_at = COALESCE(sent_at, ?) WHERE id = ?", (now_db(), job_id)
        )

    async def wake(self, incident_id: int, kind: str) -> None:
        """Make the incident's pending job of that kind due now."""
        await self.db.execute(
            "UPDATE github_jobs SET next_attempt_at = 0 WHERE incident_id = ? AND kind = ? AND state = 'pending'",
            (incident_id, kind),
        )

    async def finish_job(self, job_id: int, *, failed: bool = False, error: str | None = None) -> None:
        await self.db.execute(
            "UPDATE github_jobs SET state = ?, finished_at = ?, last_error = COALESCE(?, last_error) "
            "WHERE id = ? AND state = 'pending'",
            ("failed" if failed else "done", now_db(), error, job_id),
        )

    async def retry_job(self, job_id: int, error: str | None, at: float, *, counts: bool) -> None:
        """Try again at `at`; `counts`: the failure was the job's own (an outage does not count)."""
        await self.db.execute(
            "UPDATE github_jobs SET next_attempt_at = ?, last_error = COALESCE(?, last_error), "
            "attempts = attempts + ? WHERE id = ? AND state = 'pending'",
            (at, error, 1 if counts else 0, job_id),
        )

    async def pending_count(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM github_jobs WHERE state = 'pending'")
        return int(row[0]) if row else 0
