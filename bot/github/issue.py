"""What the bot files: the issue's title, Markdown body and labels, built from a stored incident.

Pure: no I/O. Everything from an alert is untrusted text. It is redacted again before it is cut
(the incident was redacted when it was stored; this is the last step before it leaves), and the
finished sections once more. It is placed where GitHub renders it inert — in code spans and
code blocks whose fences are longer than any run of backticks inside — so an error message
cannot @mention people, link #issues, or add HTML.
Plain prose from the bot's own rules (the likely cause) has mentions, references and `<`
neutralised instead.

The hidden marker `<!-- remediator-incident: N -->` is the body's last line: it is how the bot
finds an issue it may already have filed (GitHub has no idempotency key). Alert text, however
it is crafted, is always above the footer, so `has_marker` (the last line) cannot be fooled by
an error message that contains another incident's marker.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime

from bot.glitchtip.details import IssueDetails
from bot.ingest import cut_middle
from bot.models import Incident, Owner
from bot.redact import Redactor

TITLE_LIMIT = 256  # GitHub refuses longer titles (422)
BODY_LIMIT = 65_536  # GitHub's limit for a body, in characters
STACK_EXCERPT = 6_000  # characters of the stack trace: its head and tail
REPORT_LIMIT = 30_000
TITLE_PREFIX = "[Auto] "
NEEDS_REVIEW = "needs-review"
AUTO_INVESTIGATED = "auto-investigated"

#: the labels the bot uses, with the colour and description it creates them with when missing
LABELS: dict[str, tuple[str, str]] = {
    NEEDS_REVIEW: ("fbca04", "Filed by remediator: a person should review it"),
    AUTO_INVESTIGATED: ("5319e7", "Carries remediator's automatic investigation report"),
    "P0": ("b60205", "Priority 0: outage or data loss, now"),
    "P1": ("d93f0b", "Priority 1: serious, today"),
    "P2": ("fbca04", "Priority 2: should be fixed"),
    "P3": ("0e8a16", "Priority 3: minor"),
}


@dataclass(frozen=True)
class IssueDraft:
    title: str
    body: str
    labels: list[str]
    assignees: list[str]


def marker(incident_id: int) -> str:
    return f"<!-- remediator-incident: {incident_id} -->"


def has_marker(body: str | None, incident_id: int) -> bool:
    """Whether an issue body is the one filed for this incident (the marker is its last line)."""
    return bool(body) and body.rstrip().endswith(marker(incident_id))  # type: ignore[union-attr]


def issue_title(title: str) -> str:
    """`[Auto] <title>` on one line, cut to GitHub's 256 characters."""
    flat = " ".join(title.split()) or "(no title)"
    room = TITLE_LIMIT - len(TITLE_PREFIX)
    if len(flat) > room:
        flat = flat[: room - 1].rstrip() + "…"
    return TITLE_PREFIX + flat


def labels_for(incident: Incident, *, investigated: bool) -> list[str]:
    wanted = [NEEDS_REVIEW, incident.priority.value]
    if investigated:
        wanted.insert(0, AUTO_INVESTIGATED)
    return wanted


# --------------------------------------------------------------------------- inert Markdown


def code(text: str, limit: int = 500) -> str:
    """An inline code span: nothing inside it is rendered (no mention, link or HTML)."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    if not flat:
        return "``"
    fence = "`" * (_longest_backtick_run(flat) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def code_block(text: str) -> str:
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    return f"{fence}text\n{text.rstrip()}\n{fence}"


def prose(text: str, limit: int = 600) -> str:
    """Bot-written prose (a rule's likely cause, which Claude's triage may write) on one line, with
    mentions, issue references and HTML made inert (a zero-width joiner after `@` and `#`, `<` as an
    entity) and bare URLs, which GitHub would link, in code spans."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    pieces = _BARE_URL.split(flat)  # odd indexes: the URLs
    return "".join(code(piece) if n % 2 else _inert_prose(piece) for n, piece in enumerate(pieces))


_BARE_URL = re.compile(r"\b((?:https?://|ftp://|www\.)[^\s<>`]+)", re.IGNORECASE)


