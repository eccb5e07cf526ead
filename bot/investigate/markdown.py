"""The full investigation report as Markdown: the chat's document and the GitHub issue's body.

No Telegram limit here, only a sane cap (MAX_BYTES): the report (Claude's or the key-free one),
then the findings it rests on — the crashing code, its history, the suspect commit, similar past
incidents, GlitchTip's context. Every string from outside is redacted; text from outside that
goes into a code block gets a fence longer than any run of backticks inside it, and one-line
text has its Markdown control characters neutralised, so an alert cannot restyle the report.

The report also becomes a GitHub issue's body, where text is live beyond Markdown: `@name`
notifies people, `#12` and `owner/repo#12` link (and notify) issues, bare URLs become links.
Text from the alert or from Claude is made inert there too, and stays readable: a zero-width
joiner after `@` and `#`, URLs in code spans, and a line may not start a heading, list or rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bot.investigate.git import Commit
from bot.investigate.model import InvestigationReport
from bot.investigate.report import Findings, FrameFinding
from storage.investigations import PastIncident

Redact = Callable[[str], str]
MAX_BYTES = 200_000
_INLINE_SPECIAL = re.compile(r"([\\`*\[\]<>|&])")  # `_` stays: GitHub ignores it inside words
ZWJ = "\u200d"
# GitHub's own links: @mentions (and user@host, owner/repo@sha), #12 and owner/repo#12, GH-12.
_MENTION_OR_REF = re.compile(r"([@#])(?=\w)|\b(GH-)(?=\d)", re.IGNORECASE)
# What GitHub autolinks without any Markdown: http(s)://… and www.…
_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>`]*", re.IGNORECASE)
_URL_TAIL = ".,:;!?)'\""  # punctuation ending a sentence, not the URL
# A line starting with one of these would be a heading, a list item, a rule or a code fence.
_BLOCK_START = re.compile(r"^(?:[#=+~-]|\d+[.)])")


def inline(text: object, limit: int = 300) -> str:
    """One line of outside text, safe inside Markdown prose and a GitHub issue: no newlines, control
    characters escaped, no mention, issue reference or autolink, nothing a line could start a block with."""
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    pieces, at = [], 0
    for url in _URL.finditer(flat):
        link = url.group().rstrip(_URL_TAIL)
        pieces += [_inert(flat[at:url.start()]), code(link)]
        at = url.start() + len(link)
    pieces.append(_inert(flat[at:]))
    return _BLOCK_START.sub(_escape_block_start, "".join(pieces))


def _escape_block_start(match: re.Match[str]) -> str:
    start = match.group()
    return f"{start[:-1]}\\{start[-1]}"  # `\#`, `\-`; and `1\.` (a backslash before a digit would show)


def _inert(text: str) -> str:
    escaped = _INLINE_SPECIAL.sub(r"\\\1", text)
    return _MENTION_OR_REF.sub(lambda m: (m.group(1) or m.group(2)) + ZWJ, escaped)


def code(text: str, limit: int = 300) -> str:
    """One line of outside text as a code span: shown as it is, nothing in it rendered or linked."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    if not flat:
        return ""
    fence = "`" * (max((len(m) for m in re.findall(r"`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def fenced(text: str, lang: str = "") -> str:
    """A code block whose fence no backtick run inside can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


class _Md:
    def __init__(self, redact: Redact) -> None:
        self.redact = redact

    def __call__(self, value: object, limit: int = 300) -> str:
        return inline(self.redact(str(value)), limit)

    def code(self, value: object, limit: int = 300) -> str:
        return code(self.redact(str(value)), limit)

    def prose(self, value: str, limit: int) -> str:
        """Several lines of outside text: each line escaped like `inline`, the line breaks kept."""
        text = self.redact(value)[:limit]
        return "\n".join(inline(line, limit) for line in text.splitlines())

    def block(self, value: str, lang: str = "", limit: int = 20_000) -> str:
        text = self.redact(value)
        return fenced(text[:limit] + ("\n…" if len(text) > limit else ""), lang)

    def commit(self, c: Commit) -> str:
        return f"`{c.short}` {self(c.author, 80)}, {c.at:%Y-%m-%d} — {self(c.subject, 200)}"


def render_markdown(report: InvestigationReport, findings: Findings, redact: Redact) -> str:
    """The whole report as Markdown, redacted, at most MAX_BYTES (UTF-8)."""
    md = _Md(redact)
    incident = findings.incident
    parts = [
        f"# Investigation of #{incident.id}: {md(incident.title, 200)}",
        f"- **Analysis**: {md(report.source_label, 300)}\n- **Confidence**: {report.confidence}\n"
        f"- **Priority**: {incident.priority.value} · **category**: {incident.category.value} · "
        f"**seen** {incident.count}× since {incident.first_seen:%Y-%m-%d %H:%M} UTC",
        "## Root cause\n\n" + md.prose(report.root_cause, 4000),
    ]
    parts += _evidence(report, md)
    if report.suggested_fix:
        lang = "diff" if re.search(r"^(?:---|\+\+\+|@@) ", report.suggested_fix, re.M) else ""
        parts.append("## Suggested fix\n\n" + md.block(report.suggested_fix, lang))
    if report.tests_to_add:
        parts.append("## Tests to add\n\n" + "\n".join(f"- {md(t, 1000)}" for t in report.tests_to_add))
    if report.could_not_determine:
        parts.append("## Could not determine\n\n" + "\n".join(f"- {md(t, 1000)}" for t in report.could_not_determine))
    parts += _alert(findings, md)
    parts += _where(findings, md)
    parts += _suspect(findings, md)
    parts += _similar(findings, md)
    parts += _context(findings, md)
    return _capped("\n\n".join(parts) + "\n")


def _evidence(report: InvestigationReport, md: _Md) -> list[str]:
    if not report.evidence:
        return []
    lines = []
    for e in report.evidence:
        where = md.code(e.where, 300) if e.where else ""
        commit = f"commit {md.code(e.commit, 64)}" if e.commit else ""
        head = " · ".join(p for p in (where, commit) if p)
        lines.append(f"- {head + ': ' if head else ''}{md(e.why, 2000)}")
    return ["## Evidence\n\n" + "\n".join(lines)]


def _alert(f: Findings, md: _Md) -> list[str]:
    """The alert as it came (data, quoted): its message and stack."""
    text = f.incident.message or f.incident.title
    parts = ["## The alert (quoted as received, redacted)\n\n" + md.block(text, limit=8000)]
    if f.incident.stacktrace:
        parts.append("Stack:\n\n" + md.block(f.incident.stacktrace, limit=12_000))
    return ["\n\n".join(parts)]


def _where(f: Findings, md: _Md) -> list[str]:
    if not f.frames:
        return []
    blocks = ["## Where it crashed (innermost first)"]
    for frame in f.frames:
        blocks.append(_frame(frame, f, md))
    return ["\n\n".join(blocks)]


def _frame(frame: FrameFinding, f: Findings, md: _Md) -> str:
    fn = frame.mapped.frame.function
    lines = [f"### {md.code(frame.where, 300)}" + (f" in {md.code(fn, 120)}" if fn else "")]
    if frame.snippet:
        crash = frame.mapped.frame.line
        code = "\n".join(f"{'→' if n == crash else ' '}{n:>5}  {text}" for n, text in frame.snippet)
        lines.append(md.block(code))
    if frame.blame is not None:
        lines.append(f"Line last changed by {md.commit(frame.blame)}")
    if frame.history:
        lines.append("Recent commits of the file:\n\n" + "\n".join(f"- {md.commit(c)}" for c in frame.history))
    return "\n\n".join(lines)


def _suspect(f: Findings, md: _Md) -> list[str]:
    if f.suspect is None or f.suspect.blame is None:
        return []
    return [f"## Suspect commit\n\n{md.commit(f.suspect.blame)}\n\nIt last changed the crashing line "
            f"{md.code(f.suspect.where, 300)} within the last {f.suspect_days:g} days."]


def _ended(p: PastIncident, md: _Md) -> str:
    if p.status == "resolved":
        when = f" on {p.resolved_at:%Y-%m-%d}" if p.resolved_at else ""
        how = f"resolved by {md(p.resolved_by or 'someone', 80)}{when}"
    else:
        how = "still open"
    if p.proposal_summary and p.proposal_state in ("succeeded", "failed"):
        how += f"; ran {md(p.proposal_summary, 120)} ({p.proposal_state})"
    if p.github_url:
        how += f"; GitHub [#{p.github_number}]({p.github_url.replace(')', '%29')})"
    elif p.github_number is not None:
        how += f"; GitHub #{p.github_number}"
    return how


def _similar(f: Findings, md: _Md) -> list[str]:
    if not f.similar:
        return ["## Similar incidents\n\nNone found in this bot's history."]
    lines = [f"- #{p.id} {md(p.title, 200)} — {_ended(p, md)}" for p in f.similar]
    return ["## Similar incidents (resolved first)\n\n" + "\n".join(lines)]


def _context(f: Findings, md: _Md) -> list[str]:
    details, incident = f.enrichment, f.incident
    lines: list[str] = []
    if details is not None and details.request:
        lines.append(f"- request: {md(details.request, 500)}")
    release = (details.release if details else None) or incident.release
    if release:
        lines.append(f"- release: {md(release, 120)}")
    if details is not None:
        lines += [f"- {md(k, 40)}: {md(v, 200)}" for k, v in details.runtime]
    lines += [f"- {md(k, 60)}: {md(v, 200)}" for k, v in list(incident.tags.items())[:20]]
    return ["## Context\n\n" + "\n".join(lines)] if lines else []


def _capped(text: str) -> str:
    data = text.encode("utf-8")
    if len(data) <= MAX_BYTES:
        return text
    note = "\n\n… (report cut at 200 KB)\n"
    return data[: MAX_BYTES - len(note.encode())].decode("utf-8", "ignore") + note
