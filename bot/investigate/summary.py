"""The short reply under the card (Telegram HTML, a document's caption: at most 1024 characters):
the cause, the suspect file:line and commit, the confidence and who wrote it; the rest is in the
attached Markdown report."""

from __future__ import annotations

from collections.abc import Callable

from bot.card_render import esc
from bot.investigate.model import CLAUDE, InvestigationReport
from bot.investigate.report import Findings

Redact = Callable[[str], str]


def summary_html(report: InvestigationReport, findings: Findings, redact: Redact) -> str:
    def w(value: object, limit: int) -> str:
        return esc(redact(str(value)), limit)

    incident = findings.incident
    lines = [f"🔎 <b>Investigation of #{incident.id}</b> — {w(incident.title, 120)}",
             f"💡 {w(report.root_cause, 300)}"]
    where, commit = _suspect(report, findings)
    if where or commit:
        parts = [f"<code>{w(where, 120)}</code>"] if where else []
        if commit:
            parts.append(f"commit <code>{w(commit, 40)}</code>")
        lines.append("📍 " + " · ".join(parts))
    lines.append(f"🎯 Confidence: {report.confidence} · {w(report.source_label, 160)}")
    if report.source != CLAUDE:
        lines.append("ℹ️ No AI analysis was made.")
    lines.append("📄 The full report (code, history, similar incidents) is attached.")
    return "\n".join(lines)


def _suspect(report: InvestigationReport, findings: Findings) -> tuple[str, str]:
    """The place and commit to name: the suspect's (when the report's evidence has it), else the first evidence's."""
    if findings.suspect is not None and findings.suspect.blame is not None and report.source != CLAUDE:
        return findings.suspect.where, findings.suspect.blame.short
    where = next((e.where for e in report.evidence if e.where), "")
    commit = next((e.commit for e in report.evidence if e.commit), "")
    if not commit and findings.suspect is not None and findings.suspect.blame is not None:
        commit = findings.suspect.blame.short
    if not where and findings.frames:
        where = findings.frames[0].where
    return where, commit or ""