def _inert_prose(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return re.sub(r"([@#])(?=\w)", "\\1\u200d", text)


def _longest_backtick_run(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "?"


# --------------------------------------------------------------------------- the body


@dataclass(frozen=True)
class IssueContext:
    """What the body says besides the incident itself."""

    approved_by: str
    approved_at: datetime
    assignee: str | None = None  # the owner's login when GitHub accepts it as an assignee
    tracker: IssueDetails | None = None  # GlitchTip's API details, when it is configured
    earlier_issue: str | None = None  # a regression: the earlier incident's issue (owner/name#12)
    report: str | None = None  # the investigation report (Markdown), when there is one


def render_issue(incident: Incident, context: IssueContext, redactor: Redactor) -> IssueDraft:
    """The issue for this incident: title, body (redacted, under GitHub's limit), labels, assignees."""
    incident = _redacted(incident, redactor)  # masked before anything is cut (it was at ingest too)
    head = [_preamble(), _triage_section(incident, context), _incident_section(incident, context)]
    crash = _crash_sections(incident, context)
    report = _report_section(context.report)
    footer = redactor.redact(_footer_text(context)) + "\n\n" + marker(incident.id)
    # The stack is what gives way when a body would be too long (it cannot be, with the caps
    # above, but a report of issue 9's can be long).
    for kept in (crash, crash[:1], []):
        body = "\n\n".join(redactor.redact(part) for part in [*head, *kept, *([report] if report else [])])
        if len(body) + len(footer) + 2 <= BODY_LIMIT:
            break
    body = body[: BODY_LIMIT - len(footer) - 2]
    return IssueDraft(
        title=issue_title(incident.title),
        body=f"{body}\n\n{footer}",
        labels=labels_for(incident, investigated=report is not None),
        assignees=[context.assignee] if context.assignee else [],
    )


def _redacted(incident: Incident, redactor: Redactor) -> Incident:
    r = redactor.redact
    return dataclasses.replace(
        incident, title=r(incident.title), message=r(incident.message), stacktrace=r(incident.stacktrace),
        url=r(incident.url) if incident.url else None, project=r(incident.project) if incident.project else None,
        server=r(incident.server) if incident.server else None,
        release=r(incident.release) if incident.release else None,
    )


def _preamble() -> str:
    return ("> [!NOTE]\n> Filed by **remediator** after a person approved it in Telegram. It was written by a "
            "bot from an error report and **needs review**: the triage comes from rules, not from a person.")


def _owner_line(owner: Owner | None, assignee: str | None) -> str:
    if owner is None:
        return "- **Owner:** nobody in the owners file"
    name = prose(owner.name, 100)
    if owner.github and assignee == owner.github:
        return f"- **Owner:** {name} (@{owner.github}, assigned)"
    if owner.github:
        return f"- **Owner:** {name} (@{owner.github}; GitHub does not accept them as an assignee here)"
    return f"- **Owner:** {name} (no GitHub login in the owners file)"


def _triage_section(incident: Incident, context: IssueContext) -> str:
    t = incident.triage
    priority = incident.priority.value
    if incident.priority != incident.priority_original:
        priority += f" (triaged {incident.priority_original.value}, corrected by a person)"
    lines = ["## Triage", f"- **Priority:** {priority}", f"- **Category:** {incident.category.value}"]
    if t.likely_cause:
        lines.append(f"- **Likely cause:** {prose(t.likely_cause)}")
    lines.append(_owner_line(t.owner, context.assignee))
    if t.tags:
        lines.append(f"- **Tags:** {code(', '.join(t.tags), 200)}")
    return "\n".join(lines)


def _incident_section(incident: Incident, context: IssueContext) -> str:
    tracker = context.tracker
    lines = ["## What the incident has", f"- **Error:** {code(incident.title, 1000)}"]
    culprit = tracker.culprit if tracker is not None and tracker.culprit else incident.message
    if culprit:
        lines.append(f"- **Culprit:** {code(culprit, 500)}")
    where = [v for v in (incident.project, incident.environment, incident.server, incident.release) if v]
    if where:
        lines.append(f"- **Where:** {' · '.join(code(v, 100) for v in where)} (project · environment · server · release)")
    if incident.level:
        lines.append(f"- **Level:** {code(incident.level, 20)}")
    lines.append(f"- **Seen:** {incident.count:,} time(s) here, first {_when(incident.first_seen)}, "
                 f"last {_when(incident.last_seen)}")
    if tracker is not None and tracker.count is not None:
        lines.append(f"- **In GlitchTip:** {tracker.count:,} event(s), first {_when(tracker.first_seen)}, "
                     f"last {_when(tracker.last_seen)}")
    if tracker is not None and tracker.request:
        lines.append(f"- **Request:** {code(tracker.request, 300)}")
    if incident.url and incident.url.startswith(("http://", "https://")):
        label = incident.tags.get("short_id") or ("GlitchTip" if incident.source == "glitchtip" else "the tracker")
        lines.append(f"- **Link:** [{prose(label, 60)}](<{incident.url.replace('>', '%3E')}>)")
    if incident.regression_of:
        earlier = f", filed as {context.earlier_issue}" if context.earlier_issue else ""
        lines.append(f"- **Regression:** it came back after incident #{incident.regression_of} was resolved{earlier}")
    lines.append(f"- **Incident:** #{incident.id} in remediator (source: {code(incident.source, 40)})")
    return "\n".join(lines)


def _crash_sections(incident: Incident, context: IssueContext) -> list[str]:
    sections = []
    tracker = context.tracker
    if tracker is not None and tracker.frames:
        frames = "\n".join(f"- {code(frame.label(), 300)}" for frame in tracker.frames)
        sections.append(f"### Where it crashed (innermost first)\n{frames}")
    if incident.stacktrace.strip():
        excerpt = cut_middle(incident.stacktrace.strip(), STACK_EXCERPT)
        sections.append(f"### Stack trace (excerpt)\n{code_block(excerpt)}")
    return sections


def _report_section(report: str | None) -> str | None:
    """The investigation report (issues 9/11), when one exists: the hook is `IssueContext.report`."""
    if not report or not report.strip():
        return None
    text = report.strip()
    if len(text) > REPORT_LIMIT:
        text = text[: REPORT_LIMIT - 1] + "…"
    return f"## Investigation (automatic)\n{text}"


def _footer_text(context: IssueContext) -> str:
    return (f"---\nApproved in Telegram by {prose(context.approved_by, 100)} at {_when(context.approved_at)}. "
            "This issue was filed by remediator, a bot, and needs review by a person; the bot comments when the "
            "incident is resolved in chat, but never closes or reopens the issue.")
