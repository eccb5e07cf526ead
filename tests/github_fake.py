"""A fake GitHub REST API on 127.0.0.1: issues, labels, assignees, comments and search.

It speaks GitHub's wire format as documented (docs.github.com/rest): the JSON shapes of issues,
labels, comments and search results, and GitHub's error bodies — `{"message", "errors",
"documentation_url", "status"}` — for 401 "Bad credentials", 403 "Resource not accessible by
personal access token", 404 "Not Found" and 422 "Validation Failed". Like GitHub, it checks the
token's permission before it validates a body (which `remediator github check` relies on).

It can be scripted: a create stored at once but answered late, a status for the next N calls (5xx, a 403/429 secondary rate limit with
`Retry-After`, a spent primary limit with `X-RateLimit-Reset`), a search index that lags behind
new issues, a hook run right after a create was answered (the crash tests kill the bot there),
and a real outage (the port stops listening).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.loopback import LoopbackServer

# Shaped like a fine-grained token, so the redactor's GitHub rule applies to it like to a real one.
TOKEN = "github_pat_11AAAAAAA0fakeFAKEfake0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"
REPO = "acme/api"
BOT_LOGIN = "remediator-bot"
DOCS = "https://docs.github.com/rest"
SECONDARY_LIMIT = ("You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
                   "If you reach out to GitHub Support for help, please include the request ID 0000:1111:2222.")
NO_PERMISSION = "Resource not accessible by personal access token"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: Any
    at: float


@dataclass
class _Fault:
    status: int
    times: int
    method: str | None
    path: str | None  # a regex the path must match
    headers: dict[str, str]
    body: Any


@dataclass
class FakeRepo:
    full_name: str
    has_issues: bool = True
    issues: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    assignable: set[str] = field(default_factory=set)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, message: str, errors: list[dict[str, Any]] | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"message": message, "documentation_url": DOCS, "status": str(status)}
    if errors:
        body["errors"] = errors
    return web.json_response(body, status=status, headers=headers)


class FakeGitHub(LoopbackServer):
    def __init__(self, token: str = TOKEN, repo: str = REPO, *, assignable: tuple[str, ...] = ("alice",)) -> None:
        super().__init__()
        self.token = token
        self.repos: dict[str, FakeRepo] = {repo.lower(): FakeRepo(repo, assignable=set(assignable))}
        self.issues_write = True  # the token's "Issues: read and write" permission
        self.search_lag_s = 0.0  # new issues show up in search only this much later (GitHub's index lags)
        self.after_create: Callable[[dict[str, Any]], None] | None = None  # run once a create was answered
        self.create_delay_s = 0.0  # a create is stored at once but answered this late (the caller may time out)
        self.seen: list[Seen] = []
        self._faults: list[_Fault] = []
        self._next_id = 1000
        self._indexed_at: dict[int, float] = {}  # issue id -> when the search index has it

    # ---- scripting and reading

    def fail(self, status: int, *, times: int = 1, method: str | None = None, path: str | None = None,
             headers: dict[str, str] | None = None, body: Any = None) -> None:
        """The next `times` matching calls get `status` (GitHub's error body unless `body` is given)."""
        self._faults.append(_Fault(status, times, method, path, headers or {}, body))

    def secondary_rate_limit(self, retry_after_s: int, *, times: int = 1, status: int = 403,
                             method: str | None = None, path: str | None = None) -> None:
        self.fail(status, times=times, method=method, path=path, headers={"Retry-After": str(retry_after_s)},
                  body={"message": SECONDARY_LIMIT, "documentation_url": f"{DOCS}/overview/rate-limits"})

    def repo(self, name: str = REPO) -> FakeRepo:
        return self.repos[name.lower()]

    def issues(self, name: str = REPO) -> list[dict[str, Any]]:
        return self.repo(name).issues

    def calls(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and re.fullmatch(path, s.path)]

    def creates(self, name: str = REPO) -> list[Seen]:
        return self.calls("POST", f"/repos/{name}/issues")

    def add_issue(self, title: str, body: str, *, name: str = REPO, created_at: str | None = None,
                  pull_request: bool = False) -> dict[str, Any]:
        """An issue (or pull request) that is already in the repository."""
        return self._store_issue(self.repo(name), title, body, [], [], created_at=created_at,
                                 pull_request=pull_request)

    def close_issue(self, number: int, name: str = REPO) -> None:
        """A person closed it on GitHub."""
        issue = self._issue(self.repo(name), number)
        assert issue is not None
        issue.update(state="closed", closed_at=_now(), updated_at=_now())

    # ---- the server

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json() if request.can_read_body else None
        except ValueError:
            return _error(400, "Problems parsing JSON")
        self.seen.append(Seen(request.method, request.path, dict(request.query),
                              request.headers.get("Authorization"), body, time.monotonic()))
        if request.headers.get("Authorization") not in (f"Bearer {self.token}", f"token {self.token}"):
            return _error(401, "Bad credentials")
        fault = self._fault_for(request.method, request.path)
        if fault is not None:
            if fault.body is not None:
                return web.json_response(fault.body, status=fault.status, headers=fault.headers)
            if fault.status >= 500:
                return web.Response(status=fault.status, text="<html><body>Unicorn!</body></html>",
                                    content_type="text/html", headers=fault.headers)
            return _error(fault.status, {401: "Bad credentials", 403: NO_PERMISSION, 404: "Not Found",
                                         422: "Validation Failed"}.get(fault.status, "Error"), headers=fault.headers)
        return await self._route(request, body)

    def _fault_for(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.times <= 0:
                continue
            if (fault.method is None or fault.method == method) and (fault.path is None or re.fullmatch(fault.path, path)):
                fault.times -= 1
                return fault
        return None

    async def _route(self, request: web.Request, body: Any) -> web.StreamResponse:
        method, path = request.method, request.path
        if path == "/user" and method == "GET":
            return web.json_response({"login": BOT_LOGIN, "id": 1, "type": "User"})
        if path == "/search/issues" and method == "GET":
            return self._search(request.query.get("q", ""))
        match = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", path)
        if match is None:
            return _error(404, "Not Found")
        repo = self.repos.get(f"{match[1]}/{match[2]}".lower())
        if repo is None:
            return _error(404, "Not Found")
        rest = match[3] or ""
        if rest == "" and method == "GET":
            return web.json_response({"full_name": repo.full_name, "has_issues": repo.has_issues, "archived": False,
                                      "private": True, "permissions": {"admin": False, "push": True, "pull": True}})
        writes = method in ("POST", "PATCH", "PUT", "DELETE")
        if writes and not self.issues_write:
            return _error(403, NO_PERMISSION)
        if not repo.has_issues and rest.startswith("/issues"):
            return _error(410, "Issues are disabled for this repo")
        return await self._repo_route(request, repo, method, rest, body)

    async def _repo_route(self, request: web.Request, repo: FakeRepo, method: str, rest: str,
                          body: Any) -> web.StreamResponse:
        if rest == "/issues" and method == "POST":
            return await self._create_issue(request, repo, body)
        if rest == "/issues" and method == "GET":
            return self._list_issues(repo, request.query)
        if m := re.fullmatch(r"/issues/(\d+)", rest):
            issue = self._issue(repo, int(m[1]))
            if issue is None:
                return _error(404, "Not Found")
            if method == "PATCH":
                issue.update({k: v for k, v in (body or {}).items() if k in ("state", "title", "body")})
            return web.json_response(issue)
        if m := re.fullmatch(r"/issues/(\d+)/comments", rest):
            return self._comments(repo, int(m[1]), method, body, request.query)
        if rest == "/labels" and method == "POST":
            return self._create_label(repo, body)
        if m := re.fullmatch(r"/labels/([^/]+)", rest):
            label = repo.labels.get(m[1].lower())
            return web.json_response(label) if label else _error(404, "Not Found")
        if m := re.fullmatch(r"/assignees/([^/]+)", rest):
            return web.Response(status=204) if m[1].lower() in repo.assignable else _error(404, "Not Found")
        return _error(404, "Not Found")

    async def _create_issue(self, request: web.Request, repo: FakeRepo, body: Any) -> web.StreamResponse:
        if not isinstance(body, dict) or not body.get("title"):
            return _error(422, "Validation Failed", [{"resource": "Issue", "code": "missing_field", "field": "title"}])
        if len(body["title"]) > 256:
            return _error(422, "Validation Failed", [{"resource": "Issue", "code": "custom", "field": "title",
                                                      "message": "title is too long (maximum is 256 characters)"}])
        if len(body.get("body") or "") > 65536:
            return _error(422, "Validation Failed", [{"resource": "Issue", "code": "custom", "field": "body",
                                                      "message": "body is too long (maximum is 65536 characters)"}])
        bad = [a for a in body.get("assignees") or [] if a.lower() not in repo.assignable]
        if bad:
            return _error(422, "Validation Failed", [{"value": bad[0], "resource": "Issue", "field": "assignees",
                                                      "code": "invalid"}])
        for name in body.get("labels") or []:  # GitHub makes a label it does not know (with a grey colour)
            repo.labels.setdefault(name.lower(), {"name": name, "color": "ededed", "description": None})
        issue = self._store_issue(repo, body["title"], body.get("body") or "", body.get("labels") or [],
                                  body.get("assignees") or [])
        if self.create_delay_s:
            await asyncio.sleep(self.create_delay_s)
        if self.after_create is None:
            return web.json_response(issue, status=201)
        response = web.json_response(issue, status=201)
        await response.prepare(request)
        await response.write_eof()  # the answer has left: whatever happens to the bot now, the issue exists
        self.after_create(issue)
        return response

    def _store_issue(self, repo: FakeRepo, title: str, body: str, labels: list[str], assignees: list[str], *,
                     created_at: str | None = None, pull_request: bool = False) -> dict[str, Any]:
        number = len(repo.issues) + 1
        self._next_id += 1
        stamp = created_at or _now()
        issue: dict[str, Any] = {
            "id": self._next_id, "node_id": f"I_kw{self._next_id}", "number": number,
            "url": f"{self.base_url}/repos/{repo.full_name}/issues/{number}",
            "html_url": f"https://github.com/{repo.full_name}/issues/{number}",
            "title": title, "body": body, "state": "open", "state_reason": None, "locked": False,
            "user": {"login": BOT_LOGIN, "id": 1, "type": "User"},
            "labels": [{"id": i, "name": n, "color": repo.labels.get(n.lower(), {}).get("color", "ededed")}
                       for i, n in enumerate(labels)],
            "assignee": {"login": assignees[0]} if assignees else None,
            "assignees": [{"login": a} for a in assignees], "comments": 0,
            "created_at": stamp, "updated_at": stamp, "closed_at": None, "author_association": "MEMBER",
        }
        self._indexed_at[issue["id"]] = time.monotonic() + self.search_lag_s
        if pull_request:
            issue["pull_request"] = {"url": f"{self.base_url}/repos/{repo.full_name}/pulls/{number}"}
        repo.issues.append(issue)
        return issue

    @staticmethod
    def _issue(repo: FakeRepo, number: int) -> dict[str, Any] | None:
        return next((i for i in repo.issues if i["number"] == number), None)

    def _list_issues(self, repo: FakeRepo, query: Any) -> web.Response:
        state = query.get("state", "open")
        since = query.get("since")
        found = [i for i in repo.issues if state == "all" or i["state"] == state]
        if since:
            found = [i for i in found if i["updated_at"] >= since]
        found.sort(key=lambda i: (i["created_at"], i["number"]), reverse=query.get("direction", "desc") == "desc")
        per_page, page = int(query.get("per_page", 30)), int(query.get("page", 1))
        return web.json_response(found[(page - 1) * per_page: page * per_page])

    def _search(self, q: str) -> web.Response:
        repo_name = next((t[5:] for t in q.split() if t.startswith("repo:")), None)
        phrases = re.findall(r'"([^"]*)"', q)
        if repo_name is None or repo_name.lower() not in self.repos:
            return _error(422, "Validation Failed", [{"message": "The listed users and repositories cannot be "
                                                                 "searched either because the resources do not exist "
                                                                 "or you do not have permission to view them.",
                                                      "resource": "Search", "field": "q", "code": "invalid"}])
        now = time.monotonic()
        items = [i for i in self.repos[repo_name.lower()].issues
                 if self._indexed_at.get(i["id"], 0.0) <= now and "pull_request" not in i
                 and all(p.lower() in (i["body"] or "").lower() for p in phrases)]
        return web.json_response({"total_count": len(items), "incomplete_results": False, "items": items})

    def _comments(self, repo: FakeRepo, number: int, method: str, body: Any, query: Any) -> web.Response:
        issue = self._issue(repo, number)
        if issue is None:
            return _error(404, "Not Found")
        comments = repo.comments.setdefault(number, [])
        if method == "GET":
            return web.json_response(comments)
        if not isinstance(body, dict) or not body.get("body"):
            return _error(422, "Validation Failed", [{"resource": "IssueComment", "code": "missing_field",
                                                      "field": "body"}])
        self._next_id += 1
        comment = {"id": self._next_id, "body": body["body"], "user": {"login": BOT_LOGIN},
                   "html_url": f"{issue['html_url']}#issuecomment-{self._next_id}", "created_at": _now()}
        comments.append(comment)
        issue["comments"] = len(comments)
        issue["updated_at"] = _now()  # a comment never changes the issue's state (closed stays closed)
        return web.json_response(comment, status=201)

    def _create_label(self, repo: FakeRepo, body: Any) -> web.Response:
        if not isinstance(body, dict) or not body.get("name"):
            return _error(422, "Validation Failed", [{"resource": "Label", "code": "missing_field", "field": "name"}])
        if body["name"].lower() in repo.labels:
            return _error(422, "Validation Failed", [{"resource": "Label", "code": "already_exists", "field": "name"}])
        label = {"id": len(repo.labels) + 1, "name": body["name"], "color": body.get("color", "ededed"),
                 "description": body.get("description")}
        repo.labels[body["name"].lower()] = label
        return web.json_response(label, status=201)
