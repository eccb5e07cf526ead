"""The `patterns check` and `patterns test` subcommands (wired into argparse by bot.cli).

Why: an operator edits the allow-list by hand; `check` tells them every mistake at once
before the bot refuses to start, and `test` shows, for real alerts, which fix would be
proposed with the exact argv — without running anything.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from bot.models import Alert, AlertKind, Category
from patterns.engine import PatternError, PatternMatch, default_patterns_path, load_patterns

__all__ = ["alert_from_dict", "alert_from_input", "check_command", "test_command"]

_GLITCHTIP_FIELDS = {"Project": "project", "Environment": "environment", "Server Name": "server", "Release": "release"}
_GENERIC_FIELDS = ("project", "environment", "server", "release", "level", "url")


def check_command(path: Path | None, *, out: TextIO | None = None) -> int:
    """Validate a pattern file; print OK with the count, or every problem. Exit code 0/1."""
    out = out or sys.stdout
    shown = path if path is not None else default_patterns_path()
    try:
        pset = load_patterns(path)
    except PatternError as exc:
        print(f"{len(exc.problems)} problem(s) in {shown}:", file=out)
        for problem in exc.problems:
            print(f"  - {problem}", file=out)
        return 1
    actionable = sum(1 for p in pset if p.has_action and p.enabled)
    print(f"OK: {len(pset)} pattern(s), {actionable} with an action, in {shown}", file=out)
    return 0


def test_command(
    inputs: list[str] | None,
    file: Path | None,
    as_json: bool,
    *,
    patterns_path: Path | None = None,
    category: str | None = None,
    out: TextIO | None = None,
) -> int:
    """Show which pattern would match each alert and the exact argv. Runs NOTHING.

    Each input is plain text, a generic alert JSON object, or a GlitchTip webhook JSON;
    ``file`` is JSON lines (one alert a line, e.g. the corpus format) or '-' for stdin.
    """
    out = out or sys.stdout
    try:
        pset = load_patterns(patterns_path)
    except PatternError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    raw: list[str] = list(inputs or [])
    if file is not None:
        try:
            text = sys.stdin.read() if str(file) == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            print(f"cannot read {file}: {exc}", file=sys.stderr)
            return 2
        raw.extend(line for line in text.splitlines() if line.strip())
    if not raw:
        print("nothing to test: give alert text/JSON arguments or --file FILE", file=sys.stderr)
        return 2
    cat = Category(category) if category else None
    for item in raw:
        case_id, alert = alert_from_input(item)
        found = pset.evaluate(alert, cat)
        if as_json:
            print(json.dumps(_as_record(case_id, alert, found), ensure_ascii=False), file=out)
        else:
            print(_as_line(case_id, alert, found), file=out)
    return 0


test_command.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


def alert_from_input(text: str) -> tuple[str | None, Alert]:
    """(case id if any, Alert) from plain text, a generic alert JSON or a GlitchTip webhook."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            case_id = data.get("id")
            return (str(case_id) if case_id is not None else None), alert_from_dict(data)
    title, _, rest = stripped.partition("\n")
    return None, _alert(title=title, stacktrace=rest)


def alert_from_dict(data: Mapping[str, Any]) -> Alert:
    """A GlitchTip webhook (first attachment) or a generic {title, message, stacktrace, ...}."""
    attachments = data.get("attachments")
    if isinstance(attachments, list) and attachments and isinstance(attachments[0], dict):
        first = attachments[0]
        extra: dict[str, str] = {}
        for fld in first.get("fields") or []:
            if isinstance(fld, dict) and fld.get("title") in _GLITCHTIP_FIELDS and fld.get("value"):
                extra[_GLITCHTIP_FIELDS[fld["title"]]] = str(fld["value"])
        return _alert(
            title=_text(first.get("title")),
            message=_text(first.get("text")),
            url=_text(first.get("title_link")) or None,
            source="glitchtip",
            **extra,
        )
    stack = data.get("stacktrace", data.get("stack", ""))
    if isinstance(stack, list):
        stack = "\n".join(map(str, stack))
    generic = {k: str(data[k]) for k in _GENERIC_FIELDS if data.get(k) not in (None, "")}
    title = _text(data.get("title")) or _text(data.get("message")).partition("\n")[0]
    return _alert(
        title=title,
        message=_text(data.get("message") or data.get("culprit")),
        stacktrace=_text(stack),
        **generic,
    )


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _alert(*, title: str, message: str = "", stacktrace: str = "", source: str = "generic",
           **fields: str | None) -> Alert:
    return Alert(
        source=source,
        kind=AlertKind.ERROR,
        title=title,
        fingerprint="cli",
        message=message,
        stacktrace=stacktrace,
        **fields,  # type: ignore[arg-type]
    )


def _short(alert: Alert, limit: int = 80) -> str:
    title = " ".join(alert.title.split())
    return title if len(title) <= limit else title[: limit - 1] + "…"


def _as_record(case_id: str | None, alert: Alert, found: PatternMatch | None) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if case_id is not None:
        record["id"] = case_id
    runnable = found is not None and found.runnable
    record.update(
        input=_short(alert),
        pattern=found.pattern.id if runnable and found else None,
        argv=found.argv if runnable and found else [],
        verify=found.verify if runnable and found else None,
        refused=f"{found.pattern.id}: {found.refused}" if found is not None and not runnable else None,
    )
    return record


def _as_line(case_id: str | None, alert: Alert, found: PatternMatch | None) -> str:
    head = f"[{case_id}] " if case_id else ""
    head += _short(alert)
    if found is None:
        return f"{head}\n    -> no pattern"
    if not found.runnable:
        return f"{head}\n    -> {found.pattern.id} REFUSED: {found.refused}"
    lines = [f"{head}", f"    -> {found.summary()}"]
    lines += [f"       step {i}: {shlex.join(argv)}" for i, argv in enumerate(found.argv, 1)]
    if found.verify:
        lines.append(f"       verify: {shlex.join(found.verify)}")
    if found.cwd:
        lines.append(f"       cwd: {found.cwd}")
    return "\n".join(lines)

