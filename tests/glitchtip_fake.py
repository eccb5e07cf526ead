"""A fake GlitchTip API on 127.0.0.1, answering from real captured answers.

Issues, events and the PUT answer are the ones a real GlitchTip gave (tests/data/glitchtip_api/api_*,
copied from ../shared/glitchtip/real/) or GlitchTip's own test events (event_*). The monitor
answer is built from GlitchTip's MonitorDetailSchema (apps/uptime/schema.py: camelCase, checks
newest first, `reason` an integer), as no real capture exists.

It checks the Bearer token and the token's scopes the way GlitchTip does (`has_permission` runs
before the lookup: a missing scope is 403 even for an issue that does not exist), and it can be
scripted: a status for the next N calls (401, 404, 429 with Retry-After, 5xx), slow answers,
and a real outage (the port stops listening).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.loopback import LoopbackServer

DATA = Path(__file__).parent / "data" / "glitchtip_api"  # API answers; webhook bodies are in data/glitchtip
TOKEN = "4f1c6a0c2b5e4d7f9a8b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
READ = ("event:read", "event:write", "event:admin")
WRITE = ("event:write", "event:admin")


def sample(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str | None
    body: Any
    at: float  # time.monotonic() when it arrived


@dataclass
class _Fault:
    status: int | None  # None: answer normally (after `delay_s`)
    times: int
    path: str | None
    retry_after: str | None
    delay_s: float


class FakeGlitchTip(LoopbackServer):
    def __init__(self, token: str = TOKEN, scopes: tuple[str, ...] = ("event:read", "event:write")) -> None:
        super().__init__()
        self.token = token
        self.scopes = scopes
        self.issues: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.monitors: dict[tuple[str, str], dict[str, Any]] = {}
        self.seen: list[Seen] = []
        self.delay_s = 0.0  # every answer this late
        self._faults: list[_Fault] = []
        self.changed = asyncio.Event()

    # ---- content

    def add_issue(self, issue_id: str = "1", event: str | None = "api_issue_latest_event.json",
                  **fields: Any) -> dict[str, Any]:
        issue = sample("api_issue.json")
        issue.update(id=issue_id, **fields)
        self.issues[issue_id] = issue
        if event is not None:
            self.events[issue_id] = sample(event)
        return issue

    def add_events(self, issue_id: str, n: int, *, reopen: bool = False) -> None:
        """`n` more events of the issue arrive (GlitchTip sends no webhook for them)."""
        issue = self.issues[issue_id]
        issue["count"] = str(int(issue["count"]) + n)
        issue["lastSeen"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if reopen:
            issue["status"] = "unresolved"

    def add_monitor(self, org: str, monitor_id: str, **fields: Any) -> dict[str, Any]:
        monitor = {
            "id": monitor_id, "monitorType": "get", "endpointId": None, "created": "2026-11-01T10:00:00Z",
            "name": "Booking API health", "url": "https://booking.example.com/health", "expectedStatus": 200,
            "expectedBody": "", "interval": 60, "timeout": 20, "projectId": "1", "environmentId": None,
            "isUp": False, "lastChange": "2026-11-25T19:00:00Z", "heartbeatEndpoint": None,
            "projectName": "booking", "envName": None, "organizationId": 1,
            "checks": [
                {"isUp": False, "startCheck": "2026-11-25T19:01:00Z", "reason": 1, "responseTime": None},
                {"isUp": False, "startCheck": "2026-11-25T19:00:00Z", "reason": 2, "responseTime": 120},
                {"isUp": True, "startCheck": "2026-11-25T18:59:00Z", "reason": None, "responseTime": 95},
            ],
        }
        monitor.update(fields)
        self.monitors[(org, monitor_id)] = monitor
        return monitor

    # ---- scripting

    def fail(self, status: int | None, times: int = 1, *, path: str | None = None, retry_after: str | None = None,
             delay_s: float = 0.0) -> None:
        """The next `times` calls (whose path contains `path`) answer `status`, after `delay_s`;
        status None answers normally, only late."""
        self._faults.append(_Fault(status, times, path, retry_after, delay_s))

    def calls(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        return [s for s in self.seen if (method is None or s.method == method) and (path is None or s.path == path)]

    def puts(self, issue_id: str) -> list[Any]:
        return [s.body for s in self.calls("PUT", f"/api/0/issues/{issue_id}/")]

    # ---- answering

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        self.seen.append(Seen(request.method, request.path, request.headers.get("Authorization"), body,
                              time.monotonic()))
        self.changed.set()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        fault = next((f for f in self._faults if f.times > 0 and (f.path is None or f.path in request.path)), None)
        if fault is not None:
            fault.times -= 1
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault.status is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return web.json_response({"detail": f"scripted {fault.status}"}, status=fault.status, headers=headers)
        return self._answer(request, body)

    def _answer(self, request: web.Request, body: Any) -> web.Response:
        path = request.path
        authorized = request.headers.get("Authorization") == f"Bearer {self.token}"
        if path == "/api/0/" and request.method == "GET":
            auth = {"id": 1, "label": "remediator", "scopes": list(self.scopes), "token": self.token,
                    "created": "2026-11-01T10:00:00Z"} if authorized else None
            return web.json_response({"version": "0", "user": None, "auth": auth})
        if not authorized:
            return web.json_response({"detail": "Unauthorized"}, status=401)
        if m := re.fullmatch(r"/api/0/issues/(\d+)/events/latest/", path):
            return self._read(lambda: self.events.get(m.group(1)))
        if m := re.fullmatch(r"/api/0/issues/(\d+)/", path):
            if request.method == "PUT":
                return self._resolve(m.group(1), body)
            return self._read(lambda: self.issues.get(m.group(1)))
        if m := re.fullmatch(r"/api/0/organizations/([^/]+)/monitors/(\d+)/", path):
            return self._read(lambda: self.monitors.get((m.group(1), m.group(2))))
        return web.json_response({"detail": "Not Found"}, status=404)

    def _read(self, find: Any) -> web.Response:
        if not any(s in READ for s in self.scopes):
            return web.json_response({"detail": "Permission denied"}, status=403)
        found = find()
        if found is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        return web.json_response(found)

    def _resolve(self, issue_id: str, body: Any) -> web.Response:
        if not any(s in WRITE for s in self.scopes):
            return web.json_response({"detail": "Permission denied"}, status=403)
        issue = self.issues.get(issue_id)
        if issue is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        issue["status"] = body["status"]
        answer = copy.deepcopy(sample("api_issue_put_resolved.json"))  # snake_case keys, as GlitchTip answers
        answer.update(id=issue_id, status=issue["status"], count=issue["count"], lastSeen=issue["lastSeen"])
        return web.json_response(answer)
