"""Priority overrides and the offers that lead to them (issue 13; bot/overrides.py decides).

An offer is a rule + project pair and a priority shown with an Apply button; each showing (a
digest, a /stats reply) is its own row, and the button carries the showing's id, so a press is
judged against the message it was made under. An override is a live or removed decision to give
that pair's new incidents a fixed priority. Removed overrides stay as rows: who applied and who
removed them, and when, is history worth keeping.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.timefmt import from_db, now_db

if TYPE_CHECKING:  # `remediator triage` reads overrides without loading the async database layer
    from storage.db import Executor


@dataclass(frozen=True)
class OverrideOffer:
    """One showing of an offer: the Apply button under one message."""

    id: int  # the showing's id, which the button carries
    rule_id: str
    project: str
    priority: str
    corrections: int
    triaged: int
    offered_at: datetime  # when that message showed it
    pair_changes: int  # the pair's overrides applied + removed before it was shown
    pair_offer_id: int  # the rule + project + priority row the showings share


@dataclass(frozen=True)
class PriorityOverride:
    id: int
    rule_id: str
    project: str
    priority: str
    corrections: int
    applied_by: str
    applied_at: datetime
    removed_by: str | None = None
    removed_at: datetime | None = None

    @property
    def live(self) -> bool:
        return self.removed_at is None


_COLUMNS = "id, rule_id, project, priority, corrections, applied_by, applied_at, removed_by, removed_at"


def _override(row: Any) -> PriorityOverride:
    applied_at = from_db(row["applied_at"])
    assert applied_at is not None
    return PriorityOverride(row["id"], row["rule_id"], row["project"], row["priority"], row["corrections"],
                            row["applied_by"], applied_at, row["removed_by"], from_db(row["removed_at"]))


class OverrideRepository:
    def __init__(self, db: Executor) -> None:
        self.db = db

    # -- offers ------------------------------------------------------------------------------

    async def offer(self, rule_id: str, project: str, priority: str, corrections: int, triaged: int) -> int:
        """A new showing of the offer for this pair and priority; returns its id (for the button).
        Each message gets its own, so a later showing never revives an older message's button."""
        await self.db.execute(
            "INSERT INTO priority_override_offers (rule_id, project, priority, corrections, triaged, offered_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rule_id, project, priority) DO UPDATE SET "
            "corrections = excluded.corrections, triaged = excluded.triaged, offered_at = excluded.offered_at",
            (rule_id, project, priority, corrections, triaged, now_db()),
        )
        row = await self.db.fetchone(
            "SELECT id FROM priority_override_offers WHERE rule_id = ? AND project = ? AND priority = ?",
            (rule_id, project, priority),
        )
        assert row is not None
        return await self.db.insert(
            "INSERT INTO priority_override_showings (offer_id, corrections, triaged, pair_changes, shown_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (int(row["id"]), corrections, triaged, await self.pair_changes(rule_id, project), now_db()),
        )

    async def get_offer(self, showing_id: int) -> OverrideOffer | None:
        """The showing a button names, with its pair and priority; None when there is none."""
        row = await self.db.fetchone(
            "SELECT s.id, o.rule_id, o.project, o.priority, s.corrections, s.triaged, s.shown_at, s.pair_changes, "
            "o.id AS pair_offer_id FROM priority_override_showings s "
            "JOIN priority_override_offers o ON o.id = s.offer_id WHERE s.id = ?",
            (showing_id,),
        )
        if row is None:
            return None
        shown_at = from_db(row["shown_at"])
        assert shown_at is not None
        return OverrideOffer(row["id"], row["rule_id"], row["project"], row["priority"], row["corrections"],
                             row["triaged"], shown_at, row["pair_changes"], row["pair_offer_id"])

    async def pair_changes(self, rule_id: str, project: str) -> int:
        """How many times people changed the pair's overrides so far: each apply and each removal."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) + COUNT(removed_at) AS n FROM priority_overrides WHERE rule_id = ? AND project = ?",
            (rule_id, project),
        )
        return int(row["n"]) if row is not None else 0

    # -- overrides ---------------------------------------------------------------------------

    async def live(self) -> list[PriorityOverride]:
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM priority_overrides WHERE removed_at IS NULL ORDER BY id"
        )
        return [_override(r) for r in rows]

    async def get(self, override_id: int) -> PriorityOverride | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM priority_overrides WHERE id = ?", (override_id,))
        return _override(row) if row is not None else None

    async def live_for(self, rule_id: str, project: str) -> PriorityOverride | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM priority_overrides WHERE rule_id = ? AND project = ? AND removed_at IS NULL",
            (rule_id, project),
        )
        return _override(row) if row is not None else None

    async def latest_change(self, rule_id: str, project: str) -> PriorityOverride | None:
        """The pair's override a person applied or removed last (on a tie, the newer override)."""
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM priority_overrides WHERE rule_id = ? AND project = ? "
            "ORDER BY MAX(applied_at, COALESCE(removed_at, applied_at)) DESC, id DESC LIMIT 1",
            (rule_id, project),
        )
        return _override(row) if row is not None else None

    async def add(self, offer: OverrideOffer, by: str, by_id: int) -> int:
        return await self.db.insert(
            "INSERT INTO priority_overrides (rule_id, project, priority, corrections, offer_id, showing_id, "
            "applied_by, applied_by_id, applied_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (offer.rule_id, offer.project, offer.priority, offer.corrections, offer.pair_offer_id, offer.id,
             by, by_id, now_db()),
        )

    async def remove(self, override_id: int, by: str, by_id: int) -> bool:
        """Compare-and-set live -> removed; False when it was not live (or does not exist)."""
        changed = await self.db.execute(
            "UPDATE priority_overrides SET removed_by = ?, removed_by_id = ?, removed_at = ? "
            "WHERE id = ? AND removed_at IS NULL",
            (by, by_id, now_db(), override_id),
        )
        return changed == 1


def read_live_overrides(path: Path) -> list[PriorityOverride]:
    """The live overrides in the database at `path`, opened read-only (the terminal's `triage`
    must never create or migrate the bot's database). A database from before overrides existed
    has none. Raises sqlite3.Error when the file is not a database this can read."""
    uri = f"{path.absolute().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        conn.row_factory = sqlite3.Row
        known = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'priority_overrides'"
        ).fetchone()
        if known is None:
            return []
        rows = conn.execute(f"SELECT {_COLUMNS} FROM priority_overrides WHERE removed_at IS NULL ORDER BY id")
        return [_override(r) for r in rows.fetchall()]
    finally:
        conn.close()
