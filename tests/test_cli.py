"""The `remediator` command line, driven as a user would: `python -m bot ...` in a subprocess.

Every run gets an explicit environment (the developer's own settings are stripped), a fresh
temporary working directory (so no `.env` is read) and the repository on PYTHONPATH.
Fake credentials are assembled at runtime so secret scanners do not flag this file.

Each run is its own process, forked from the one interpreter per test worker that has imported
the bot (and aiogram) and loaded its rules already (tests/forked_cli.py: a fresh interpreter
spends one to three seconds of CPU on that, most of what these tests cost); the process, its
environment, input (a real pipe), output and exit code are the command's own. The runs below are
started in the background as the module begins (`_planned_runs`) and each test waits for its own;
a test whose run was not planned simply runs it itself. The local demo and the early-closed
reader are forked too, their output real pipes read as it comes. A fresh interpreter running the
command as a user starts it is tests/test_startup_errors.py's `scripts/run` test.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bot.settings import Settings
from storage.audit import AuditRepository
from storage.db import Database
from tests.conftest import free_port
from tests.forked_cli import PIPE, ForkedCli

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
RUN_TIMEOUT = 20

REDIS_TITLE = "Error: connect ECONNREFUSED 127.0.0.1:6379"
REDIS_PATTERN_TITLE = "Error: Redis connection to 127.0.0.1:6379 failed - connect ECONNREFUSED 127.0.0.1:6379"
TRIAGE_KEYS = {"priority", "category", "likely_cause", "tags", "rule_id"}
# A pattern file with a mistake the loader must refuse: code bugs may not carry an action.
CODE_WITH_ACTION = """\
[patterns.fix_code]
description = "a code bug fixed by a command"
category = "code"
match.any = ["TypeError"]
action = ["echo", "hi"]
"""
SHELL_AND_BAD_REGEX = """
[patterns.shell_out]
description = "runs a shell"
category = "infrastructure"
match.any = ["(unclosed"]
action = ["sh", "-c", "systemctl restart x"]
"""
HOSTILE = [
    "Error: Cannot find module '--registry=http://evil'",
    "Error: Cannot find module 'http://evil.example/x.tgz'",
    "Error: Cannot find module '../../etc/passwd'",
    "ModuleNotFoundError: No module named 'os;rm'",
    "ModuleNotFoundError: No module named '-e'",
]
STDIN_TRACE = f"{REDIS_TITLE}\n    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)\n"
VALID_BOT_TOKEN = "123456789:" + "AAE" + "x1Y2z3" * 6
MALFORMED_JSON = '{"title": "broken",'
REJECTIONS = 1500  # about 150 KB of audit text, more than a pipe's buffer


def _anthropic_key() -> str:
    return "sk-ant-api03-" + "Ab3dEf6hIj9kLm2oPq5sTu8wXy1zAb4dEf7hIj0k"  # 40 characters after the prefix


def _github_token() -> str:
    return "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"  # 36 characters after the prefix


SECRET_TITLE = f"AuthenticationError: invalid x-api-key {_anthropic_key()}"
SECRET_IN_CAUSE = f'FATAL: password authentication failed for user "{_github_token()}"'


def _env(workdir: Path, **settings: str) -> dict[str, str]:
    """The current environment minus every remediator setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONSTARTUP", None)
    # Defaults that keep a run that wrongly gets past validation local and harmless.
    env["DATABASE_PATH"] = str(workdir / "remediator.db")
    env["TELEGRAM_API_BASE"] = "http://127.0.0.1:9"
    env["WEBHOOK_PORT"] = "0"
    env.update(settings)
    return env


