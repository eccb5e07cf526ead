"""What a card needs from GlitchTip's answers, redacted and cut, and the richer alert triage reads.

Everything here comes from outside: each string passes the redactor and is cut to what a person
reads on a card before it is stored. Frames arrive oldest first (the crashing frame is last, as
in a Python traceback); the card lists the crashing ones first.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.glitchtip.api import ApiEvent, ApiException, ApiFrame, ApiIssue, ApiMonitor
from bot.ingest import STACK_MAX, cut_end, cut_middle
from bot.models import Alert
from bot.redact import Redactor
from storage.timefmt import from_db, to_db

if TYPE_CHECKING:
    from storage.glitchtip import GlitchTipLink

TOP_FRAMES = 3
MAX_FRAMES_PER_EXCEPTION = 100  # in the stack text triage reads (the innermost are kept)
LEVELS = ("fatal", "error", "warning", "info", "debug")
# Library code, by path: used when GlitchTip marks no frame as in-app (older SDKs, its test data).
_LIBRARY_PATH = re.compile(
    r"(?:^|/)(?:node_modules|site-packages|dist-packages|\.venv|venv|vendor)/|^node:|^internal/|^<"
    r"|/lib/python\d|(?:^|/)python\d(?:\.\d+)?/|/usr/lib/|/usr/local/go/|^runtime/"
)
MONITOR_REASONS = {0: "unknown", 1: "timeout", 2: "wrong status code", 3: "expected response not found",
                   4: "SSL error", 5: "network error"}


@dataclass(frozen=True)
class Frame:
    file: str
    line: int | None
    function: str | None

    def label(self) -> str:
        """`file:line in function`, as a person scans a traceback."""
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where} in {self.function}" if self.function else where


@dataclass(frozen=True)
class IssueDetails:
    """One GlitchTip issue as the card shows it. Stored as JSON (`to_dict`) on the incident's link."""

    status: str | None = None
    count: int | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    level: str | None = None
    culprit: str | None = None
    short_id: str | None = None
    frames: tuple[Frame, ...] = ()  # the crashing frames, innermost first
    frames_in_app: bool = False  # GlitchTip marked them in-app (else: chosen by path)
    request: str | None = None  # "GET https://…" (redacted)
    release: str | None = None
    runtime: tuple[tuple[str, str], ...] = ()  # (runtime|browser|os, value)
    event_seen: bool = False  # the latest event was read (frames, request and tags come from it)

    def with_issue(self, issue: IssueDetails) -> IssueDetails:
        """These details with the issue's own fields (count, seen, status) taken from a newer read."""
        return dataclasses.replace(
            self, status=issue.status, count=issue.count, first_seen=issue.first_seen, last_seen=issue.last_seen,
            level=issue.level or self.level, culprit=issue.culprit or self.culprit, short_id=issue.short_id,
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["first_seen"] = to_db(self.first_seen)
        data["last_seen"] = to_db(self.last_seen)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IssueDetails:
        return cls(
            status=data.get("status"), count=data.get("count"), first_seen=from_db(data.get("first_seen")),
            last_seen=from_db(data.get("last_seen")), level=data.get("level"), culprit=data.get("culprit"),
            short_id=data.get("short_id"),
            frames=tuple(Frame(f["file"], f.get("line"), f.get("function")) for f in data.get("frames") or ()),
            frames_in_app=bool(data.get("frames_in_app")), request=data.get("request"),
            release=data.get("release"), runtime=tuple((k, v) for k, v in data.get("runtime") or ()),
            event_seen=bool(data.get("event_seen")),
        )


@dataclass(frozen=True)
class MonitorDetails:
    name: str
    url: str | None = None
    monitor_type: str | None = None
    is_up: bool | None = None
    down_since: datetime | None = None
    last_check_at: datetime | None = None
    last_reason: str | None = None
    response_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["down_since"] = to_db(self.down_since)
        data["last_check_at"] = to_db(self.last_check_at)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MonitorDetails:
        return cls(
            name=data.get("name") or "", url=data.get("url"), monitor_type=data.get("monitor_type"),
            is_up=data.get("is_up"), down_since=from_db(data.get("down_since")),
            last_check_at=from_db(data.get("last_check_at")), last_reason=data.get("last_reason"),
            response_ms=data.get("response_ms"),
        )


@dataclass
class _Clean:
    """Redact, then cut: a secret is masked before it could be cut in half."""

    redactor: Redactor

    def __call__(self, value: str | None, limit: int) -> str | None:
        if value is None:
            return None
        text = " ".join(value.split()) if limit <= 1000 else value
        return cut_end(self.redactor.redact(text), limit) if text else None


def issue_details(issue: ApiIssue, event: ApiEvent | None, redactor: Redactor) -> IssueDetails:
    """The card's view of an issue (and its latest event, when it was read)."""
    clean = _Clean(redactor)
    level = (issue.level or "").lower() or None
    details = IssueDetails(
        status=issue.status, count=issue.count, first_seen=issue.first_seen, last_seen=issue.last_seen,
        level=level if level in LEVELS else None,
        culprit=clean(issue.culprit or (event.culprit if event else None), 300),
        short_id=clean(issue.short_id, 60),
    )
    if event is None:
        return details
    frames, in_app = crashing_frames(event.exceptions())
    return dataclasses.replace(
        details,
        frames=tuple(Frame(clean(f.file, 200) or "?", f.line, clean(f.function, 120)) for f in frames),
        frames_in_app=in_app,
        request=clean(_request_line(event), 300),
        release=clean(_release(event), 120),
        runtime=tuple((k, v) for k, raw in _runtime_tags(event) if (v := clean(raw, 80))),
        event_seen=True,
    )


def crashing_frames(exceptions: list[ApiException]) -> tuple[list[Frame], bool]:
    """The top frames where it crashed, innermost first, and whether GlitchTip marked them in-app.

    The raised exception is the last value; its frames are oldest first, so the crashing frame is
    the last one. In-app frames when GlitchTip marks any; otherwise frames outside libraries;
    otherwise the innermost frames whatever they are.
    """
    raised = next((e for e in reversed(exceptions) if e.stacktrace and e.stacktrace.frames), None)
    if raised is None or raised.stacktrace is None:
        return [], False
    frames = list(reversed(raised.stacktrace.frames))  # innermost first
    in_app = [f for f in frames if f.in_app]
    if in_app:
        return [_frame(f) for f in in_app[:TOP_FRAMES]], True
    own = [f for f in frames if not _LIBRARY_PATH.search(_path(f))]
    return [_frame(f) for f in (own or frames)[:TOP_FRAMES]], False


def _path(frame: ApiFrame) -> str:
    return (frame.abs_path or frame.filename or frame.module or "").replace("\\", "/")


def _frame(frame: ApiFrame) -> Frame:
    return Frame(frame.filename or frame.abs_path or frame.module or "?", frame.line_no, frame.function)


def _request_line(event: ApiEvent) -> str | None:
    request = event.request()
    if request is None or not request.url:
        return None
    # The URL without its query string: queries carry tokens more often than anything else.
    url = request.url.split("?", 1)[0].split("#", 1)[0]
    return f"{request.method.upper()} {url}" if request.method else url


def _release(event: ApiEvent) -> str | None:
    if isinstance(event.release, str) and event.release:
        return event.release
    if isinstance(event.release, dict):
        version = event.release.get("shortVersion") or event.release.get("version")
        if isinstance(version, str) and version:
            return version
    return event.tag("release")


def _context(event: ApiEvent, name: str) -> str | None:
    ctx = (event.contexts or {}).get(name)
    if not isinstance(ctx, dict):
        return None
    parts = [str(ctx[k]) for k in ("name", "version") if isinstance(ctx.get(k), str | int | float)]
    return " ".join(parts) or None


def _runtime_tags(event: ApiEvent) -> list[tuple[str, str | None]]:
    """runtime, browser and os: what a person on call asks first ("which browser? which Python?")."""
    return [
        ("runtime", event.tag("runtime") or _context(event, "runtime")),
        ("browser", event.tag("browser") or _context(event, "browser")),
        ("os", event.tag("os") or event.tag("os.name") or _context(event, "os")),
    ]


def stack_text(event: ApiEvent, redactor: Redactor) -> str:
    """The latest event's stack as a Python-style traceback (oldest frame first), for triage and
    the owners map: a stack often decides the category, and its paths decide the owner."""
    lines: list[str] = []
    for exc in event.exceptions():
        frames = exc.stacktrace.frames if exc.stacktrace else []
        if frames:
            lines.append("Traceback (most recent call last):")
            for frame in frames[-MAX_FRAMES_PER_EXCEPTION:]:
                where = frame.abs_path or frame.filename or frame.module or "?"
                line = f', line {frame.line_no}' if frame.line_no is not None else ""
                lines.append(f'  File "{where[:400]}"{line}, in {(frame.function or "?")[:200]}')
                if frame.context_line and frame.context_line.strip():
                    lines.append(f"    {frame.context_line.strip()[:400]}")
        head = ": ".join(p for p in (exc.type, exc.value) if p)
        if head:
            lines.append(head[:2000])
    return cut_middle(redactor.redact("\n".join(lines)), STACK_MAX)


def enriched_alert(alert: Alert, details: IssueDetails, stack: str) -> Alert:
    """The alert as triage should read it: the webhook's, plus what only the API knows."""
    return dataclasses.replace(
        alert,
        message=alert.message or details.culprit or "",
        stacktrace=stack or alert.stacktrace,
        level=details.level or alert.level,
        release=alert.release or details.release,
    )


def monitor_details(monitor: ApiMonitor, redactor: Redactor) -> MonitorDetails:
    clean = _Clean(redactor)
    last = monitor.checks[0] if monitor.checks else None
    reason: str | None = None
    if last is not None and last.reason is not None and last.is_up is not True:
        reason = MONITOR_REASONS.get(last.reason, str(last.reason)) if isinstance(last.reason, int) else last.reason
    return MonitorDetails(
        name=clean(monitor.name, 200) or "?", url=clean(monitor.url, 300), monitor_type=clean(monitor.monitor_type, 20),
        is_up=monitor.is_up, down_since=monitor.last_change if monitor.is_up is False else None,
        last_check_at=last.start_check if last else None, last_reason=clean(reason, 100),
        response_ms=last.response_time if last else None,
    )


def stored_issue_details(link: GlitchTipLink | None) -> IssueDetails | None:
    """GlitchTip's stored details of an incident's issue: None without a link, for a monitor, or
    when what was stored cannot be read (a card, a report or an issue is made without them then)."""
    if link is None or link.kind != "issue" or not link.details:
        return None
    try:
        return IssueDetails.from_dict(link.details)
    except (KeyError, TypeError, ValueError):
        return None
