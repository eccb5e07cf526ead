"""Similar past incidents: titles, culprits and stacks normalised, searched with SQLite's FTS5.

Normalising drops what differs between two occurrences of the same error (numbers, ids, hex,
UUIDs, quoted values' punctuation), so "worker 7 crashed" finds "worker 12 crashed". FTS5 finds
candidates; a word-overlap check keeps only those that really look alike, resolved ones first.
"""

from __future__ import annotations

import asyncio
import re

from bot.models import Incident
from storage.db import Database
from storage.investigations import IndexRow, InvestigationRepository, PastIncident

MAX_SIMILAR = 5
MIN_OVERLAP = 0.35  # share of words two titles+culprits have in common (Jaccard)
MAX_QUERY_WORDS = 24
_MASKS = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # UUIDs
    r"|\b0x[0-9a-f]+\b|\b[0-9a-f]{8,}\b"  # addresses, hashes
    r"|\d+"  # numbers: ports, ids, counts, line numbers
)
_WORD = re.compile(r"[^\W\d_][\w]*", re.UNICODE)


def normalise(text: str) -> str:
    """Lower case, with numbers, hex and UUIDs gone: the words that stay the same between repeats."""
    return " ".join(_WORD.findall(_MASKS.sub(" ", text.lower())))


def words(text: str) -> set[str]:
    return {w for w in normalise(text).split() if len(w) > 1}


def fts_query(text: str) -> str | None:
    """An FTS5 OR-query of the text's words, each quoted (so AND, NOT, NEAR are only words)."""
    chosen = sorted(words(text), key=lambda w: (-len(w), w))[:MAX_QUERY_WORDS]
    return " OR ".join(f'"{w}"' for w in chosen) or None


async def catch_up_index(db: Database) -> None:
    """Add incidents opened since the last search to the index (in chunks; the first run backfills)."""
    while True:
        rows = await InvestigationRepository(db).unindexed()
        if not rows:
            return
        # Regexes over up to 5,000 titles and stacks: off the event loop, as the pipeline's CPU work is.
        entries = await asyncio.to_thread(_index_entries, rows)
        async with db.transaction() as tx:  # one commit per chunk, not one per incident
            await InvestigationRepository(tx).index(entries)


def _index_entries(rows: list[IndexRow]) -> list[tuple[int, str, str, str]]:
    return [(r.incident_id, normalise(r.title), normalise(r.culprit), normalise(r.stack)) for r in rows]


async def similar_incidents(db: Database, incident: Incident) -> list[PastIncident]:
    """Past incidents like this one: resolved first, then by likeness; each knows how it ended."""
    await catch_up_index(db)
    own = words(f"{incident.title} {incident.message}")
    query = fts_query(f"{incident.title} {incident.message}")
    if query is None:
        return []
    found = await InvestigationRepository(db).search(query, incident.id, limit=40)
    scored = [(overlap(own, words(f"{p.title} {p.message}")), p) for p in found]
    alike = [(score, p) for score, p in scored if score >= MIN_OVERLAP]
    alike.sort(key=lambda sp: (sp[1].status != "resolved", -sp[0], -sp[1].id))
    return [p for _, p in alike[:MAX_SIMILAR]]


def overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0