class Cli:
    """`remediator ...` in `workdir`, with the files the tests feed it."""

    def __init__(self, workdir: Path, zygote: ForkedCli) -> None:
        self.workdir = workdir
        self.zygote = zygote
        self.alerts = workdir / "alerts.jsonl"
        self.bad_line = workdir / "bad-line.jsonl"
        self.malformed = workdir / "malformed.jsonl"
        self.empty = workdir / "empty.jsonl"
        self.a_directory = workdir / "a-directory"
        self.redacting_env = workdir / "conf" / "redacting.env"
        self.rejections_db = workdir / "rejections.db"
        self.code_action = workdir / "code-action.toml"
        self.bad_patterns = workdir / "bad.toml"
        self.audit_db = workdir / "audit.db"
        self.no_db = workdir / "never-created.db"
        self._pool = ThreadPoolExecutor(max_workers=2)  # two commands at a time: forks on both cores
        self._runs: dict[tuple[object, ...], Future[subprocess.CompletedProcess[str]]] = {}

    def start(self, *args: str, stdin: str | None = None, **settings: str) -> None:
        key = (args, stdin, tuple(sorted(settings.items())))
        if key not in self._runs:
            self._runs[key] = self._pool.submit(self._forked_run, args, stdin, settings)

    def _forked_run(self, args: tuple[str, ...], stdin: str | None,
                    settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return self.zygote.run(list(args), cwd=self.workdir, env=_env(self.workdir, **settings), stdin=stdin or "",
                               timeout=RUN_TIMEOUT)

    def __call__(self, *args: str, stdin: str | None = None, **settings: str) -> subprocess.CompletedProcess[str]:
        self.start(*args, stdin=stdin, **settings)
        return self._runs[(args, stdin, tuple(sorted(settings.items())))].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _write_files(cli: Cli) -> None:
    batch = json.dumps(json.loads((DATA / "glitchtip" / "issue_alert_batch.json").read_text()))
    lines = [
        json.dumps({"title": "Error: connect ECONNREFUSED 127.0.0.1:5432", "project": "api", "level": "error"}),
        batch,
        json.dumps({"title": "KeyError: 'slots'", "stacktrace": "Traceback (most recent call last):\n  File \"app.py\""}),
        "ENOSPC: no space left on device, write '/var/log/app.log'",
    ]
    cli.alerts.write_text("\n".join(lines) + "\n\n", encoding="utf-8")  # a blank line is skipped
    cli.bad_line.write_text(json.dumps({"title": ""}) + "\n" + REDIS_TITLE + "\n", encoding="utf-8")
    cli.malformed.write_text(REDIS_TITLE + "\n" + MALFORMED_JSON + "\n\n" + json.dumps({"title": "KeyError: 'slots'"})
                             + "\n", encoding="utf-8")
    cli.empty.write_text("\n  \n", encoding="utf-8")
    cli.a_directory.mkdir()
    cli.redacting_env.parent.mkdir()
    cli.redacting_env.write_text(r"REDACT_PATTERNS=zebra-\d+" + "\n", encoding="utf-8")
    asyncio.run(_seed_rejections(cli.rejections_db, REJECTIONS))
    cli.code_action.write_text(CODE_WITH_ACTION, encoding="utf-8")
    cli.bad_patterns.write_text(CODE_WITH_ACTION + SHELL_AND_BAD_REGEX, encoding="utf-8")
    asyncio.run(_seed_audit(cli.audit_db, _github_token()))


async def _seed_rejections(path: Path, count: int) -> None:
    """Many refused webhooks: more output than a pipe holds, so a reader that stops early closes it mid-write."""
    async with Database(path) as db:
        audit = AuditRepository(db)
        for n in range(count):
            await audit.record("webhook.rejected", "http 422", detail={
                "source": "glitchtip", "reason": f"attachments.0.title: Field required (body {n})", "remote": "10.0.0.5",
            })


async def _seed_audit(path: Path, secret: str) -> None:
    async with Database(path) as db:
        audit = AuditRepository(db)
        await audit.record("incident.opened", "opened", incident_id=1, detail={"priority": "P1"})
        await audit.record(
            "proposal.approve", "approved", actor_id=111, actor_name="Ann (@ann)", incident_id=2, proposal_id=5,
            detail={"stderr": f"remote: invalid credentials {secret} for github.com"},
        )
        await audit.record("killswitch.on", "forced by environment", actor_name="environment")


def _planned_runs(cli: Cli) -> None:
    """The runs the tests below make, started early (an optimisation only)."""
    w = cli.workdir
    cli.start("triage", "--json", REDIS_TITLE)
    cli.start("triage", "--json", "--file", str(cli.alerts))
    cli.start("triage", "--json", "--file", str(cli.bad_line))
    cli.start("triage", "--file", str(w / "nope.jsonl"))
    cli.start("triage", "--file", str(cli.malformed))
    cli.start("triage", "--json", "--file", str(cli.malformed))
    cli.start("triage", "--file", str(cli.empty))
    cli.start("triage", "--file", str(cli.a_directory))
    cli.start("triage", "--file", str(cli.alerts), REDIS_TITLE)
    cli.start("triage", MALFORMED_JSON)
    cli.start("triage", "--env-file", str(cli.redacting_env), "Error: zebra-42 refused the connection")
    cli.start("audit", DATABASE_PATH=str(cli.rejections_db))
    cli.start("triage", "--json", stdin=STDIN_TRACE)
    cli.start("triage", "--json", stdin=(DATA / "glitchtip" / "issue_alert_batch.json").read_text())
    cli.start("triage", SECRET_TITLE)
    cli.start("triage", "--json", SECRET_TITLE)
    cli.start("triage", SECRET_IN_CAUSE)
    cli.start("triage", "--json", SECRET_IN_CAUSE)
    cli.start("run", ROLLOUT_STAGE="9", TELEGRAM_CHAT_ID="abc")
    cli.start("run", TELEGRAM_BOT_TOKEN=VALID_BOT_TOKEN)
    cli.start("run", TELEGRAM_BOT_TOKEN="not-a-token", TELEGRAM_CHAT_ID="-100123", TELEGRAM_APPROVERS="111",
              WEBHOOK_TOKEN="short")
    cli.start("run", PATTERNS_FILE=str(cli.code_action), ROLLOUT_STAGE="4")
    cli.start("run", RULES_FILE=str(w / "missing-rules.toml"))
    cli.start("patterns", "check")
    cli.start("patterns", "check", str(cli.bad_patterns))
    cli.start("patterns", "check", str(w / "nope.toml"))
    cli.start("patterns", "test", "--json", REDIS_PATTERN_TITLE)
    cli.start("patterns", "test", REDIS_PATTERN_TITLE, "TypeError: x is not a function")
    cli.start("patterns", "test", "--json", *HOSTILE)
    cli.start("patterns", "test")
    cli.start("audit", "--json", DATABASE_PATH=str(cli.no_db))
    cli.start("audit", "--json", DATABASE_PATH=str(cli.audit_db))
    cli.start("audit", DATABASE_PATH=str(cli.audit_db))
    cli.start("audit", "--json", "--incident", "2", DATABASE_PATH=str(cli.audit_db))
    cli.start("audit", "--json", "--since", "2999-01-01", DATABASE_PATH=str(cli.audit_db))
    cli.start("audit", "--json", "--since", "2000-01-01", DATABASE_PATH=str(cli.audit_db))
    cli.start("audit", "--since", "yesterday", DATABASE_PATH=str(cli.audit_db))


@pytest.fixture(scope="module")
def cli(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        forked_cli: ForkedCli) -> Iterator[Cli]:
    runner = Cli(tmp_path_factory.mktemp("cli"), forked_cli)
    _write_files(runner)
    selected = [
        item for item in request.session.items
        if item.path == request.path and "cli" in getattr(item, "fixturenames", ())
    ]
    if len(selected) > 3:  # running one or two tests: do not start the whole plan
        _planned_runs(runner)
    try:
        yield runner
    finally:
        runner.close()


def _json_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# --------------------------------------------------------------------------- triage


def test_triage_text_prints_priority_category_and_cause(cli: Cli) -> None:
    result = cli("triage", REDIS_TITLE)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.split()[0] in {"P0", "P1", "P2", "P3"}
    assert "infrastructure" in first
    assert REDIS_TITLE in first
    assert "cause:" in result.stdout and "Redis" in result.stdout
    assert "rule:" in result.stdout


def test_triage_json_prints_one_object_with_the_triage(cli: Cli) -> None:
    result = cli("triage", "--json", REDIS_TITLE)
    assert result.returncode == 0, result.stderr
    records = _json_lines(result.stdout)
    assert len(records) == 1
    record = records[0]
    assert record.keys() >= TRIAGE_KEYS
    assert record["category"] == "infrastructure"
    assert record["priority"] in {"P0", "P1"}
    assert record["title"] == REDIS_TITLE
    assert isinstance(record["tags"], list) and "redis" in record["tags"]
    assert record["rule_id"]


def test_triage_file_prints_one_object_per_alert(cli: Cli) -> None:
    result = cli("triage", "--json", "--file", str(cli.alerts))
    assert result.returncode == 0, result.stderr
    records = _json_lines(result.stdout)
    assert [r["title"] for r in records] == [
        "Error: connect ECONNREFUSED 127.0.0.1:5432",
        "Error: Cannot find module '@sentry/node'",
        "Error: YClients API rate limit exceeded",
        "Error: ENOSPC: no space left on device, write",
        "KeyError: 'slots'",
        "ENOSPC: no space left on device, write '/var/log/app.log'",
    ]
    assert all(r.keys() >= TRIAGE_KEYS for r in records)
    by_title = {r["title"]: r for r in records}
    assert by_title["Error: Cannot find module '@sentry/node'"]["category"] == "dependency"
    assert by_title["Error: ENOSPC: no space left on device, write"]["category"] == "resource"
    assert by_title["KeyError: 'slots'"]["category"] == "code"


def test_triage_file_reports_a_bad_line_and_goes_on(cli: Cli) -> None:
    result = cli("triage", "--json", "--file", str(cli.bad_line))
    assert result.returncode == 1
    records = _json_lines(result.stdout)
    assert records[0]["input"] == f"{cli.bad_line}:1" and "title" in str(records[0]["error"])
    assert records[1]["category"] == "infrastructure"


def test_triage_missing_file_is_a_clear_error(cli: Cli) -> None:
    result = cli("triage", "--file", str(cli.workdir / "nope.jsonl"))
    assert result.returncode == 2
    assert "no such file" in result.stderr and "nope.jsonl" in result.stderr
    assert "Traceback" not in result.stderr


def test_triage_a_malformed_json_line_is_an_error_at_file_and_line_and_the_rest_goes_on(cli: Cli) -> None:
    result = cli("triage", "--file", str(cli.malformed))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (error,) = result.stderr.splitlines()
    assert error.startswith(f"{cli.malformed}:2: not valid JSON")
    assert "broken" not in result.stdout  # not taken as an alert titled '{"title": "broken",'
    assert REDIS_TITLE in result.stdout and "KeyError: 'slots'" in result.stdout  # lines 1 and 4


def test_triage_json_reports_a_malformed_line_in_order(cli: Cli) -> None:
    result = cli("triage", "--json", "--file", str(cli.malformed))
    assert result.returncode == 1
    records = _json_lines(result.stdout)
    assert [r.get("input") or r["title"] for r in records] == [REDIS_TITLE, f"{cli.malformed}:2", "KeyError: 'slots'"]
    assert "not valid JSON" in str(records[1]["error"])


def test_triage_malformed_json_text_is_an_error_not_an_alert(cli: Cli) -> None:
    result = cli("triage", MALFORMED_JSON)
    assert result.returncode == 1
    assert "not valid JSON" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("case", ["empty file", "empty stdin", "directory"])
def test_triage_with_nothing_to_read_says_why(cli: Cli, case: str) -> None:
    result = {
        "empty file": lambda: cli("triage", "--file", str(cli.empty)),
        "empty stdin": lambda: cli("triage", stdin="  \n"),  # a real pipe
        "directory": lambda: cli("triage", "--file", str(cli.a_directory)),
    }[case]()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    expected = {"empty file": f"{cli.empty} is empty", "empty stdin": "standard input is empty",
                "directory": f"{cli.a_directory} is a directory"}[case]
    assert expected in result.stderr


def test_triage_text_and_file_together_is_refused_as_ambiguous(cli: Cli) -> None:
    result = cli("triage", "--file", str(cli.alerts), REDIS_TITLE)
    assert result.returncode == 2
    assert "not both" in result.stderr
    assert result.stdout == ""


def test_triage_reads_settings_from_env_file(cli: Cli) -> None:
    result = cli("triage", "--env-file", str(cli.redacting_env), "Error: zebra-42 refused the connection")
    assert result.returncode == 0, result.stderr
    assert "zebra-42" not in result.stdout and "[REDACTED]" in result.stdout


def test_triage_reads_plain_text_from_stdin(cli: Cli) -> None:
    result = cli("triage", "--json", stdin=STDIN_TRACE)
    assert result.returncode == 0, result.stderr
    records = _json_lines(result.stdout)
    assert len(records) == 1
    assert records[0]["title"] == REDIS_TITLE
    assert records[0]["category"] == "infrastructure"


def test_triage_reads_a_pretty_printed_glitchtip_body_from_stdin(cli: Cli) -> None:
    result = cli("triage", "--json", stdin=(DATA / "glitchtip" / "issue_alert_batch.json").read_text())
    assert result.returncode == 0, result.stderr
    assert len(_json_lines(result.stdout)) == 3


@pytest.mark.parametrize("mode", [(), ("--json",)], ids=["text", "json"])
def test_triage_redacts_secrets_in_the_title(cli: Cli, mode: tuple[str, ...]) -> None:
    key = _anthropic_key()
    result = cli("triage", *mode, SECRET_TITLE)
    assert result.returncode == 0, result.stderr
    assert key not in result.stdout
    assert key[20:] not in result.stdout
    assert "AuthenticationError" in result.stdout
    assert "[REDACTED]" in result.stdout


def test_triage_text_redacts_a_secret_copied_into_the_cause(cli: Cli) -> None:
    result = cli("triage", SECRET_IN_CAUSE)
    assert result.returncode == 0, result.stderr
    assert "configuration" in result.stdout
    assert _github_token() not in result.stdout


def test_triage_json_redacts_a_secret_copied_into_the_cause(cli: Cli) -> None:
    result = cli("triage", "--json", SECRET_IN_CAUSE)
    assert result.returncode == 0, result.stderr
    assert _github_token() not in result.stdout


# --------------------------------------------------------------------------- run: bad settings


def test_run_with_bad_values_names_each_setting_and_what_it_needs(cli: Cli) -> None:
    result = cli("run", ROLLOUT_STAGE="9", TELEGRAM_CHAT_ID="abc")
    assert result.returncode == 2
    err = result.stderr
    assert "Traceback" not in err
    rollout = next(line for line in err.splitlines() if "ROLLOUT_STAGE" in line)
    chat = next(line for line in err.splitlines() if "TELEGRAM_CHAT_ID" in line)
    assert "needs" in rollout and "4" in rollout
    assert "needs" in chat and "numeric" in chat
    assert result.stdout == ""  # no demo banner: nothing started


def test_run_with_a_token_but_nothing_else_names_each_missing_setting(cli: Cli) -> None:
    result = cli("run", TELEGRAM_BOT_TOKEN=VALID_BOT_TOKEN)
    assert result.returncode == 2
    err = result.stderr
    assert "Traceback" not in err
    line = next((line for line in err.splitlines() if "WEBHOOK_TOKEN" in line), None)
    assert line is not None and "needs" in line, err
    # Chat and approvers may wait for setup mode (/start tells them); the message says so.
    assert any("TELEGRAM_CHAT_ID" in line and "setup mode" in line for line in err.splitlines()), err
    assert "TELEGRAM_BOT_TOKEN" not in err  # a well-formed token is not complained about
    assert VALID_BOT_TOKEN not in err and VALID_BOT_TOKEN not in result.stdout


def test_run_with_a_short_webhook_token_and_malformed_bot_token(cli: Cli) -> None:
    result = cli(
        "run", TELEGRAM_BOT_TOKEN="not-a-token", TELEGRAM_CHAT_ID="-100123", TELEGRAM_APPROVERS="111",
        WEBHOOK_TOKEN="short",
    )
    assert result.returncode == 2
    assert "WEBHOOK_TOKEN" in result.stderr and "16" in result.stderr
    assert "TELEGRAM_BOT_TOKEN" in result.stderr and "BotFather" in result.stderr
    assert "TELEGRAM_CHAT_ID" not in result.stderr and "TELEGRAM_APPROVERS" not in result.stderr


def test_run_with_an_invalid_patterns_file_at_stage_4_says_why(cli: Cli) -> None:
    result = cli("run", PATTERNS_FILE=str(cli.code_action), ROLLOUT_STAGE="4")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "PATTERNS_FILE" in result.stderr
    assert "fix_code" in result.stderr and "may not carry an action" in result.stderr
    assert result.stdout == ""


def test_run_with_a_missing_rules_file_names_it(cli: Cli) -> None:
    result = cli("run", RULES_FILE=str(cli.workdir / "missing-rules.toml"))
    assert result.returncode == 2
    assert "RULES_FILE" in result.stderr and "missing-rules.toml" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- patterns


def test_patterns_check_accepts_the_packaged_file(cli: Cli) -> None:
    result = cli("patterns", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK:")
    assert "default.toml" in result.stdout


def test_patterns_check_lists_every_problem_with_where(cli: Cli) -> None:
    result = cli("patterns", "check", str(cli.bad_patterns))
    assert result.returncode == 1
    out = result.stdout
    assert "3 problem(s)" in out
    problems = [line for line in out.splitlines() if line.strip().startswith("- ")]
    assert len(problems) == 3
    assert any("patterns.fix_code.action" in p and "code" in p for p in problems)
    assert any("patterns.shell_out.match.any[0]" in p and "regex" in p for p in problems)
    assert any("patterns.shell_out.action" in p and "shell" in p for p in problems)
    assert all("bad.toml" in p for p in problems)


def test_patterns_check_of_an_unreadable_file_fails(cli: Cli) -> None:
    result = cli("patterns", "check", str(cli.workdir / "nope.toml"))
    assert result.returncode == 1
    assert "nope.toml" in result.stdout
    assert "Traceback" not in result.stderr


def test_patterns_test_shows_the_fix_and_its_argv(cli: Cli) -> None:
    result = cli("patterns", "test", "--json", REDIS_PATTERN_TITLE)
    assert result.returncode == 0, result.stderr
    (record,) = _json_lines(result.stdout)
    assert record["pattern"] == "restart_redis"
    assert record["argv"] == [["systemctl", "restart", "redis-server"]]
    assert record["verify"] == ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"]


def test_patterns_test_text_output_shows_the_steps(cli: Cli) -> None:
    result = cli("patterns", "test", REDIS_PATTERN_TITLE, "TypeError: x is not a function")
    assert result.returncode == 0, result.stderr
    assert "step 1: systemctl restart redis-server" in result.stdout
    assert "-> no pattern" in result.stdout


def test_patterns_test_gives_no_runnable_argv_for_hostile_input(cli: Cli) -> None:
    result = cli("patterns", "test", "--json", *HOSTILE)
    assert result.returncode == 0, result.stderr
    records = _json_lines(result.stdout)
    assert len(records) == len(HOSTILE)
    for record in records:
        assert record["argv"] == [], record
        assert record["pattern"] is None, record
        assert "evil" not in json.dumps(record.get("verify"))


def test_patterns_test_with_nothing_to_test_says_so(cli: Cli) -> None:
    result = cli("patterns", "test")
    assert result.returncode == 2
    assert "nothing to test" in result.stderr


# --------------------------------------------------------------------------- audit


def test_audit_without_a_database_is_a_clear_error(cli: Cli) -> None:
    result = cli("audit", "--json", DATABASE_PATH=str(cli.no_db))
    assert result.returncode == 1
    assert "no database" in result.stderr and str(cli.no_db) in result.stderr
    assert "Traceback" not in result.stderr
    assert not cli.no_db.exists()  # looking does not create an empty database


def test_audit_json_prints_every_row_redacted(cli: Cli) -> None:
    result = cli("audit", "--json", DATABASE_PATH=str(cli.audit_db))
    assert result.returncode == 0, result.stderr
    rows = _json_lines(result.stdout)
    assert [r["action"] for r in rows] == ["incident.opened", "proposal.approve", "killswitch.on"]
    approve = rows[1]
    assert approve["actor_name"] == "Ann (@ann)" and approve["proposal_id"] == 5
    assert _github_token() not in result.stdout
    assert "[REDACTED]" in json.dumps(approve["detail"])
    assert "github.com" in json.dumps(approve["detail"])  # context stays


def test_audit_text_is_redacted_too(cli: Cli) -> None:
    result = cli("audit", DATABASE_PATH=str(cli.audit_db))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3
    assert "proposal.approve" in result.stdout and "Ann (@ann)" in result.stdout
    assert _github_token() not in result.stdout


def test_audit_text_shows_why_a_webhook_was_refused(cli: Cli) -> None:
    result = cli("audit", DATABASE_PATH=str(cli.rejections_db))
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert "webhook.rejected" in first and "http 422" in first
    assert "glitchtip: attachments.0.title: Field required (body 0)" in first


def test_audit_survives_a_reader_that_stops_early(cli: Cli) -> None:
    """`remediator audit | head -1`: the reader goes away mid-output; no BrokenPipeError, exit 0."""
    proc = cli.zygote.spawn(["audit"], cwd=cli.workdir, env=_env(cli.workdir, DATABASE_PATH=str(cli.rejections_db)),
                            stdout=PIPE, stderr=PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what head does after one line
    stderr = proc.stderr.read().decode()
    assert proc.wait(RUN_TIMEOUT) == 0, stderr
    assert b"webhook.rejected" in first
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


def test_audit_filters_by_incident(cli: Cli) -> None:
    result = cli("audit", "--json", "--incident", "2", DATABASE_PATH=str(cli.audit_db))
    assert result.returncode == 0, result.stderr
    rows = _json_lines(result.stdout)
    assert [(r["action"], r["incident_id"]) for r in rows] == [("proposal.approve", 2)]


def test_audit_filters_by_date(cli: Cli) -> None:
    future = cli("audit", "--json", "--since", "2999-01-01", DATABASE_PATH=str(cli.audit_db))
    assert future.returncode == 0, future.stderr
    assert future.stdout.strip() == ""
    past = cli("audit", "--json", "--since", "2000-01-01", DATABASE_PATH=str(cli.audit_db))
    assert len(_json_lines(past.stdout)) == 3


def test_audit_bad_date_is_a_usage_error(cli: Cli) -> None:
    result = cli("audit", "--since", "yesterday", DATABASE_PATH=str(cli.audit_db))
    assert result.returncode == 2
    assert "not a date" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- --help


@pytest.mark.parametrize(
    ("command", "names"),
    [
        (("run",), ["TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID", "WEBHOOK_PORT", "DATABASE_PATH", "demo", "exits 2"]),
        (("triage",), ["TEXT", "--file", "standard input", "RULES_FILE", "OWNERS_FILE", "REDACT_PATTERNS"]),
        (("audit",), ["DATABASE_PATH", "REDACT_PATTERNS", "--since", "--incident", "refused webhook"]),
        (("patterns", "check"), ["PATTERNS_FILE", "PATH"]),
        (("patterns", "test"), ["PATTERNS_FILE", "FIX_HOSTS", "--file", "Runs nothing"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_help_of_every_command_says_its_inputs_and_the_settings_it_reads(
    cli: Cli, command: tuple[str, ...], names: list[str]
) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for name in [*names, "--env-file", ".env", "REMEDIATOR_ENV_FILE"]:
        assert name in text, f"{name!r} not in `{' '.join(command)} --help`:\n{result.stdout}"


# --------------------------------------------------------------------------- the local demo




class _Lines:
    """Collects a pipe's lines on a thread so the child never blocks on a full pipe."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, check: Callable[[str], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check("\n".join(self.lines)):
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:  # the process ended: nothing more will come
                    return False
                self._cond.wait(left)
            return True

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


DEMO_TEST = "test_demo_runs_posts_samples_accepts_curl_and_stops_on_ctrl_c"


class _Demo:
    """`remediator run` with no TELEGRAM_BOT_TOKEN, its output collected as it comes."""

    def __init__(self, tmp_path: Path, zygote: ForkedCli) -> None:
        self.port = free_port()
        env = _env(
            tmp_path, WEBHOOK_PORT=str(self.port), DATABASE_PATH=str(tmp_path / "demo.db"),
            # Faster pacing than Telegram's real limits so the test does not wait on it.
            TELEGRAM_RATE_PER_CHAT="50", TELEGRAM_GROUP_PER_MINUTE="1000",
        )
        env.pop("TELEGRAM_API_BASE")  # the demo points the bot at its own emulator
        self.proc = zygote.spawn(["run"], cwd=tmp_path, env=env, stdout=PIPE, stderr=PIPE)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out, self.err = (_Lines(io.TextIOWrapper(pipe, encoding="utf-8"))
                              for pipe in (self.proc.stdout, self.proc.stderr))

    def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module", autouse=True)
def _demo_started_early(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, forked_cli: ForkedCli
) -> Iterator[_Demo | None]:
    """Start the demo at the top of this module when its test is selected.

    Starting the demo takes a while; it boots while the other CLI tests run.
    """
    if not any(item.name == DEMO_TEST for item in request.session.items):
        yield None
        return
    demo = _Demo(tmp_path_factory.mktemp("demo"), forked_cli)
    try:
        yield demo
    finally:
        demo.close()


def test_demo_runs_posts_samples_accepts_curl_and_stops_on_ctrl_c(
    _demo_started_early: _Demo | None, tmp_path: Path, forked_cli: ForkedCli
) -> None:
    demo = _demo_started_early or _Demo(tmp_path, forked_cli)
    out, err, port = demo.out, demo.err, demo.port
    try:
        # A deadline, not a wait: the banner comes once the demo has started (seconds on a busy machine).
        assert out.wait_for(lambda t: "Press Ctrl+C to stop." in t, 60), f"no banner\n{out.text}\n{err.text}"
        banner = out.text
        assert "remediator local demo" in banner
        assert f"http://127.0.0.1:{port}/webhook/generic/demo-webhook-token" in banner

        response = httpx.post(
            f"http://127.0.0.1:{port}/webhook/generic/demo-webhook-token",
            json={"title": "DemoCurlError: it works"}, timeout=10,
        )
        assert response.status_code == 202, response.text

        def shown(text: str) -> bool:
            return (
                text.count("[bot → chat -1001000000001] NEW #") >= 7  # 6 sample cards + the curl one
                and "DemoCurlError: it works" in text
                and "[user 1001 pressed" in text
                and "[bot answered" in text
            )

        assert out.wait_for(shown, 20), f"cards missing\n{out.text}\n{err.text}"
        chat = out.lines
        # Card titles are lines of their own (the banner's curl example mentions the Redis title too).
        for title in (
            REDIS_TITLE,
            "TypeError: Cannot read properties of undefined (reading 'slots')",
            "Error: Cannot find module '@sentry/node'",
            "Error: YClients API rate limit exceeded",
            "Error: ENOSPC: no space left on device, write",
            "Booking API health",
            "DemoCurlError: it works",
        ):
            assert title in chat, f"no card titled {title!r}"
        assert "⛔ Uptime monitor: site is down" in chat
        assert "[ ✅ Approve ] [ 🚫 Reject ]" in chat

        demo.proc.send_signal(signal.SIGINT)
        assert demo.proc.wait(timeout=15) == 0, f"{out.text}\n{err.text}"
        out.join(5)
        err.join(5)
        assert "Traceback" not in err.text
    finally:
        demo.close()
