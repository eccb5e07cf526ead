"""A small client for GitHub's REST API: the few calls that file an issue and comment on it.

Why its own module: every call needs the same things — the token in a header (never in a URL,
so it cannot reach a log line), a total deadline (httpx's timeouts are per read), a cap on the
answer's size, and one error type whose `kind` says what to do next. GitHub answers a rate
limit with 429 *or* 403 (a secondary limit says so in its message or with `Retry-After`; a
spent primary limit has `X-RateLimit-Remaining: 0`), so a 403 is only "forbidden" when it is
not a limit. A 4xx carries GitHub's own message ("Resource not accessible by personal access
token"), which is what a person needs to read to fix the token or the repository.

Answers are parsed into pydantic models that ignore unknown keys.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot import http_jobs
from bot.http_jobs import retry_after_s, send_capped, short

#: larger answers are refused (a page of 100 issues with long bodies is a few MB at most)
MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: a rate limit that names no time to wait: GitHub's docs say wait at least a minute
DEFAULT_LIMIT_WAIT_S = 60.0
API_VERSION = "2022-11-28"
_REPO = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")
_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")


class FailureKind(StrEnum):
    UNAUTHORIZED = "unauthorized"  # 401: GitHub does not know the token (revoked, expired, mistyped)
    FORBIDDEN = "forbidden"  # 403 that is not a rate limit: the token lacks a permission
    NOT_FOUND = "not found"  # 404: no such repository or issue, or the token cannot see it
    INVALID = "invalid"  # 422: GitHub refused what was sent (a bad assignee, a label name)
    REFUSED = "refused"  # any other 4xx (410: issues are disabled in the repository, …)
    RATE_LIMITED = http_jobs.RATE_LIMITED  # 429, or a 403 that is a primary or secondary rate limit
    SERVER = http_jobs.SERVER  # 5xx
    NETWORK = http_jobs.NETWORK  # could not connect, connection dropped
    TIMEOUT = http_jobs.TIMEOUT  # no full answer within the deadline
    BAD_ANSWER = http_jobs.BAD_ANSWER  # 2xx that is not the JSON we expect, or too large

    @property
    def transient(self) -> bool:
        """Waiting may fix it (an outage, a limit), as opposed to something a person must fix."""
        return self.value in http_jobs.TRANSIENT


class GitHubError(Exception):
    """A call that did not give a usable answer; `kind` decides what happens next."""

    def __init__(self, kind: FailureKind, message: str, *, status: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after_s = retry_after_s  # rate limits: how long GitHub asked us to wait

    @property
    def message(self) -> str:
        return str(self.args[0])

    def __str__(self) -> str:
        return f"{self.message} ({self.status})" if self.status else self.message


# --------------------------------------------------------------------------- typed answers


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ApiUser(_Loose):
    login: str


class ApiLabel(_Loose):
    name: str


class ApiIssue(_Loose):
    number: int
    html_url: str
    state: str = "open"
    title: str = ""
    body: str | None = None
    created_at: datetime | None = None
    labels: list[ApiLabel] = Field(default_factory=list)
    assignees: list[ApiUser] = Field(default_factory=list)
    pull_request: dict[str, Any] | None = None  # set on pull requests (the issues list includes them)


class ApiSearch(_Loose):
    total_count: int = 0
    incomplete_results: bool = False
    items: list[ApiIssue] = Field(default_factory=list)


class ApiComment(_Loose):
    id: int
    html_url: str = ""
    body: str | None = None


class ApiRepository(_Loose):
    full_name: str
    has_issues: bool = True
    archived: bool = False


Model = TypeVar("Model", bound=BaseModel)


# --------------------------------------------------------------------------- the client


def valid_repo(value: str) -> bool:
    """`owner/name` as GitHub allows them (checked in the settings too: it goes into URL paths)."""
    return _REPO.fullmatch(value) is not None and value.split("/", 1)[1] not in (".", "..")


class GitHubClient:
    def __init__(
        self, api_url: str, token: str, *, timeout_s: float = 10.0, max_answer_bytes: int = MAX_ANSWER_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_answer_bytes = max_answer_bytes
        # No redirects: GitHub answers a renamed repository with a 301 to /repositories/<id>, and
        # a POST must not be silently replayed as a GET.
        self._http = httpx.AsyncClient(
            base_url=self.api_url, timeout=httpx.Timeout(timeout_s), follow_redirects=False, transport=transport,
            verify=http_jobs.tls_context(),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                     "X-GitHub-Api-Version": API_VERSION, "User-Agent": "remediator"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- issues

    async def create_issue(self, repo: str, title: str, body: str, *, labels: list[str],
                           assignees: list[str]) -> ApiIssue:
        payload: dict[str, Any] = {"title": title, "body": body}
        if labels:
            payload["labels"] = labels
        if assignees:
            payload["assignees"] = assignees
        return await self._call(ApiIssue, "POST", f"{_repo_path(repo)}/issues", body=payload)

    async def issue(self, repo: str, number: int) -> ApiIssue:
        return await self._call(ApiIssue, "GET", f"{_repo_path(repo)}/issues/{int(number)}")

    async def search_issues(self, query: str, per_page: int = 20) -> ApiSearch:
        return await self._call(ApiSearch, "GET", "/search/issues", params={"q": query, "per_page": per_page})

    async def recent_issues(self, repo: str, since: datetime, page: int = 1, per_page: int = 100) -> list[ApiIssue]:
        """Issues (and pull requests) updated since `since`, newest first: the search's fallback,
        as the search index lags behind by seconds to minutes."""
        params = {"state": "all", "since": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "sort": "created", "direction": "desc", "per_page": per_page, "page": page}
        return await self._call_list(ApiIssue, "GET", f"{_repo_path(repo)}/issues", params=params)

    async def comment(self, repo: str, number: int, body: str) -> ApiComment:
        return await self._call(ApiComment, "POST", f"{_repo_path(repo)}/issues/{int(number)}/comments",
                                body={"body": body})

    async def comments(self, repo: str, number: int, since: datetime | None = None) -> list[ApiComment]:
        params: dict[str, Any] = {"per_page": 100}
        if since is not None:
            params["since"] = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return await self._call_list(ApiComment, "GET", f"{_repo_path(repo)}/issues/{int(number)}/comments",
                                     params=params)

    # ---- labels and assignees

    async def has_label(self, repo: str, name: str) -> bool:
        status, raw, headers = await self._send("GET", f"{_repo_path(repo)}/labels/{quote(name, safe='')}")
        if status == 404:
            return False
        _raise_for_status(status, raw, headers)
        return True

    async def create_label(self, repo: str, name: str, color: str, description: str) -> bool:
        """Create a label; False when it exists already (422 already_exists: another writer won)."""
        status, raw, headers = await self._send(
            "POST", f"{_repo_path(repo)}/labels", {"name": name, "color": color, "description": description}
        )
        if status == 422 and b"already_exists" in raw:
            return False
        _raise_for_status(status, raw, headers)
        return True

    async def can_be_assigned(self, repo: str, login: str) -> bool:
        """GitHub answers 204 when `login` may be assigned issues in the repository, 404 when not."""
        if not _LOGIN.fullmatch(login):
            return False
        status, raw, headers = await self._send("GET", f"{_repo_path(repo)}/assignees/{login}")
        if status == 404:
            return False
        _raise_for_status(status, raw, headers)
        return True

    # ---- for `remediator github check`

    async def user(self) -> ApiUser:
        return await self._call(ApiUser, "GET", "/user")

    async def repository(self, repo: str) -> ApiRepository:
        return await self._call(ApiRepository, "GET", _repo_path(repo))

    async def status_of(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
        """The status and GitHub's message for a call, whatever it is (the check's probes).
        Raises GitHubError only when there is no answer at all."""
        status, raw, _ = await self._send(method, path, body)
        return status, _github_message(raw)

    # ---- plumbing

    async def _call(self, model: type[Model], method: str, path: str, *, body: dict[str, Any] | None = None,
                    params: dict[str, Any] | None = None) -> Model:
        status, raw, headers = await self._send(method, path, body, params)
        _raise_for_status(status, raw, headers)
        try:
            return model.model_validate(json.loads(raw))
        except (ValueError, RecursionError, ValidationError) as exc:
            raise GitHubError(FailureKind.BAD_ANSWER, f"unexpected answer to {method} {path}: {short(exc)}") from None

    async def _call_list(self, model: type[Model], method: str, path: str, *,
                         params: dict[str, Any] | None = None) -> list[Model]:
        status, raw, headers = await self._send(method, path, None, params)
        _raise_for_status(status, raw, headers)
        try:
            items = json.loads(raw)
            if not isinstance(items, list):
                raise ValueError("not a list")
            return [model.model_validate(item) for item in items]
        except (ValueError, RecursionError, ValidationError) as exc:
            raise GitHubError(FailureKind.BAD_ANSWER, f"unexpected answer to {method} {path}: {short(exc)}") from None

    async def _send(self, method: str, path: str, body: dict[str, Any] | None = None,
                    params: dict[str, Any] | None = None) -> tuple[int, bytes, httpx.Headers]:
        return await send_capped(self._http, method, path, timeout_s=self.timeout_s,
                                 max_bytes=self.max_answer_bytes, fail=_failure, body=body, params=params)


def _failure(kind: str, message: str) -> GitHubError:
    return GitHubError(FailureKind(kind), message)


def _repo_path(repo: str) -> str:
    """`/repos/owner/name`; anything that is not a repository name never reaches a URL path."""
    if not valid_repo(repo):
        raise GitHubError(FailureKind.INVALID, f"not a GitHub repository name (owner/name): {repo[:80]!r}")
    return f"/repos/{repo}"


def _github_message(raw: bytes) -> str:
    """GitHub's own words from an error answer: `message`, and what its `errors` list names."""
    try:
        data = json.loads(raw[:20000])
    except (ValueError, RecursionError):
        return ""
    if not isinstance(data, dict):
        return ""
    message = str(data.get("message") or "").strip()
    details = []
    for error in data.get("errors") or []:
        if isinstance(error, dict):
            text = error.get("message") or " ".join(
                str(error[k]) for k in ("resource", "field", "code") if error.get(k)
            )
            if text:
                details.append(str(text))
        elif isinstance(error, str):
            details.append(error)
    if details:
        message = f"{message}: {'; '.join(details)}" if message else "; ".join(details)
    return " ".join(message.split())[:400]


