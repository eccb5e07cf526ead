"""An investigation's findings, and the chat reply that shows them (Telegram HTML, under 4096).

Every string from outside (stack paths, code, commit messages, authors, past titles, GlitchTip's
details) is redacted, then cut, then HTML-escaped, piece by piece, so no cut can break a tag and
no secret in the code reaches the chat. When the full report is too long, detail is dropped in
steps (recent commits, then the snippets after the first, …) rather than cut mid-way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bot.card_render import TELEGRAM_TEXT_LIMIT, esc
from bot.glitchtip.details import IssueDetails
from bot.investigate.frames import MappedFrame
from bot.investigate.git import Commit
from bot.models import Incident
from storage.investigations import PastIncident

Redact = Callable[[str], str]
LIMIT = TELEGRAM_TEXT_LIMIT - 96  # room for Telegram's own counting of entities


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


def _ago(moment: datetime, now: datetime) -> str:
    seconds = max(0.0, (now - moment).total_seconds())
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    return f"{days} day{'s' if days != 1 else ''} ago"


class _Writer:
    def __init__(self, redact: Redact) -> None:
        self.redact = redact

    def __call__(self, value: object, limit: int = 200) -> str:
        return esc(self.redact(str(value)), limit)

    def commit(self, commit: Commit, now: datetime) -> str:
        return (f"<code>{esc(commit.short)}</code> {self(commit.author, 60)}, {commit.at:%Y-%m-%d} "
                f"({_ago(commit.at, now)}) — {self(commit.subject, 100)}")


def render(findings: Findings, redact: Redact) -> str:
    """The report as chat HTML, with as much detail as fits Telegram's limit."""
    w = _Writer(redact)
    for detail in (3, 2, 1, 0):
        text = _render(findings, w, detail)
        if len(text) <= LIMIT:
            return text
    # Only text made mostly of `<` and `&` (4-5x longer once escaped) gets here: the places alone.
    where = "\n".join(f"<code>{w(frame.where, 100)}</code>" for frame in findings.frames)
    return f"🔎 <b>Investigation of #{findings.incident.id}</b>: too long for one message.\n{where}"[:LIMIT]


def _render(f: Findings, w: _Writer, detail: int) -> str:
    incident = f.incident
    parts = [f"🔎 <b>Investigation of #{incident.id}</b> — {w(incident.title, 160)}"]
    parts += _where(f, w, detail)
    parts += _suspect(f, w)
    parts += _similar(f, w, detail)
    parts += _enrichment(f, w)
    not_done = [*f.not_done, "No AI analysis was made: this is what the code, its history and past incidents say."]
    parts.append("ℹ️ " + "\nℹ️ ".join(w(n, 300) for n in not_done))
    return "\n\n".join(p for p in parts if p)


def _where(f: Findings, w: _Writer, detail: int) -> list[str]:
    if not f.frames:
        return []
    blocks = ["📍 <b>Where it crashed</b> (innermost first)"]
    for n, frame in enumerate(f.frames):
        fn = frame.mapped.frame.function
        lines = [f"<code>{w(frame.where, 200)}</code>" + (f" in <code>{w(fn, 80)}</code>" if fn else "")]
        if frame.snippet and (n == 0 and detail >= 1 or detail >= 2):
            crash = frame.mapped.frame.line
            code = "\n".join(f"{'→' if num == crash else ' '}{num:>5}  {w(text, 120)}" for num, text in frame.snippet)
            lines.append(f"<pre>{code}</pre>")
        if frame.blame is not None:
            lines.append(f"✍️ line last changed by {w.commit(frame.blame, f.now)}")
        if frame.history and detail >= 3:
            lines.append("📜 recent commits of the file:\n" + "\n".join(
                f"• {w.commit(c, f.now)}" for c in frame.history[:4]))
        blocks.append("\n".join(lines))
    return ["\n".join(blocks)]


def _suspect(f: Findings, w: _Writer) -> list[str]:
    if f.suspect is None or f.suspect.blame is None:
        return []
    return [f"🕵️ <b>Suspect commit</b>: {w.commit(f.suspect.blame, f.now)}\n"
            f"It last changed the crashing line <code>{w(f.suspect.where, 200)}</code> "
            f"within the last {f.suspect_days:g} days."]


def _ended(p: PastIncident, w: _Writer) -> str:
    if p.status == "resolved":
        when = f" on {p.resolved_at:%Y-%m-%d}" if p.resolved_at else ""
        how = f"✔️ resolved by {w(p.resolved_by or 'someone', 60)}{when}"
    else:
        how = "still open"
    if p.proposal_summary and p.proposal_state in ("succeeded", "failed"):  # a fix or step that ran
        how += f"; ran {w(p.proposal_summary, 80)} ({esc(p.proposal_state)})"
    if p.github_number is not None:
        how += f"; GitHub #{p.github_number}"
    return how


def _similar(f: Findings, w: _Writer, detail: int) -> list[str]:
    if not f.similar:
        return ["🔁 <b>Similar incidents</b>: none found in this bot's history."]
    shown = f.similar if detail >= 1 else f.similar[:2]
    lines = [f"• #{p.id} {w(p.title, 90 if detail >= 1 else 50)} — {_ended(p, w)}" for p in shown]
    return ["🔁 <b>Similar incidents</b> (resolved first)\n" + "\n".join(lines)]


def _enrichment(f: Findings, w: _Writer) -> list[str]:
    details, incident = f.enrichment, f.incident
    lines: list[str] = []
    if details is not None and details.request:
        lines.append(f"request: {w(details.request, 200)}")
    release = (details.release if details else None) or incident.release
    if release:
        lines.append(f"release: {w(release, 80)}")
    if details is not None:
        lines += [f"{w(k, 20)}: {w(v, 80)}" for k, v in details.runtime]
    lines += [f"{w(k, 40)}: {w(v, 80)}" for k, v in list(incident.tags.items())[:5]]
    return ["🌐 <b>Context</b>\n" + "\n".join(lines)] if lines else []
