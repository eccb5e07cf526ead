"""An investigation's findings: what the code, its history and past incidents say, gathered
without any key. They are shown by markdown.py (the full report) and summary.py (the reply under
the card), and given to Claude as its starting point (claude.py); each redacts what it shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bot.glitchtip.details import IssueDetails
from bot.investigate.frames import MappedFrame
from bot.investigate.git import Commit
from bot.models import Incident
from storage.investigations import PastIncident


@dataclass(frozen=True)
class FrameFinding:
    """One crashing frame of the app: its code around the line, who last touched the line, the file's history."""

    mapped: MappedFrame
    snippet: list[tuple[int, str]] = field(default_factory=list)
    blame: Commit | None = None
    history: list[Commit] = field(default_factory=list)

    @property
    def where(self) -> str:
        line = self.mapped.frame.line
        return f"{self.mapped.file}:{line}" if line is not None else self.mapped.file


@dataclass(frozen=True)
class Findings:
    incident: Incident
    investigation_id: int
    frames: list[FrameFinding]
    suspect: FrameFinding | None  # the frame whose line a recent commit touched
    suspect_days: float
    similar: list[PastIncident]
    enrichment: IssueDetails | None
    stack_frames_seen: int  # frames found in the stack (the app's or not)
    not_done: list[str]  # what it could not do, and why
    now: datetime
