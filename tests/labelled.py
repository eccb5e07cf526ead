"""Labelled error sets (the shared corpus format): one loader for the triage and pattern tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bot.models import Alert, AlertKind

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    stacktrace: str
    category: str
    priority: str
    safe_pattern: str = "none"
    alt_categories: tuple[str, ...] = ()
    alt_patterns: tuple[str, ...] = ()

    def alert(self) -> Alert:
        return Alert(source="generic", kind=AlertKind.ERROR, title=self.title, fingerprint=self.id,
                     stacktrace=self.stacktrace, environment=None)


def load_cases(name: str) -> list[Case]:
    """Cases of tests/data/<name> (JSON lines with the corpus fields)."""
    cases = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        alt = d.get("alt_acceptable") or {}
        cases.append(Case(d["id"], d["title"], d.get("stacktrace", ""), d["category"], d["priority"],
                          d.get("safe_pattern", "none"), tuple(alt.get("category", [])),
                          tuple(alt.get("safe_pattern", []))))
    return cases
