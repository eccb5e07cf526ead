"""A small client for GlitchTip's API (Sentry-compatible): issues, their latest event, monitors.

Why its own module: every call has the same needs — the Bearer token, a total deadline (httpx's
timeouts are per read, so a server that drips bytes could hold a call for ever), a cap on the
answer's size, and one error type whose `kind` says what to do next: a 401/403 is a token to
fix (report it, do not hammer), a 429/5xx/network error is an outage to wait out, a 404 is final.

Answers are parsed into pydantic models that ignore unknown keys, so a newer GlitchTip that adds
fields (or an older one that lacks some) still parses. See ../shared/glitchtip/README.md.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import httpx
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot import http_jobs
from bot.http_jobs import retry_after_s, send_capped, short

#: an answer larger than this is refused (a real latest event is 15–30 KB, with all its packages)
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: answers larger than this are parsed in a worker thread, off the event loop
PARSE_OFF_LOOP_BYTES = 64 * 1024
_ISSUE_ID = re.compile(r"[0-9]{1,20}")
_ORG_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


class FailureKind(StrEnum):
    UNAUTHORIZED = "unauthorized"  # 401: GlitchTip does not know the token (revoked, mistyped)
    FORBIDDEN = "forbidden"  # 403: the token lacks the scope this call needs
    NOT_FOUND = "not found"  # 404: no such issue/monitor, or not visible to the token's user
    RATE_LIMITED = http_jobs.RATE_LIMITED  # 429: wait as long as GlitchTip asks
    SERVER = http_jobs.SERVER  # 5xx
    NETWORK = http_jobs.NETWORK  # could not connect, connection dropped
    TIMEOUT = http_jobs.TIMEOUT  # no full answer within the deadline
    BAD_ANSWER = http_jobs.BAD_ANSWER  # not JSON, the wrong shape, too large, another 4xx

    @property
    def transient(self) -> bool:
        """Waiting may fix it (an outage, a limit), as opposed to a token or an answer to fix."""
        return self.value in http_jobs.TRANSIENT

    @property
    def auth(self) -> bool:
        return self in (FailureKind.UNAUTHORIZED, FailureKind.FORBIDDEN)


class GlitchTipError(Exception):
    """A call that did not give a usable answer; `kind` decides what happens next."""

    def __init__(self, kind: FailureKind, message: str, *, status: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return f"{self.status} {self.args[0]}" if self.status else str(self.args[0])


# --------------------------------------------------------------------------- typed answers


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _text(value: Any) -> Any:
    """Numbers and booleans where a string is expected are taken as their text."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class ApiProject(_Loose):
    id: str | None = None
    name: str | None = None
    slug: str | None = None
    platform: str | None = None

    _str = field_validator("id", mode="before")(_text)


