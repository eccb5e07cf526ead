"""The `patterns check` and `patterns test` subcommands (wired into argparse by bot.cli).

Why: an operator edits the allow-list by hand; `check` tells them every mistake at once
before the bot refuses to start, and `test` shows, for real alerts, which fix would be
proposed with the exact argv — without running anything.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any, TextIO

from bot.ingest import PayloadError
from bot.ingest.loose import alerts_from_text
from bot.models import Alert, Category
from patterns.engine import PatternError, PatternMatch, default_patterns_path, load_patterns

__all__ = ["check_command", "test_command"]


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
    hosts: Collection[str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Show which pattern would match each alert and the exact argv. Runs NOTHING.

    Each input is plain text, a generic alert JSON object, or a GlitchTip webhook JSON;
    ``file`` is JSON lines (one alert a line, e.g. the corpus format) or '-' for stdin.
    ``hosts`` is FIX_HOSTS (default: this machine's names): an alert whose ``server`` is
    another host shows "no local fix".
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
    status = 0
    for item in raw:
        case_id = _case_id(item)
        try:
            alerts = alerts_from_text(item)
        except PayloadError as exc:
            print(json.dumps({"input": item[:80], "error": exc.reason}) if as_json else f"{item[:80]}: {exc.reason}",
                  file=out)
            status = 1
            continue
        for alert in alerts:
            found = pset.evaluate(alert, cat, hosts=hosts)
            why = pset.why_none(alert, cat) if found is None else None
            if as_json:
                record = _as_record(case_id, alert, found)
                if why is not None:
                    record["why_none"] = why
                print(json.dumps(record, ensure_ascii=False), file=out)
            else:
                line = _as_line(case_id, alert, found)
                print(f"{line} ({why})" if why else line, file=out)
    return status


test_command.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


def _case_id(text: str) -> str | None:
    """The `id` of a JSON input (corpus lines carry one), for the output."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return str(data["id"]) if isinstance(data, dict) and data.get("id") is not None else None


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
        precheck=found.precheck if runnable and found else None,
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
    if found.precheck:
        lines.append(f"       precheck: {shlex.join(found.precheck)}")
    lines += [f"       step {i}: {shlex.join(argv)}" for i, argv in enumerate(found.argv, 1)]
    if found.verify:
        lines.append(f"       verify: {shlex.join(found.verify)}")
    if found.cwd:
        lines.append(f"       cwd: {found.cwd}")
    return "\n".join(lines)

