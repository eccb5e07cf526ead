"""One report shape for both paths: what Claude submits, and what the findings alone say without AI.

`ReportBody` is what Claude is asked for (its JSON schema is the `submit_report` tool's input);
`InvestigationReport` adds who wrote it: "claude", or "no AI" with the reason Claude was not used
(no key, budget spent, a timeout, an invalid answer…). Field caps keep an over-long answer from
becoming a report: it is refused as invalid (one retry, then the key-free report).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.investigate.report import Findings, FrameFinding

Confidence = Literal["low", "medium", "high"]
NO_AI: Literal["no AI"] = "no AI"
CLAUDE: Literal["claude"] = "claude"
NO_AI_SAID = "No AI analysis was made: this is what the code, its history and past incidents say."


class Evidence(BaseModel):
    """One thing that supports the cause: a place in the code, a commit, and why it matters."""

    model_config = ConfigDict(extra="forbid")

    file: str | None = Field(None, max_length=500, description="a file of the repository, relative path")
    line: int | None = Field(None, ge=1, description="the line in that file")
    commit: str | None = Field(None, max_length=64, description="a commit sha (short or full)")
    why: str = Field(..., min_length=1, max_length=2000, description="what this shows")

    @property
    def where(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        return self.file or ""


class ReportBody(BaseModel):
    """The investigation's conclusions: the `submit_report` tool's input."""

    model_config = ConfigDict(extra="forbid")

    root_cause: str = Field(..., min_length=1, max_length=4000, description="the most likely root cause")
    evidence: list[Evidence] = Field(default_factory=list, max_length=20,
                                     description="places in the code and commits that support the cause")
    suggested_fix: str | None = Field(None, max_length=20000,
                                      description="a unified diff or the corrected code; null if none")
    tests_to_add: list[str] = Field(default_factory=list, max_length=20,
                                    description="tests that would have caught this")
    confidence: Confidence = Field(..., description="how sure: low, medium or high")
    could_not_determine: list[str] = Field(default_factory=list, max_length=20,
                                           description="what could not be found out, and why")


class InvestigationReport(ReportBody):
    """A report and its source: "claude", or "no AI" (with why Claude was not used, if it was asked)."""

    source: Literal["claude", "no AI"] = NO_AI
    claude_unavailable: str | None = None  # "budget spent", "timed out after 60 s", …

    @property
    def source_label(self) -> str:
        if self.source == CLAUDE:
            return "Claude"
        if self.claude_unavailable:
            return f"no AI (Claude unavailable: {self.claude_unavailable})"
        return "no AI"


def submit_report_schema() -> dict[str, object]:
    """The JSON schema Claude's `submit_report` input must follow."""
    return ReportBody.model_json_schema()


def keyfree_report(findings: Findings, claude_unavailable: str | None = None) -> InvestigationReport:
    """The report the findings alone support: the suspect commit, the crashing code, past incidents
    and how they ended, the triage's likely cause; it says plainly that no AI analysis was made."""
    evidence = [_frame_evidence(f, findings) for f in findings.frames]
    for past in findings.similar[:3]:
        ended = f"resolved by {past.resolved_by or 'someone'}" if past.status == "resolved" else "still open"
        if past.proposal_summary and past.proposal_state in ("succeeded", "failed"):
            ended += f"; ran {past.proposal_summary} ({past.proposal_state})"
        evidence.append(Evidence(file=None, line=None, commit=None, why=f"Similar incident #{past.id} ({past.title[:200]}): {ended}."))
    cause = findings.incident.triage.likely_cause or "unknown"
    root = f"The triage rules' likely cause: {cause}"
    if findings.suspect is not None and findings.suspect.blame is not None:
        b = findings.suspect.blame
        root += (f". The crashing line {findings.suspect.where} was changed {_days(b.at, findings.now)} by commit "
                 f"{b.short} ({b.author}: {b.subject[:200]}), a suspect.")
    could_not = [*findings.not_done, NO_AI_SAID]
    if claude_unavailable:
        could_not.insert(0, f"Claude unavailable: {claude_unavailable}.")
    return InvestigationReport(
        root_cause=root[:4000], evidence=evidence[:20], suggested_fix=None, tests_to_add=[],
        confidence="medium" if findings.suspect is not None else "low", could_not_determine=could_not[:20],
        source=NO_AI, claude_unavailable=claude_unavailable,
    )


def _frame_evidence(frame: FrameFinding, findings: Findings) -> Evidence:
    crash = frame.mapped.frame.line
    code = next((text.strip() for n, text in frame.snippet if n == crash), None)
    why = "The crashing frame" if frame is (findings.frames[0] if findings.frames else None) else "A calling frame"
    if frame.mapped.frame.function:
        why += f", in {frame.mapped.frame.function}"
    if code:
        why += f": `{code[:300]}`"
    commit = None
    if frame.blame is not None:
        commit = frame.blame.short
        why += f". Line last changed by {frame.blame.author} on {frame.blame.at:%Y-%m-%d}: {frame.blame.subject[:200]}"
        if frame is findings.suspect:
            why += " (the suspect commit)"
    return Evidence(file=frame.mapped.file, line=crash, commit=commit, why=why[:2000])


def _days(moment: datetime, now: datetime) -> str:
    days = max(0.0, (now - moment).total_seconds()) / 86400
    return "today" if days < 1 else f"{int(days)} day{'s' if int(days) != 1 else ''} ago"
