"""The command line: `remediator run | triage | audit | patterns | stats | glitchtip | github` (also `python -m bot`).

Exit codes: 0 done; 1 some input or file was bad (each one named); 2 the command could not
run as asked (a bad setting, a failed start, a missing or ambiguous input), with one line
saying what to change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.settings import (
    ENV_FILE_VARIABLE,
    Settings,
    SettingsError,
    check_for_run,
    describe_settings_source,
    load_settings,
    webhook_port_problem,
)

if TYPE_CHECKING:
    from bot.redact import Redactor
    from storage.overrides import PriorityOverride

log = logging.getLogger("bot.cli")
EXIT_BAD_INPUT = 1
EXIT_BAD_SETTINGS = 2
EXIT_USAGE = 2
SQLITE_HEADER = b"SQLite format 3\x00"


class InputError(Exception):
    """The command's input cannot be used at all (empty, not text): one line, exit 2."""


def _settings_or_exit(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(env_file=getattr(args, "env_file", None))
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTINGS) from None


def _configure_logging(settings: Settings, redactor: Redactor) -> None:
    """Every command that may log does so through the redacting handler: no log line carries a secret."""
    from bot.logs import configure_logging

    configure_logging(settings.log_level, redactor)


# --------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings_or_exit(args)
    try:
        check_for_run(settings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_SETTINGS
    from bot.redact import Redactor

    _configure_logging(settings, Redactor(settings.redact_patterns))
    log.info("remediator starting: %s; %s; database %s", describe_settings_source(settings), _mode(settings),
             Path(settings.database_path).absolute())
    problem = _check_files(settings) or _check_database_path(Path(settings.database_path))
    if problem:
        print(problem, file=sys.stderr)
        return EXIT_BAD_SETTINGS
    # Before the slow imports: a busy port is said at once (the application says it too, if lost since).
    port_problem = webhook_port_problem(settings.webhook_host, settings.webhook_port)
    if port_problem:
        print(f"remediator cannot start: {port_problem}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    from bot.app import StartupError

    try:
        if settings.demo_mode:
            from bot.demo import run_demo

            asyncio.run(run_demo(settings))
        else:
            asyncio.run(_run_application(settings))
    except StartupError as exc:
        print(f"remediator cannot start: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    return 0


def _mode(settings: Settings) -> str:
    if settings.demo_mode:
        return "local demo (no TELEGRAM_BOT_TOKEN): Telegram is emulated, nothing reaches a real chat"
    if settings.setup_mode:
        return ("SETUP MODE (no TELEGRAM_CHAT_ID or TELEGRAM_APPROVERS): only /start and /help are answered; "
                "send /start in your group, put the two lines it gives in .env, and start again")
    return f"Telegram chat {settings.telegram_chat_id}, stage {settings.rollout_stage}"


async def _run_application(settings: Settings) -> None:
    from bot.app import Application

    assert settings.telegram_bot_token is not None
    app = Application(
        settings, chat_id=settings.telegram_chat_id or 0, token=settings.telegram_bot_token.get_secret_value(),
        api_base=settings.telegram_api_base,
    )
    await app.run_until_signal()


def _check_files(settings: Settings) -> str | None:
    """Load the rules, owners and patterns files once so a bad one stops the start with its reason.

    A broken PATTERNS_FILE is an error where fixes are proposed, and a warning below that stage
    (the file is not used there yet, but raising the stage would then refuse to start).
    """
    from bot.rollout import RolloutPolicy
    from bot.triage import OwnerMap, OwnersError, RulesError, RuleSet

    try:
        RuleSet.load(settings.rules_file)
        if settings.owners_file:
            OwnerMap.load(settings.owners_file)
    except (RulesError, OwnersError) as exc:
        return f"Invalid settings:\n  {exc}"
    if settings.claude_on:  # the spend cap counts with these prices (bot/llm/prices.py)
        from bot.llm.prices import PricesError, load_prices

        try:
            load_prices(settings.llm_prices_file)
        except PricesError as exc:
            return f"Invalid settings:\n  {exc}"
    problems = _pattern_problems(settings.patterns_file)
    if not problems:
        return None
    if RolloutPolicy.from_setting(settings.rollout_stage).proposes_fixes:
        return "Invalid settings:\n  PATTERNS_FILE: " + "\n  ".join(problems)
    fixes_from = next(n for n in range(1, 5) if RolloutPolicy.from_setting(n).proposes_fixes)
    log.warning(
        "PATTERNS_FILE %s is not valid: %s problem(s), the first: %s. It is not used at stage %s, but stage %s "
        "will refuse to start with it; `remediator patterns check` lists every problem",
        settings.patterns_file or "(packaged)", len(problems), problems[0], settings.rollout_stage, fixes_from,
    )
    return None


def _pattern_problems(path: Path | None) -> list[str]:
    from patterns import PatternError, load_patterns

    try:
        load_patterns(path)
    except PatternError as exc:
        return list(exc.problems or [str(exc)])
    return []


def _check_database_path(path: Path) -> str | None:
    """Whether the bot can keep its database at DATABASE_PATH, checked before anything starts.

    A missing directory is created (and said so in the log); anything else that would fail
    later, deep in SQLite, is one line naming the path now.
    """
    if path.is_dir():
        return f"Invalid settings:\n  DATABASE_PATH: {path} is a directory — needs a file, e.g. {path / 'remediator.db'}"
    parent = path.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            return (f"Invalid settings:\n  DATABASE_PATH: cannot create the directory {parent} for {path} "
                    f"({exc.strerror}) — create it, or choose a place {_this_user()} can write")
        log.warning("DATABASE_PATH: created the missing directory %s", parent.absolute())
    elif not parent.is_dir():
        return f"Invalid settings:\n  DATABASE_PATH: {parent} is not a directory, so {path} cannot be created"
    if path.is_file() and not _is_sqlite(path):
        return (f"Invalid settings:\n  DATABASE_PATH: {path} is not a SQLite database — "
                "needs the bot's database file, or a new path")
    # The database and, next to it, the outbox's delivery journal (SQLite adds -wal and -shm there too).
    for name in (path, Path(f"{path}.sent-journal")):
        try:
            os.close(os.open(name, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            return (f"Invalid settings:\n  DATABASE_PATH: cannot write {name} ({exc.strerror}) — "
                    f"choose a place {_this_user()} can write, or change its permissions")
    return None


def _is_sqlite(path: Path) -> bool:
    """An empty file is a new database to SQLite; anything else must start with SQLite's header."""
    try:
        with path.open("rb") as db_file:
            header = db_file.read(len(SQLITE_HEADER))
    except OSError:
        return True  # unreadable: the write check below names the path and the reason
    return not header or header == SQLITE_HEADER


def _this_user() -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(os.geteuid()).pw_name}"
    except (ImportError, KeyError):
        return "this user"


# --------------------------------------------------------------------------- triage


def _json_problem(raw: str) -> str | None:
    """Why text that starts like a JSON object is not one (None when it is, or is plain text)."""
    stripped = raw.strip()
    if not stripped.startswith("{"):
        return None
    try:
        json.loads(stripped)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if "\n" in stripped else f"column {exc.colno}"
        return (f"not valid JSON ({exc.msg} at {where}); an alert is one JSON object, "
                "or plain text that does not start with '{'")
    except (ValueError, RecursionError) as exc:
        return f"not JSON we take ({type(exc).__name__}: {str(exc)[:200]})"
    return None


def _file_inputs(file: Path) -> list[tuple[str, str]]:
    """(file:line, text) per non-blank line of a JSON-lines file."""
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{file}: not UTF-8 text (byte {exc.start}); give a JSON-lines file") from None
    except OSError as exc:
        raise InputError(f"{file}: cannot read it ({exc.strerror})") from None
    inputs = [(f"{file}:{n}", line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not inputs:
        raise InputError(f"{file} is empty: nothing to triage (one alert per line: a JSON object or plain text)")
    return inputs


def _stdin_inputs(data: str) -> list[tuple[str, str]]:
    """Standard input is one alert (JSON, pretty-printed or not, or text), or JSON lines."""
    if not data.strip():
        raise InputError("standard input is empty: nothing to triage (give TEXT, --file PATH, or pipe an alert in)")
    lines = data.splitlines()
    first = next(line for line in lines if line.strip())
    if _json_problem(data) and not _json_problem(first):  # not one JSON document, but its first line is one
        return [(f"stdin:{n}", line) for n, line in enumerate(lines, 1) if line.strip()]
    return [("stdin", data)]


def _read_inputs(text: list[str], file: Path | None) -> list[tuple[str, str]]:
    """(label, raw input) pairs: one per line of --file, else TEXT, else standard input."""
    if file is not None:
        return _file_inputs(file)
    if text:
        joined = " ".join(text)
        if not joined.strip():
            raise InputError("TEXT is empty: nothing to triage")
        return [("TEXT", joined)]
    if sys.stdin.isatty():
        print("reading an alert from standard input; end it with Ctrl+D (or give TEXT or --file PATH)",
              file=sys.stderr)
    return _stdin_inputs(sys.stdin.read())


def cmd_triage(args: argparse.Namespace) -> int:
    from bot.redact import Redactor
    from bot.triage import OwnerMap, RuleSet

    settings = _settings_or_exit(args)
    redactor = Redactor(settings.redact_patterns)
    _configure_logging(settings, redactor)
    try:
        inputs = _read_inputs(args.text, args.file)
    except InputError as exc:
        print(f"remediator triage: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rules = RuleSet.load(settings.rules_file)
    owners = OwnerMap.load(settings.owners_file) if settings.owners_file else None
    overrides = _live_overrides(Path(settings.database_path))
    if args.claude and not settings.claude_on:
        print("remediator triage: --claude needs ANTHROPIC_API_KEY (in the environment or the .env)", file=sys.stderr)
        return EXIT_USAGE
    with contextlib.ExitStack() as stack:
        claude = None
        if args.claude:  # Claude's answer next to the rules' (bot/triage/claude.py); within the spend cap
            from bot.triage.claude import ClaudeComparison

            claude = stack.enter_context(ClaudeComparison(settings, owners, redactor.redact))
        status = _triage_inputs(args, inputs, rules, owners, overrides, redactor, claude)
        if claude is not None:
            print(claude.summary(), file=sys.stderr)
    return status


def _triage_inputs(args: argparse.Namespace, inputs: list[tuple[str, str]], rules: Any, owners: Any,
                   overrides: list[PriorityOverride], redactor: Redactor, claude: Any) -> int:
    from bot.ingest import PayloadError
    from bot.ingest.loose import alerts_from_text
    from bot.models import triage_to_dict
    from bot.pipeline import redact_alert

    status = 0
    for label, raw in inputs:
        try:
            problem = _json_problem(raw)
            if problem:
                raise PayloadError(400, problem)
            alerts = alerts_from_text(raw)
        except PayloadError as exc:
            _print_input_error(label, redactor.redact(exc.reason), args.json)
            status = EXIT_BAD_INPUT
            continue
        for raw_alert in alerts:
            # The alert the pipeline triages: redacted as a whole before a rule copies (and cuts) any value.
            alert = redact_alert(redactor, raw_alert)
            triage = rules.triage(alert, owners)
            if overrides:  # the same overrides the bot applies, so the terminal and the chat agree
                from bot.overrides import apply_override, override_text

                triage = apply_override(triage, alert.project, overrides)
            # Output is redacted again (idempotent): whatever a rule or owner file adds is masked too.
            record = redactor.redact_obj({"title": alert.title, **triage_to_dict(triage)})
            claude_record = redactor.redact_obj(claude.ask(alert, triage)) if claude is not None else None
            if args.json:
                print(json.dumps(record if claude_record is None else {**record, "claude": claude_record},
                                 ensure_ascii=False))
            else:
                owner = triage.owner.telegram or triage.owner.name if triage.owner else "-"
                print(f"{record['priority']} {record['category']:<14} {record['title'][:100]}")
                if triage.override_id is not None:
                    print(f"   priority: {override_text(triage)}, override #{triage.override_id} (/overrides)")
                print(f"   cause: {record['likely_cause']}")
                print(f"   tags: {', '.join(record['tags']) or '-'} · owner: {owner} · rule: {triage.rule_id or '-'}")
                if claude_record is not None:
                    _print_claude(claude_record, record)
    return status


def _print_claude(found: dict[str, Any], rules: dict[str, Any]) -> None:
    """Claude's answer under the rules' lines, saying where the two differ."""
    if "error" in found:
        print(f"   claude: {found['error']}")
        return
    same = found["priority"] == rules["priority"] and found["category"] == rules["category"]
    print(f"   claude: {found['priority']} {found['category']} · confidence {found['confidence']:.0%}"
          f" · {'agrees' if same else 'differs'} · owner: {found['owner'] or '-'}")
    print(f"   claude cause: {found['likely_cause']}")
    print(f"   claude tags: {', '.join(found['tags']) or '-'}")


def _live_overrides(database: Path) -> list[PriorityOverride]:
    """The bot's priority overrides (storage/overrides.py), read-only from DATABASE_PATH. No
    database is no overrides, silently: triaging on a laptop without the bot's database is normal.
    A file that cannot be read is said in one line, and the rules alone are shown."""
    if not database.is_file():
        return []
    import sqlite3

    from storage.overrides import read_live_overrides

    try:
        return read_live_overrides(database)
    except sqlite3.Error as exc:
        print(f"remediator triage: DATABASE_PATH {database}: cannot read the priority overrides ({exc}); "
              "showing the rules' triage alone", file=sys.stderr)
        return []


def _print_input_error(label: str, reason: str, as_json: bool) -> None:
    """JSON mode keeps errors in the output stream, in order; text mode puts them on stderr."""
    if as_json:
        print(json.dumps({"input": label, "error": reason}))
    else:
        print(f"{label}: {reason}", file=sys.stderr)


# --------------------------------------------------------------------------- audit


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

    settings = _settings_or_exit(args)
    if not Path(settings.database_path).is_file():
        print(f"no database at {settings.database_path} (DATABASE_PATH)", file=sys.stderr)
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
            print(_audit_line(entry))
    return 0


def _audit_line(entry: dict[str, Any]) -> str:
    who = entry["actor_name"] or entry["actor_id"] or "-"
    refs = " ".join(f"{k}={entry[k]}" for k in ("incident_id", "proposal_id") if entry[k] is not None)
    line = f"{entry['at']}  {entry['action']:<22} {entry['outcome']:<28} {who}  {refs}".rstrip()
    why = _audit_reason(entry.get("detail"))
    return f"{line}  — {why}" if why else line


def _audit_reason(detail: object) -> str | None:
    """The why of an entry, when its detail says one (e.g. what a refused webhook was refused for)."""
    if not isinstance(detail, dict):
        return None
    if detail.get("reason"):
        source = f"{detail['source']}: " if detail.get("source") else ""
        return f"{source}{detail['reason']}"
    counts = detail.get("counts")
    if isinstance(counts, dict) and counts:
        return ", ".join(f"{k} ×{v}" for k, v in counts.items())
    return None


# --------------------------------------------------------------------------- patterns


def _days(value: str) -> int:
    from bot.metrics import MAX_DAYS

    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_DAYS):
        raise argparse.ArgumentTypeError(f"not a number of days from 1 to {MAX_DAYS}: {value!r}")
    return int(value)


def cmd_stats(args: argparse.Namespace) -> int:
    """`stats`: the same figures as /stats, for a terminal or (--json) a script."""
    from bot.metrics import compute_metrics, metrics_lines, plain_text
    from bot.models import utcnow
    from bot.rollout import RolloutPolicy
    from storage.db import Database

    settings = _settings_or_exit(args)
    if not Path(settings.database_path).is_file():
        print(f"no database at {settings.database_path} (DATABASE_PATH)", file=sys.stderr)
        return 1

    async def compute() -> Any:
        async with Database(settings.database_path) as db:
            return await compute_metrics(db, RolloutPolicy.from_setting(settings.rollout_stage), until=utcnow(),
                                         days=args.days, claude_on=settings.claude_on)

    found = asyncio.run(compute())
    if args.json:
        print(json.dumps(found.as_dict(), ensure_ascii=False, indent=2))
    else:
        print(plain_text("\n".join(metrics_lines(found))))
    return 0


def cmd_patterns(args: argparse.Namespace) -> int:
    from patterns.cli import check_command, test_command

    settings = _settings_or_exit(args)
    if args.patterns_command == "check":
        return check_command(args.path or settings.patterns_file)
    return test_command(args.text or None, args.file, args.json, patterns_path=settings.patterns_file,
                        hosts=settings.fix_hosts)


# --------------------------------------------------------------------------- glitchtip


def cmd_glitchtip(args: argparse.Namespace) -> int:
    """`glitchtip check`: reach, auth, read scope, resolve scope, one line each; exit 1 on a failure."""
    from bot.glitchtip.check import run_check
    from bot.redact import Redactor

    settings = _settings_or_exit(args)
    if not settings.glitchtip_api_on or settings.glitchtip_url is None or settings.glitchtip_token is None:
        print("GlitchTip's API is off: set GLITCHTIP_URL and GLITCHTIP_TOKEN (a token from GlitchTip's "
              "Profile → Auth Tokens with the scopes event:read and event:write)", file=sys.stderr)
        return 1
    lines, ok = asyncio.run(run_check(settings.glitchtip_url, settings.glitchtip_token.get_secret_value(),
                                      settings.glitchtip_timeout_s, Redactor(settings.redact_patterns)))
    for line in lines:
        print(line)
    return 0 if ok else 1


# --------------------------------------------------------------------------- github


def cmd_github(args: argparse.Namespace) -> int:
    """`github check`: reach, token, repo, issues, labels, one line each; exit 1 on a failure."""
    from bot.github.check import run_check as run_github_check
    from bot.redact import Redactor

    settings = _settings_or_exit(args)
    if not settings.github_on or settings.github_token is None or settings.github_repo is None:
        print("GitHub issues are off: set GITHUB_REPO (owner/name) and GITHUB_TOKEN (a fine-grained token with "
              "Issues: read and write on that repository)", file=sys.stderr)
        return 1
    lines, ok = asyncio.run(run_github_check(
        settings.github_api_url, settings.github_token.get_secret_value(), settings.github_repo,
        settings.github_timeout_s, Redactor(settings.redact_patterns).redact,
    ))
    for line in lines:
        print(line)
    return 0 if ok else 1


# --------------------------------------------------------------------------- parser

SETTINGS_HELP = f"""\
settings: read from the environment and a .env file: the one given with --env-file,
else ${ENV_FILE_VARIABLE}, else ./.env (the environment wins over the file; relative
paths in a .env are relative to that file). .env.example lists every setting."""

RUN_HELP = """\
Runs the bot in one process until SIGINT/SIGTERM: aiogram polling, the webhook server
(WEBHOOK_HOST:WEBHOOK_PORT), the pipeline, the outbox sender and the scheduler, with its
state in DATABASE_PATH. With no TELEGRAM_BOT_TOKEN it runs the local demo against a
built-in Telegram emulator instead. A real chat needs TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID,
TELEGRAM_APPROVERS and WEBHOOK_TOKEN. A bad setting, or a start that fails (a busy port, a
token Telegram rejects, an unusable database path), prints one line saying what to change
and exits 2. The first log line says which .env was read and whether this is the demo."""

TRIAGE_HELP = """\
Prints the triage the bot would make (priority, category, likely cause, tags, owner, rule)
for each alert; sends nothing. Input: TEXT, or --file PATH (JSON lines: one alert a line,
a JSON object or plain text), or standard input (one alert, JSON or text, or JSON lines).
An alert is a generic alert or a GlitchTip webhook body as JSON, or plain text (the first
line is the title, the rest the stack trace). Reads RULES_FILE, OWNERS_FILE, REDACT_PATTERNS,
and the bot's priority overrides from DATABASE_PATH when that file exists (read-only), so the
terminal and the chat agree ("P0 by override from 4 corrections").
Exit 1 when an input is bad (each named, e.g. alerts.jsonl:3), 2 when there is nothing to read."""

AUDIT_HELP = """\
Prints the audit log, redacted: one line per entry (time, action, outcome, who, incident
and proposal, and why, e.g. what a refused webhook was refused for), or --json for every
field. Reads DATABASE_PATH (never creates it) and REDACT_PATTERNS. Safe to pipe into head."""

PATTERNS_HELP = """\
Checks or tries the safe-fix allow-list. Reads PATTERNS_FILE (default: the packaged
patterns/default.toml) and, for `test`, FIX_HOSTS."""

GLITCHTIP_HELP = """\
`check` calls GlitchTip's API at GLITCHTIP_URL with GLITCHTIP_TOKEN and prints, one line each,
whether it is reachable, whether the token is accepted, and whether it may read issues
(event:read) and resolve them (event:write). Changes nothing. Exit 1 if anything fails."""

GITHUB_HELP = """\
`check` calls GitHub's API at GITHUB_API_URL with GITHUB_TOKEN and prints, one line each,
whether it is reachable, whether the token is accepted, whether GITHUB_REPO exists with issues
on, and whether the token may create issues and labels there (probed with empty bodies that
GitHub refuses as invalid, so nothing is created). Exit 1 if anything fails."""


def _with_settings(parent: argparse.ArgumentParser) -> None:
    parent.add_argument(
        "--env-file", type=Path, metavar="PATH",
        help=f"read settings from this .env file (default: ${ENV_FILE_VARIABLE}, else ./.env)",
    )


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="remediator", description=__doc__, formatter_class=formatter,
                                     epilog=SETTINGS_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the bot (a local demo when TELEGRAM_BOT_TOKEN is unset)",
                         description=RUN_HELP, epilog=SETTINGS_HELP, formatter_class=formatter)
    _with_settings(run)
    run.set_defaults(func=cmd_run)

    triage = sub.add_parser("triage", help="print the triage the bot would make for an alert",
                            description=TRIAGE_HELP, epilog=SETTINGS_HELP, formatter_class=formatter)
    _with_settings(triage)
    triage.add_argument("--json", action="store_true", help="one JSON object per alert (errors as {input, error})")
    triage.add_argument("--claude", action="store_true",
                        help="also ask Claude (needs ANTHROPIC_API_KEY; counts against LLM_DAILY_BUDGET_USD) and "
                             "print its triage next to the rules' (JSON: a \"claude\" key)")
    triage.add_argument("--file", type=Path, metavar="PATH", help="a JSON-lines file, one alert per line")
    triage.add_argument("text", nargs="*", metavar="TEXT", help="alert JSON (GlitchTip or generic) or plain text")
    triage.set_defaults(func=cmd_triage)

    audit = sub.add_parser("audit", help="print the audit log (redacted)",
                           description=AUDIT_HELP, epilog=SETTINGS_HELP, formatter_class=formatter)
    _with_settings(audit)
    audit.add_argument("--since", type=_parse_since, help="from this date/time (UTC), e.g. 2025-01-31")
    audit.add_argument("--incident", type=int, metavar="ID", help="only this incident")
    audit.add_argument("--json", action="store_true", help="JSON lines, every field")
    audit.set_defaults(func=cmd_audit)

    patterns = sub.add_parser("patterns", help="check or try the safe-fix allow-list",
                              description=PATTERNS_HELP, epilog=SETTINGS_HELP, formatter_class=formatter)
    psub = patterns.add_subparsers(dest="patterns_command", required=True, metavar="check|test")
    check = psub.add_parser(
        "check", help="validate a patterns file (default: PATTERNS_FILE or the packaged one)",
        description="Lists every problem in a patterns file with where it is; exit 1 if there is any. "
                    "PATH defaults to PATTERNS_FILE, else the packaged patterns/default.toml.",
        epilog=SETTINGS_HELP, formatter_class=formatter,
    )
    _with_settings(check)
    check.add_argument("path", nargs="?", type=Path, metavar="PATH")
    test = psub.add_parser(
        "test", help="show which pattern would match and the argv it would run (runs nothing)",
        description="For each alert (TEXT, --file PATH with one alert a line, or '--file -' for standard "
                    "input), shows which pattern of PATTERNS_FILE matches and the exact argv it would run, "
                    "for errors from FIX_HOSTS. Runs nothing.",
        epilog=SETTINGS_HELP, formatter_class=formatter,
    )
    _with_settings(test)
    test.add_argument("--json", action="store_true", help="one JSON object per alert")
    test.add_argument("--file", type=Path, metavar="PATH", help="a JSON-lines file, one alert per line ('-': stdin)")
    test.add_argument("text", nargs="*", metavar="TEXT", help="alert JSON or plain text")
    patterns.set_defaults(func=cmd_patterns)

    glitchtip = sub.add_parser("glitchtip", help="check GlitchTip's API with the configured token",
                               description=GLITCHTIP_HELP, epilog=SETTINGS_HELP, formatter_class=formatter)
    gsub = glitchtip.add_subparsers(dest="glitchtip_command", required=True, metavar="check")
    gcheck = gsub.add_parser("check", help="reach, auth, read scope, resolve scope: one line each; exit 1 on a failure",
                             description=GLITCHTIP_HELP, epilog=SETTINGS_HELP, formatter_class=formatter)
    _with_settings(gcheck)
    glitchtip.set_defaults(func=cmd_glitchtip)

    github = sub.add_parser("github", help="check that GitHub issues can be filed with the configured token",
                            description=GITHUB_HELP, epilog=SETTINGS_HELP, formatter_class=formatter)
    ghsub = github.add_subparsers(dest="github_command", required=True, metavar="check")
    ghcheck = ghsub.add_parser("check", help="reach, token, repo, issues, labels: one line each; exit 1 on a failure",
                               description=GITHUB_HELP, epilog=SETTINGS_HELP, formatter_class=formatter)
    _with_settings(ghcheck)
    github.set_defaults(func=cmd_github)

    stats = sub.add_parser("stats", help="print the metrics (triage accuracy, interventions, volume…) for a window",
                           epilog=SETTINGS_HELP, formatter_class=formatter)
    _with_settings(stats)
    stats.add_argument("--days", type=_days, default=7, metavar="N", help="the last N days (default 7)")
    stats.add_argument("--json", action="store_true", help="one JSON object, every figure")
    stats.set_defaults(func=cmd_stats)
    return parser


def _input_problem(args: argparse.Namespace) -> str | None:
    """A --file that cannot be read as one, or given together with TEXT (which one was meant?)."""
    file: Path | None = getattr(args, "file", None)
    if file is None:
        return None
    if getattr(args, "text", None):
        return f"give TEXT or --file, not both (--file {file} and TEXT {' '.join(args.text)[:60]!r})"
    if str(file) == "-":
        return None
    if file.is_dir():
        return f"--file {file} is a directory: give a file, one alert per line"
    if not file.exists():
        return f"no such file: {file}"
    if not file.is_file():
        return f"--file {file} is not a regular file"
    return None


def _quiet_stdout() -> None:
    """After the reader went away (`remediator audit | head -1`): what is still buffered goes nowhere,
    so the interpreter's own flush at exit cannot raise BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = _input_problem(args)
    if problem:
        command = " ".join(filter(None, (args.command, getattr(args, "patterns_command", None))))
        print(f"remediator {command}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        status = int(args.func(args))
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    raise SystemExit(main())