def limit_wait_s(headers: httpx.Headers, now: float | None = None) -> float | None:
    """How long a rate limit asks us to wait: `Retry-After` (seconds or an HTTP date), else until
    `X-RateLimit-Reset` when the limit is spent; None when the answer names no time."""
    wait = retry_after_s(headers.get("retry-after"))
    if wait is not None:
        return wait
    reset = (headers.get("x-ratelimit-reset") or "").strip()
    if headers.get("x-ratelimit-remaining") == "0" and reset.isdigit():
        return max(1.0, float(reset) - (time.time() if now is None else now) + 1.0)
    return None


def _is_rate_limit(status: int, raw: bytes, headers: httpx.Headers) -> bool:
    if status == 429:
        return True
    if status != 403:
        return False
    return ("retry-after" in headers or headers.get("x-ratelimit-remaining") == "0"
            or b"rate limit" in raw[:2000].lower())


def _raise_for_status(status: int, raw: bytes, headers: httpx.Headers) -> None:
    if 200 <= status < 300:
        return
    said = _github_message(raw)
    if _is_rate_limit(status, raw, headers):
        wait = limit_wait_s(headers)
        raise GitHubError(FailureKind.RATE_LIMITED, said or "rate limited", status=status,
                          retry_after_s=DEFAULT_LIMIT_WAIT_S if wait is None else wait)
    kind = {401: FailureKind.UNAUTHORIZED, 403: FailureKind.FORBIDDEN, 404: FailureKind.NOT_FOUND,
            422: FailureKind.INVALID}.get(status)
    if kind is None:
        kind = FailureKind.SERVER if status >= 500 else FailureKind.REFUSED
    if status >= 500:  # some outages answer an HTML page: say the status, not its markup
        said = said or "GitHub answered with a server error"
    raise GitHubError(kind, said or kind.value, status=status,
                      retry_after_s=limit_wait_s(headers) if status >= 500 else None)