class ApiIssue(_Loose):
    """`GET /api/0/issues/{id}/` (camelCase) or the `PUT` answer (some keys snake_case)."""

    id: str
    title: str = ""
    culprit: str | None = None
    short_id: str | None = Field(None, validation_alias=AliasChoices("shortId", "short_id"))
    level: str | None = None
    status: str | None = None
    count: int | None = None  # GlitchTip sends it as a string
    first_seen: datetime | None = Field(None, validation_alias=AliasChoices("firstSeen", "first_seen"))
    last_seen: datetime | None = Field(None, validation_alias=AliasChoices("lastSeen", "last_seen"))
    permalink: str | None = None
    project: ApiProject | None = None

    _str = field_validator("id", mode="before")(_text)

    @field_validator("count", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        if isinstance(value, str):
            return int(value) if value.strip().isdigit() else None
        return value


class ApiFrame(_Loose):
    filename: str | None = None
    abs_path: str | None = Field(None, validation_alias=AliasChoices("absPath", "abs_path"))
    function: str | None = None
    module: str | None = None
    line_no: int | None = Field(None, validation_alias=AliasChoices("lineNo", "lineno"))
    in_app: bool | None = Field(None, validation_alias=AliasChoices("inApp", "in_app"))
    context_line: str | None = None


class ApiStacktrace(_Loose):
    frames: list[ApiFrame] = Field(default_factory=list)


class ApiException(_Loose):
    type: str | None = None
    value: str | None = None
    module: str | None = None
    stacktrace: ApiStacktrace | None = None


class ApiRequest(_Loose):
    method: str | None = None
    url: str | None = None


class ApiTag(_Loose):
    key: str
    value: str | None = None

    _str = field_validator("value", mode="before")(_text)


class ApiEntry(_Loose):
    type: str
    data: Any = None


class ApiEvent(_Loose):
    """`GET /api/0/issues/{id}/events/latest/`: the newest event of an issue."""

    event_id: str | None = Field(None, validation_alias=AliasChoices("eventID", "id"))
    title: str | None = None
    culprit: str | None = None
    platform: str | None = None
    release: Any = None  # a string, an object with `version`, or null
    tags: list[ApiTag] = Field(default_factory=list)
    entries: list[ApiEntry] = Field(default_factory=list)
    contexts: dict[str, Any] | None = None

    def exceptions(self) -> list[ApiException]:
        """The exception values, in GlitchTip's order (the last one is the one that was raised)."""
        found: list[ApiException] = []
        for entry in self.entries:
            if entry.type == "exception" and isinstance(entry.data, dict):
                for value in entry.data.get("values") or []:
                    if isinstance(value, dict):
                        found.append(ApiException.model_validate(value))
        return found

    def request(self) -> ApiRequest | None:
        for entry in self.entries:
            if entry.type == "request" and isinstance(entry.data, dict):
                return ApiRequest.model_validate(entry.data)
        return None

    def tag(self, key: str) -> str | None:
        return next((t.value for t in self.tags if t.key == key and t.value), None)


class ApiCheck(_Loose):
    is_up: bool | None = Field(None, validation_alias=AliasChoices("isUp", "is_up"))
    start_check: datetime | None = Field(None, validation_alias=AliasChoices("startCheck", "start_check"))
    reason: int | str | None = None
    response_time: int | None = Field(None, validation_alias=AliasChoices("responseTime", "response_time"))


class ApiMonitor(_Loose):
    """`GET /api/0/organizations/{org}/monitors/{id}/`; `checks` are newest first."""

    id: str | None = None
    name: str = ""
    url: str | None = None
    monitor_type: str | None = Field(None, validation_alias=AliasChoices("monitorType", "monitor_type"))
    is_up: bool | None = Field(None, validation_alias=AliasChoices("isUp", "is_up"))
    last_change: datetime | None = Field(None, validation_alias=AliasChoices("lastChange", "last_change"))
    project_name: str | None = Field(None, validation_alias=AliasChoices("projectName", "project_name"))
    checks: list[ApiCheck] = Field(default_factory=list)

    _str = field_validator("id", mode="before")(_text)


class ApiToken(_Loose):
    label: str | None = None
    scopes: list[str] = Field(default_factory=list)


class ApiRoot(_Loose):
    """`GET /api/0/`: answered without auth; `auth` describes the token when GlitchTip knows it."""

    version: str | None = None
    auth: ApiToken | None = None


Model = TypeVar("Model", bound=BaseModel)


# --------------------------------------------------------------------------- the client


class GlitchTipClient:
    def __init__(
        self, base_url: str, token: str, *, timeout_s: float = 10.0, max_answer_bytes: int = MAX_ANSWER_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_answer_bytes = max_answer_bytes
        # httpx drops the Authorization header on a redirect to another host.
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s), follow_redirects=True, transport=transport,
            verify=http_jobs.tls_context(),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                     "User-Agent": "remediator (GlitchTip API client)"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- the calls the bot makes

    async def issue(self, issue_id: str) -> ApiIssue:
        return await self._call(ApiIssue, "GET", f"/api/0/issues/{_issue_id(issue_id)}/")

    async def latest_event(self, issue_id: str) -> ApiEvent:
        return await self._call(ApiEvent, "GET", f"/api/0/issues/{_issue_id(issue_id)}/events/latest/")

    async def resolve(self, issue_id: str) -> ApiIssue:
        """Mark the issue resolved in GlitchTip (needs the `event:write` scope)."""
        return await self._call(ApiIssue, "PUT", f"/api/0/issues/{_issue_id(issue_id)}/", {"status": "resolved"})

    async def monitor(self, org_slug: str, monitor_id: str) -> ApiMonitor:
        if not _ORG_SLUG.fullmatch(org_slug):
            raise GlitchTipError(FailureKind.BAD_ANSWER, f"not an organisation slug: {org_slug[:40]!r}")
        return await self._call(
            ApiMonitor, "GET", f"/api/0/organizations/{org_slug}/monitors/{_issue_id(monitor_id)}/"
        )

    async def root(self) -> ApiRoot:
        return await self._call(ApiRoot, "GET", "/api/0/")

    async def status_of(self, method: str, path: str, body: dict[str, Any] | None = None) -> int:
        """The HTTP status a call gets, whatever it is (for `remediator glitchtip check`'s probes).
        Raises GlitchTipError only when there is no answer at all."""
        status, _, _ = await self._send(method, path, body)
        return status

    # ---- plumbing

    async def _call(self, model: type[Model], method: str, path: str, body: dict[str, Any] | None = None) -> Model:
        status, raw, retry_after = await self._send(method, path, body)
        _raise_for_status(status, raw, retry_after)
        try:
            if len(raw) > PARSE_OFF_LOOP_BYTES:
                return await asyncio.to_thread(_parse, model, raw)
            return _parse(model, raw)
        except (ValueError, RecursionError, ValidationError) as exc:
            raise GlitchTipError(FailureKind.BAD_ANSWER, f"unexpected answer to {method} {path}: {short(exc)}") from None

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, bytes, float | None]:
        """(status, body, Retry-After in seconds) of one call, within the total deadline."""
        status, raw, headers = await send_capped(self._http, method, path, timeout_s=self.timeout_s,
                                                 max_bytes=self.max_answer_bytes, fail=_failure, body=body)
        return status, raw, retry_after_s(headers.get("Retry-After"))


def _failure(kind: str, message: str) -> GlitchTipError:
    return GlitchTipError(FailureKind(kind), message)


def _issue_id(value: str) -> str:
    """Ids only ever come from a link's digits; anything else never reaches a URL path."""
    if not _ISSUE_ID.fullmatch(value):
        raise GlitchTipError(FailureKind.BAD_ANSWER, f"not a GlitchTip id: {value[:40]!r}")
    return value


def _parse(model: type[Model], raw: bytes) -> Model:
    return model.model_validate(json.loads(raw))


_DETAIL = re.compile(rb'"detail"\s*:\s*"([^"\\]{1,200})"')


def _raise_for_status(status: int, raw: bytes, retry_after_s: float | None = None) -> None:
    if 200 <= status < 300:
        return
    said = _DETAIL.search(raw[:2000])
    detail = said.group(1).decode("utf-8", "replace") if said else ""
    kind = {401: FailureKind.UNAUTHORIZED, 403: FailureKind.FORBIDDEN, 404: FailureKind.NOT_FOUND,
            429: FailureKind.RATE_LIMITED}.get(status)
    if kind is None:
        kind = FailureKind.SERVER if status >= 500 else FailureKind.BAD_ANSWER
    raise GlitchTipError(kind, detail or kind.value, status=status,
                         retry_after_s=retry_after_s if kind is FailureKind.RATE_LIMITED else None)
