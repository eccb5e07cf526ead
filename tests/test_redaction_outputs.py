"""Secrets never leave through the command line, a rule's cause or the process log.

`remediator triage` runs as a user runs it (its own process, explicit environment, no `.env`;
forked from the worker's preloaded interpreter, tests/forked_cli.py),
on alerts carrying the shapes of secret the redactor used to miss. Fake credentials are
assembled at runtime so secret scanners do not flag this file.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from bot.logs import RedactingFilter, configure_logging
from bot.models import Alert, AlertKind
from bot.redact import MASK, Redactor
from bot.settings import Settings
from bot.triage import RuleSet
from tests.forked_cli import ForkedCli

REPO = Path(__file__).resolve().parent.parent
SETTING_NAMES = {name.upper() for name in Settings.model_fields}

REDIS_PASSWORD = "MyS3cretRedisPass"
# With it, the captured URL is longer than the 80 characters a cause keeps of a value (and
# within the 120 the rule captures): a cut before redaction would leave its head.
LONG_PASSWORD = REDIS_PASSWORD + "x7" * 21
AZURE_KEY = "Zm9vYmFy" * 11 + "=="
SLACK_REFRESH = "xoxe-1-" + "My0aBcD3" * 12
HF_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz" + "q1W2e3R4"
SHOPIFY_TOKEN = "shpat_" + "0a1b2c3d" * 4
TWILIO_KEY = "SK" + "9f8e7d6c" * 4
MAILGUN_KEY = "key-" + "1a2b3c4d" * 4
DO_TOKEN = "dop_v1_" + "5e6f7a8b" * 8


def _alert_lines() -> list[tuple[dict[str, str], list[str]]]:
    """(generic alert, the secrets it carries)."""
    return [
        (
            {"title": f"Cannot connect to redis://default:{REDIS_PASSWORD}@redis.internal:6379", "project": "api"},
            [REDIS_PASSWORD],
        ),
        (
            {"title": f"Error: Redis connection to redis://default:{LONG_PASSWORD}@redis.internal:6379 failed"},
            [REDIS_PASSWORD, LONG_PASSWORD[17:40]],
        ),
        (
            {"title": f"StorageError: DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={AZURE_KEY};x=1"},
            [AZURE_KEY, AZURE_KEY[:16]],
        ),
        ({"title": "OperationalError: postgres://app:pa/ss#w?rd'x@db:5432/app refused"}, ["pa/ss#w?rd'x", "w?rd"]),
        ({"title": "ConnectionError: redis://:my S3cret pass@cache:6379/0"}, ["S3cret"]),
        ({"title": "subprocess failed: mysqldump -h db -u root -pMyDumpS3cret app"}, ["MyDumpS3cret"]),
        ({"title": "curl -sf -u deploy:CurlS3cret42 https://api.example.com exited 22"}, ["CurlS3cret42"]),
        ({"title": "sh: backup --password Backup5ecret failed", "message": "DB_PASS=EnvS3cret PASS=Plain5ecret"},
         ["Backup5ecret"]),
        ({"title": "GET /cb?state=%7B%22password%22%3A%22UrlEncS3cret%22%7D 500"}, ["UrlEncS3cret"]),
        ({"title": "TemplateError near {&quot;password&quot;:&quot;HtmlS3cret&quot;}"}, ["HtmlS3cret"]),
        ({"title": f"slack token {SLACK_REFRESH} expired"}, [SLACK_REFRESH[7:30]]),
        ({"title": f"401 from hub with {HF_TOKEN} and {DO_TOKEN}"}, [HF_TOKEN[3:], DO_TOKEN[7:]]),
        ({"title": f"vendor keys {SHOPIFY_TOKEN} {TWILIO_KEY} {MAILGUN_KEY} rejected"},
         [SHOPIFY_TOKEN[6:], TWILIO_KEY[2:], MAILGUN_KEY[4:]]),
    ]


def _env(workdir: Path) -> dict[str, str]:
    """The current environment minus every remediator setting."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env["PYTHONPATH"] = str(REPO)
    env["DATABASE_PATH"] = str(workdir / "remediator.db")
    env.pop("PYTHONSTARTUP", None)
    return env


@pytest.fixture(scope="module")
def alerts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("triage") / "secrets.jsonl"
    path.write_text("\n".join(json.dumps(alert) for alert, _ in _alert_lines()) + "\n", encoding="utf-8")
    return path


Triaged = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def triaged(forked_cli: ForkedCli, alerts_file: Path) -> Triaged:
    """`remediator triage ARGS --file <the alerts>`, each its own process forked from the worker's
    preloaded interpreter (tests/forked_cli.py); a run two tests read is made once."""

    @functools.cache
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        workdir = alerts_file.parent
        return forked_cli.run(["triage", *args, "--file", str(alerts_file)], cwd=workdir, env=_env(workdir),
                              stdin="", timeout=60)

    return run


@pytest.mark.parametrize("mode", [("--json",), ()], ids=["json", "text"])
def test_triage_cli_prints_no_secret(triaged: Triaged, mode: tuple[str, ...]) -> None:
    result = triaged(*mode)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for alert, secrets in _alert_lines():
        for secret in secrets:
            assert secret not in output, (alert["title"], secret)
    assert MASK in result.stdout


