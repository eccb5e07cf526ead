"""Domain models shared by the pipeline, triage, patterns and cards.

Plain dataclasses: the domain never imports aiogram or touches SQL.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Category(StrEnum):
    INFRASTRUCTURE = "infrastructure"
    TRANSIENT = "transient"
    RESOURCE = "resource"
    DEPENDENCY = "dependency"
    CONFIGURATION = "configuration"
    DATABASE = "database"
    SECURITY = "security"
    CODE = "code"
    UNKNOWN = "unknown"


class Priority(StrEnum):
    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"

    @property
    def rank(self) -> int:
        return int(self.value[1])

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        return cls(f"P{min(3, max(0, rank))}")


class AlertKind(StrEnum):
    ERROR = "error"
    UPTIME_DOWN = "uptime_down"
    UPTIME_UP = "uptime_up"
    TEST = "test"


@dataclass(frozen=True)
class Alert:
    """One error report, whatever its source, already parsed (not yet redacted)."""

    source: str  # "glitchtip" | "generic"
    kind: AlertKind
    title: str
    fingerprint: str
    message: str = ""  # culprit / message line
    level: str | None = None  # fatal | error | warning | info | debug
    project: str | None = None
    environment: str | None = None
    release: str | None = None
    server: str | None = None
    url: str | None = None  # link to the issue in the error tracker
    stacktrace: str = ""
    count: int = 1
    external_id: str | None = None  # the tracker's issue / monitor id
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """Everything a rule may look at, as one string."""
        return "\n".join(p for p in (self.title, self.message, self.stacktrace) if p)


@dataclass(frozen=True)
class Actor:
    """Who did something: a Telegram user (id, display name), or the bot itself (negative id)."""

    id: int
    name: str


@dataclass(frozen=True)
class Owner:
    name: str
    telegram: str | None = None  # "@handle"
    github: str | None = None  # GitHub login


@dataclass(frozen=True)
class Triage:
    priority: Priority
    category: Category
    likely_cause: str
    tags: tuple[str, ...] = ()
    owner: Owner | None = None
    affected_users: str | None = None
    rule_id: str | None = None  # which rule matched, None when none did
    source: str = "rules"  # "rules" | "claude"
    note: str | None = None  # e.g. "Claude unavailable, rules used"
    # Set when a priority override (bot/overrides.py) replaced `priority`: what triage itself said
    # (stored as the incident's original priority, so the metrics still judge the rules), the
    # override's id and the human corrections it rests on (the card says "P0 by override from 4 corrections").
    priority_before_override: Priority | None = None
    override_id: int | None = None
    override_corrections: int | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def triage_to_dict(triage: Triage) -> dict[str, Any]:
    data = asdict(triage)
    data["priority"] = triage.priority.value
    data["category"] = triage.category.value
    data["tags"] = list(triage.tags)
    if triage.priority_before_override is None:  # no override: the dict stays as it always was
        for key in ("priority_before_override", "override_id", "override_corrections"):
            del data[key]
    else:
        data["priority_before_override"] = triage.priority_before_override.value
    return data


def triage_from_dict(data: dict[str, Any]) -> Triage:
    owner = data.get("owner")
    return Triage(
        priority=Priority(data["priority"]),
        category=Category(data["category"]),
        likely_cause=data.get("likely_cause", ""),
        tags=tuple(data.get("tags", ())),
        owner=Owner(**owner) if owner else None,
        affected_users=data.get("affected_users"),
        rule_id=data.get("rule_id"),
        source=data.get("source", "rules"),
        note=data.get("note"),
        priority_before_override=Priority(data["priority_before_override"])
        if data.get("priority_before_override") else None,
        override_id=data.get("override_id"),
        override_corrections=data.get("override_corrections"),
    )


@dataclass
class Incident:
    """An open or resolved problem: the first alert's details, how often it repeated, its triage."""

    id: int
    fingerprint: str
    status: str  # open | resolved
    source: str
    kind: AlertKind
    title: str
    message: str
    level: str | None
    project: str | None
    environment: str | None
    release: str | None
    server: str | None
    url: str | None
    stacktrace: str
    external_id: str | None
    tags: dict[str, str]
    count: int
    first_seen: datetime
    last_seen: datetime
    priority: Priority
    priority_original: Priority
    category: Category
    triage: Triage
    regression_of: int | None = None
    chat_id: int | None = None
    card_message_id: int | None = None
    muted_until: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    #: its card was held back in a storm: 1 waiting for the summary, 2 named in one (see bot/storm.py)
    card_deferred: int = 0
    #: a new card waiting for Claude's first answer (bot/triage/claude.py): not sent before it, or the wait, ends
    claude_pending: bool = False

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def muted(self, now: datetime) -> bool:
        return self.muted_until is not None and self.muted_until > now

    def as_alert(self) -> Alert:
        return Alert(
            source=self.source, kind=self.kind, title=self.title, fingerprint=self.fingerprint,
            message=self.message, level=self.level, project=self.project, environment=self.environment,
            release=self.release, server=self.server, url=self.url, stacktrace=self.stacktrace,
            count=self.count, external_id=self.external_id, tags=dict(self.tags),
        )


class ProposalState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"

    @property
    def final(self) -> bool:
        return self not in (ProposalState.PENDING, ProposalState.APPROVED, ProposalState.RUNNING)


@dataclass
class Proposal:
    """The one next step a card suggests; it runs only after enough approvals."""

    id: int
    incident_id: int
    kind: str  # acknowledge | pattern
    summary: str
    state: ProposalState
    approvals_required: int
    created_at: datetime
    expires_at: datetime
    pattern_id: str | None = None
    action: dict[str, Any] | None = None  # what the executor needs: rendered argv, verify, timeouts
    requires_approval: bool = True
    approvals: list[tuple[int, str]] = field(default_factory=list)  # (user id, name)
    decided_by: str | None = None
    decided_at: datetime | None = None
    result: str | None = None
