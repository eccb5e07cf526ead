"""The command line: `remediator run | triage | audit | patterns` (also `python -m bot`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bot.settings import Settings, SettingsError, check_for_run, load_settings

if TYPE_CHECKING:
    from bot.redact import Redactor

EXIT_BAD_SETTINGS = 2


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTINGS) from None


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    try:
        check_for_run(settings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_SETTINGS
    problem = _check_files(settings)
    if problem:
        print(problem, file=sys.stderr)
        return EXIT_BAD_SETTINGS
    from bot.redact import Redactor

    _configure_logging(settings, Redactor(settings.redact_patterns))
    if settings.demo_mode:
        from bot.demo import run_demo

        asyncio.run(run_demo(settings))
        return 0
    asyncio.run(_run_application(settings))
    return 0


async def _run_application(settings: Settings) -> None:
    from bot.app import Application

    assert settings.telegram_bot_token is not None and settings.telegram_chat_id is not None
    app = Application(
        settings, chat_id=settings.telegram_chat_id, token=settings.telegram_bot_token.get_secret_value(),
        api_base=settings.telegram_api_base,
    )
    await app.run_until_signal()


def _configure_logging(settings: Settings, redactor: Redactor) -> None:
    """Every command that may log does so through the redacting handler: no log line carries a secret."""
    from bot.logs import configure_logging

    configure_logging(settings.log_level, redactor)


def _check_files(settings: Settings) -> str | None:
    """Load the rules, owners and patterns files once so a bad one stops the start with its reason."""
    from bot.triage import OwnerMap, RulesError, RuleSet
    from patterns import PatternError, load_patterns

    try:
        RuleSet.load(settings.rules_file)
        if settings.owners_file:
            OwnerMap.load(settings.owners_file)
    except RulesError as exc:
        return f"Invalid settings:\n  {exc}"
    from bot.rollout import RolloutPolicy

    if RolloutPolicy.from_setting(settings.rollout_stage).proposes_fixes:
        try:
            load_patterns(settings.patterns_file)
        except PatternError as exc:
            return "Invalid settings:\n  PATTERNS_FILE: " + "\n  ".join(exc.problems or [str(exc)])
    return None


def _read_inputs(text: list[str], file: Path | None) -> list[tuple[str, str]]:
    """(label, raw input) pairs: one per line of --file, else TEXT, else standard input."""
    if file is not None:
        lines = file.read_text(encoding="utf-8").splitlines()
        return [(f"{file.name}:{n}", line) for n, line in enumerate(lines, 1) if line.strip()]
    if text:
        return [("arg", " ".join(text))]
    return [("stdin", sys.stdin.read())]


def cmd_triage(args: argparse.Namespace) -> int:
    from bot.ingest import PayloadError
    from bot.ingest.loose import alerts_from_text
    from bot.models import triage_to_dict
    from bot.pipeline import redact_alert
    from bot.redact import Redactor
    from bot.triage import OwnerMap, RuleSet

    settings = _settings_or_exit()
    redactor = Redactor(settings.redact_patterns)
    _configure_logging(settings, redactor)
    rules = RuleSet.load(settings.rules_file)
    owners = OwnerMap.load(settings.owners_file) if settings.owners_file else None
    status = 0
    for label, raw in _read_inputs(args.text, args.file):
        try:
            alerts = alerts_from_text(raw)
        except PayloadError as exc:
            reason = redactor.redact(exc.reason)
            print(json.dumps({"input": label, "error": reason}) if args.json else f"{label}: {reason}")
            status = 1
            continue
        for raw_alert in alerts:
            # The alert the pipeline triages: redacted as a whole before a rule copies (and cuts) any value.
            alert = redact_alert(redactor, raw_alert)
            triage = rules.triage(alert, owners)
            # Output is redacted again (idempotent): whatever a rule or owner file adds is masked too.
            record = redactor.redact_obj({"title": alert.title, **triage_to_dict(triage)})
            if args.json:
                print(json.dumps(record, ensure_ascii=False))
            else:
                owner = triage.owner.telegram or triage.owner.name if triage.owner else "-"
                print(f"{record['priority']} {record['category']:<14} {record['title'][:100]}")
                print(f"   cause: {record['likely_cause']}")
                print(f"   tags: {', '.join(record['tags']) or '-'} · owner: {owner} · rule: {triage.rule_id or '-'}")
    return status


def _parse_since(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {value!r} (use YYYY-MM-DD or an ISO time)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cmd_audit(args: argparse.Namespace) -> int:
    from bot.redact import Redactor
    from storage.audit import AuditRepository
    from storage.db import Database

    settings = _settings_or_exit()
    if not Path(settings.database_path).exists():
        print(f"no database at {settings.database_path}", file=sys.stderr)
        return 1
    redactor = Redactor(settings.redact_patterns)

    async def fetch() -> list[dict[str, object]]:
        async with Database(settings.database_path) as db:
            entries = await AuditRepository(db).list(since=args.since, incident_id=args.incident)
        return [redactor.redact_obj(e.as_dict()) for e in entries]

    for entry in asyncio.run(fetch()):
        if args.json:
            print(json.dumps(entry, ensure_ascii=False))
        else:
            who = entry["actor_name"] or entry["actor_id"] or "-"
            refs = " ".join(f"{k}={entry[k]}" for k in ("incident_id", "proposal_id") if entry[k] is not None)
            print(f"{entry['at']}  {entry['action']:<22} {entry['outcome']:<28} {who}  {refs}")
    return 0


def cmd_patterns(args: argparse.Namespace) -> int:
    from patterns.cli import check_command, test_command

    settings = _settings_or_exit()
    if args.patterns_command == "check":
        return check_command(args.path or settings.patterns_file)
    return test_command(args.text or None, args.file, args.json, patterns_path=settings.patterns_file,
                        hosts=settings.fix_hosts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remediator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the bot (a local demo when TELEGRAM_BOT_TOKEN is unset)")
    run.set_defaults(func=cmd_run)
    triage = sub.add_parser("triage", help="print the triage the bot would make for an alert")
    triage.add_argument("--json", action="store_true", help="one JSON object per alert")
    triage.add_argument("--file", type=Path, help="a JSON-lines file, one alert per line")
    triage.add_argument("text", nargs="*", help="alert JSON (GlitchTip or generic) or plain text")
    triage.set_defaults(func=cmd_triage)
    audit = sub.add_parser("audit", help="print the audit log (redacted)")
    audit.add_argument("--since", type=_parse_since, help="from this date/time (UTC)")
    audit.add_argument("--incident", type=int, help="only this incident")
    audit.add_argument("--json", action="store_true", help="JSON lines")
    audit.set_defaults(func=cmd_audit)
    patterns = sub.add_parser("patterns", help="check or try the safe-fix allow-list")
    psub = patterns.add_subparsers(dest="patterns_command", required=True)
    check = psub.add_parser("check", help="validate a patterns file (default: PATTERNS_FILE or the packaged one)")
    check.add_argument("path", nargs="?", type=Path)
    test = psub.add_parser("test", help="show which pattern would match and the argv it would run (runs nothing)")
    test.add_argument("--json", action="store_true")
    test.add_argument("--file", type=Path)
    test.add_argument("text", nargs="*")
    patterns.set_defaults(func=cmd_patterns)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "file", None) is not None and not args.file.is_file():
        print(f"no such file: {args.file}", file=sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