def test_triage_cli_cause_keeps_the_host_and_masks_the_password(triaged: Triaged) -> None:
    result = triaged("--json")
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    redis = [r for r in records if r["rule_id"] == "infra.redis-down"]
    assert len(redis) == 2
    for record in redis:
        assert f"{MASK}@redis.internal:6379" in record["likely_cause"], record["likely_cause"]
        assert REDIS_PASSWORD not in record["likely_cause"]


# ----------------------------------------------------------- a rule's cause alone


def _raw_alert(title: str) -> Alert:
    return Alert(source="generic", kind=AlertKind.ERROR, title=title, fingerprint="f")


@pytest.mark.parametrize(
    "title",
    [
        f"Cannot connect to redis://default:{REDIS_PASSWORD}@redis.internal:6379",  # value has no scheme
        f"Error: Redis connection to redis://default:{LONG_PASSWORD}@redis.internal:6379 failed",  # value > 80
    ],
    ids=["scheme-outside-the-value", "longer-than-the-cut"],
)
def test_cause_of_an_unredacted_alert_carries_no_secret(title: str) -> None:
    """Defence in depth: even given raw text, a rule's cause masks a captured value before cutting it."""
    triage = RuleSet.load().triage(_raw_alert(title))
    assert triage.rule_id == "infra.redis-down"
    assert REDIS_PASSWORD[:6] not in triage.likely_cause
    assert "redis.internal" in triage.likely_cause or MASK in triage.likely_cause


def test_cause_of_an_ordinary_alert_is_unchanged() -> None:
    triage = RuleSet.load().triage(_raw_alert("Error: Redis connection to 10.0.3.7:6379 failed - connect ECONNREFUSED"))
    assert triage.likely_cause.startswith("Redis (10.0.3.7:6379) is down")


# ------------------------------------------------------------------- the process log


@pytest.fixture
def log_stream() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger with a real handler and the redacting filter, detached from the root."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter(Redactor()))
    logger = logging.getLogger("tests.redaction_outputs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.handlers.clear()


def test_log_arguments_are_masked(log_stream: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log_stream
    logger.warning("storage refused %s (retry %d)", f"AccountKey={AZURE_KEY}", 3)
    logger.info("ran %r", ["mysql", "-uroot", "-pLogS3cret", "app"])
    logger.info("mysql -u root -pInlineS3cret app exited 1")
    out = stream.getvalue()
    assert AZURE_KEY[:16] not in out and "LogS3cret" not in out and "InlineS3cret" not in out
    assert f"storage refused AccountKey={MASK} (retry 3)" in out


def _module_with_a_secret_in_its_source(tmp_path: Path) -> ModuleType:
    """A module whose source line holds a credential: tracebacks and stacks quote that line."""
    source = tmp_path / "legacy_client.py"
    source.write_text(
        "def connect(logger):\n"
        f"    dsn = 'redis://:{REDIS_PASSWORD}@cache:6379'; logger.warning('connecting', stack_info=True)\n"
        "\n"
        "def fail():\n"
        f"    raise ConnectionError('refused'); dsn = 'redis://:{REDIS_PASSWORD}@cache:6379'\n",
        encoding="utf-8",
    )
    spec = importlib.util.spec_from_file_location("legacy_client", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_log_traceback_and_stack_are_masked(log_stream: tuple[logging.Logger, io.StringIO], tmp_path: Path) -> None:
    logger, stream = log_stream
    legacy = _module_with_a_secret_in_its_source(tmp_path)
    try:
        legacy.fail()
    except ConnectionError:
        logger.exception("pipeline row failed")
    legacy.connect(logger)
    out = stream.getvalue()
    assert "Traceback" in out and "ConnectionError: refused" in out
    assert "Stack (most recent call last)" in out and "legacy_client.py" in out
    assert "redis://:[REDACTED]@cache:6379" in out
    assert REDIS_PASSWORD not in out


def test_a_log_call_whose_arguments_do_not_fit_neither_raises_nor_leaks(
    log_stream: tuple[logging.Logger, io.StringIO], capsys: pytest.CaptureFixture[str]
) -> None:
    """Left to logging, a bad format is reported by printing the raw arguments to stderr."""
    logger, stream = log_stream
    logger.error("login failed for %s with %s", f"password={REDIS_PASSWORD}")  # one argument short
    out = stream.getvalue() + capsys.readouterr().err
    assert "login failed" in out
    assert REDIS_PASSWORD not in out


def test_configure_logging_installs_the_filter_for_every_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's set-up: a record from any module's logger reaches the output masked."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)  # the handler writes to stderr
    try:
        configure_logging("INFO", Redactor())
        logging.getLogger("bot.pipeline").warning("connect failed: curl -u ops:CurlLogS3cret https://x")
    finally:
        root.handlers[:], root.level = saved_handlers, saved_level
    out = stream.getvalue()
    assert "connect failed: curl -u ops:" in out
    assert "CurlLogS3cret" not in out
