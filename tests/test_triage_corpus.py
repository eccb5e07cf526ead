"""Accuracy of the rules on real labelled errors, and on a hand-written generalisation set.

The corpus (tests/data/corpus.jsonl, 40 real alerts) is also what the rules were written
against, so `EXTRA` below holds errors written for this test from typical Node.js/Python
production failures (not taken from the corpus) as a check that the rules generalise.
Run with `pytest -s` to see the tables.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bot.models import Alert, AlertKind, Category, Priority
from bot.triage import RuleSet
from tests.labelled import Case, load_cases


def load_corpus() -> list[Case]:
    return load_cases("corpus.jsonl")


def C(id: str, category: str, priority: str, title: str, stacktrace: str = "") -> Case:  # noqa: N802
    return Case(id, title, stacktrace, category, priority)


EXTRA: list[Case] = [
    C(
        "x-sequelize-refused",
        "infrastructure",
        "P0",
        "SequelizeConnectionRefusedError: connect ECONNREFUSED 127.0.0.1:5432",
        "    at Client._connectionCallback (/app/node_modules/sequelize/lib/dialects/postgres/"
        "connection-manager.js:133:24)",
    ),
    C(
        "x-sqla-queuepool",
        "database",
        "P1",
        "sqlalchemy.exc.TimeoutError: QueuePool limit of size 5 overflow 10 reached, connection timed out, "
        "timeout 30.00 (Background on this error at: https://sqlalche.me/e/20/3o7r)",
    ),
    C(
        "x-prisma-table",
        "database",
        "P1",
        "PrismaClientKnownRequestError: Invalid `prisma.user.findMany()` invocation:",
        "PrismaClientKnownRequestError: \nInvalid `prisma.user.findMany()` invocation:\n\n"
        "The table `public.User` does not exist in the current database.\n"
        "    at Hn.handleRequestError (/app/node_modules/@prisma/client/runtime/library.js:121:7753)",
    ),
    C(
        "x-django-relation",
        "database",
        "P1",
        'django.db.utils.ProgrammingError: relation "accounts_profile" does not exist',
        'LINE 1: ...ile"."id", "accounts_profile"."user_id" FROM "accounts_profile"...',
    ),
    C(
        "x-enotfound-postgres",
        "configuration",
        "P0",
        "Error: getaddrinfo ENOTFOUND postgres",
        "    at GetAddrInfoReqWrap.onlookup [as oncomplete] (node:dns:107:26)",
    ),
    C(
        "x-openai-quota",
        "configuration",
        "P1",
        "openai.RateLimitError: Error code: 429 - {'error': {'message': 'You exceeded your current quota, "
        "please check your plan and billing details.', 'type': 'insufficient_quota', 'code': 'insufficient_quota'}}",
    ),
    C(
        "x-anthropic-ratelimit",
        "transient",
        "P3",
        "anthropic.RateLimitError: Error code: 429 - {'type': 'error', 'error': {'type': 'rate_limit_error', "
        "'message': 'Number of request tokens has exceeded your per-minute rate limit'}}",
    ),
    C(
        "x-node-heap",
        "resource",
        "P1",
        "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
        " 1: 0xb090e0 node::Abort() [node]\n 2: 0xa1b70e  [node]\n 3: 0xce1890 v8::Utils::ReportOOMFailure",
    ),
    C("x-emfile", "resource", "P1", "Error: EMFILE: too many open files, open '/app/uploads/tmp/3f2a.png'"),
    C(
        "x-inotify",
        "configuration",
        "P2",
        "Error: ENOSPC: System limit for number of file watchers reached, watch '/app/src'",
    ),
    C(
        "x-celery-sigkill",
        "resource",
        "P1",
        "billiard.exceptions.WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 42.",
    ),
    C("x-kombu-refused", "infrastructure", "P1", "kombu.exceptions.OperationalError: [Errno 111] Connection refused"),
    C(
        "x-eaddrinuse",
        "configuration",
        "P0",
        "Error: listen EADDRINUSE: address already in use :::3000",
        "    at Server.setupListenHandle [as _listen2] (node:net:1817:16)",
    ),
    C(
        "x-log-permission",
        "configuration",
        "P1",
        "PermissionError: [Errno 13] Permission denied: '/var/log/myapp/app.log'",
    ),
    C(
        "x-jwt-expired",
        "security",
        "P3",
        "TokenExpiredError: jwt expired",
        "    at /app/node_modules/jsonwebtoken/verify.js:190:21",
    ),
    C("x-pyjwt-expired", "security", "P3", "jwt.exceptions.ExpiredSignatureError: Signature has expired"),
    C(
        "x-require-esm",
        "dependency",
        "P0",
        "Error [ERR_REQUIRE_ESM]: require() of ES Module /app/node_modules/node-fetch/src/index.js "
        "from /app/src/client.js not supported.",
    ),
    C(
        "x-werkzeug-import",
        "dependency",
        "P0",
        "ImportError: cannot import name 'url_quote' from 'werkzeug.urls' "
        "(/usr/local/lib/python3.11/site-packages/werkzeug/urls.py)",
    ),
    C(
        "x-relative-module",
        "code",
        "P0",
        "Error: Cannot find module './routes/users'",
        "Error: Cannot find module './routes/users'\nRequire stack:\n- /app/src/app.js\n"
        "    at Module._resolveFilename (node:internal/modules/cjs/loader:1145:15)",
    ),
    C("x-no-module-redis", "dependency", "P0", "ModuleNotFoundError: No module named 'redis'"),
    C("x-axios-timeout", "transient", "P3", "AxiosError: timeout of 10000ms exceeded"),
    C(
        "x-requests-503",
        "transient",
        "P2",
        "requests.exceptions.HTTPError: 503 Server Error: Service Unavailable for url: https://api.stripe.com/v1/charges",
    ),
    C(
        "x-socket-hangup",
        "transient",
        "P3",
        "Error: socket hang up",
        "    at connResetException (node:internal/errors:720:14)\n"
        "    at TLSSocket.socketOnEnd (node:_http_client:525:23)",
    ),
    C(
        "x-pg-unique",
        "database",
        "P3",
        'psycopg2.errors.UniqueViolation: duplicate key value violates unique constraint "users_email_key"',
        "DETAIL:  Key (email)=(a@b.c) already exists.",
    ),
    C(
        "x-mongo-dup",
        "database",
        "P3",
        'MongoServerError: E11000 duplicate key error collection: app.users index: email_1 dup key: { email: "x@y.z" }',
    ),
    C("x-py-operand", "code", "P2", "TypeError: unsupported operand type(s) for +: 'int' and 'NoneType'"),
    C(
        "x-js-reference",
        "code",
        "P2",
        "ReferenceError: fetchUser is not defined",
        "    at /app/src/routes/profile.js:22:18",
    ),
    C("x-py-nonetype", "code", "P2", "AttributeError: 'NoneType' object has no attribute 'email'"),
    C(
        "x-pydantic-settings",
        "configuration",
        "P0",
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for Settings",
        "telegram_bot_token\n  Field required [type=missing, input_value={}, input_type=dict]",
    ),
    C(
        "x-ioredis-refused",
        "infrastructure",
        "P1",
        "[ioredis] Unhandled error event: Error: connect ECONNREFUSED 10.0.3.7:6379",
        "    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)",
    ),
    C(
        "x-redis-misconf",
        "resource",
        "P1",
        "redis.exceptions.ResponseError: MISCONF Redis is configured to save RDB snapshots, but it's currently "
        "unable to persist to disk.",
    ),
    C(
        "x-self-signed",
        "configuration",
        "P1",
        "Error: self-signed certificate in certificate chain",
        "    at TLSSocket.onConnectSecure (node:_tls_wrap:1674:34) {\n  code: 'SELF_SIGNED_CERT_IN_CHAIN'\n}",
    ),
    C(
        "x-csrf-origin",
        "configuration",
        "P1",
        "Forbidden (Origin checking failed - https://app.example.com does not match any trusted origins.): /admin/login/",
    ),
    C(
        "x-s3-accessdenied",
        "security",
        "P2",
        "botocore.exceptions.ClientError: An error occurred (AccessDenied) when calling the GetObject operation: "
        "Access Denied",
    ),
    C(
        "x-mongoose-buffering",
        "infrastructure",
        "P1",
        "MongooseError: Operation `sessions.findOne()` buffering timed out after 10000ms",
    ),
    C(
        "x-asyncpg-clients",
        "database",
        "P1",
        "asyncpg.exceptions.TooManyConnectionsError: sorry, too many clients already",
    ),
    C(
        "x-aiohttp-disconnect",
        "transient",
        "P3",
        "aiohttp.client_exceptions.ServerDisconnectedError: Server disconnected",
    ),
    C(
        "x-spawn-ffmpeg",
        "dependency",
        "P1",
        "Error: spawn ffmpeg ENOENT",
        "    at ChildProcess._handle.onexit (node:internal/child_process:284:19)",
    ),
    C(
        "x-sqla-refused",
        "infrastructure",
        "P0",
        'sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection to server at "localhost" '
        "(127.0.0.1), port 5432 failed: Connection refused",
        "\tIs the server running on that host and accepting TCP/IP connections?",
    ),
    C("x-nest-core", "dependency", "P0", "Error: Cannot find module '@nestjs/core'"),
    C(
        "x-aiogram-conflict",
        "configuration",
        "P1",
        "aiogram.exceptions.TelegramConflictError: Telegram server says - Conflict: terminated by other "
        "getUpdates request; make sure that only one bot instance is running",
    ),
    C(
        "x-redis-eai-again",
        "configuration",
        "P0",
        "Error: Redis connection to redis:6379 failed - getaddrinfo EAI_AGAIN redis",
    ),
    C(
        "x-py-ssl-issuer",
        "configuration",
        "P1",
        "ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
        "unable to get local issuer certificate (_ssl.c:1006)",
    ),
    C("x-sqlite-no-table", "database", "P1", "django.db.utils.OperationalError: no such table: django_session"),
    C("x-axios-502", "transient", "P2", "AxiosError: Request failed with status code 502"),
    C(
        "x-knex-deadlock",
        "database",
        "P2",
        'error: update "orders" set "status" = $1 where "id" = $2 - deadlock detected',
    ),
    C("x-gunicorn-timeout", "resource", "P1", "[CRITICAL] WORKER TIMEOUT (pid:8123)"),
    C(
        "x-mysql-denied",
        "configuration",
        "P0",
        "Error: ER_ACCESS_DENIED_ERROR: Access denied for user 'app'@'172.18.0.5' (using password: YES)",
    ),
    C(
        "x-stripe-webhook-sig",
        "security",
        "P1",
        "StripeSignatureVerificationError: No signatures found matching the expected signature for payload.",
    ),
    C(
        "x-typeorm-fk",
        "database",
        "P2",
        'QueryFailedError: insert or update on table "order_item" violates foreign key constraint '
        '"FK_646bf9ece6f45dbe41c203e06e0"',
    ),
]


def triage_all(rules: RuleSet, cases: list[Case]) -> list[tuple[Case, Category, Priority, str | None]]:
    out = []
    for case in cases:
        alert = Alert(
            source="generic",
            kind=AlertKind.ERROR,
            title=case.title,
            fingerprint=case.id,
            stacktrace=case.stacktrace,
            environment=None,
        )
        t = rules.triage(alert)
        out.append((case, t.category, t.priority, t.rule_id))
    return out


def report(name: str, results: list[tuple[Case, Category, Priority, str | None]]) -> dict[str, float]:
    n = len(results)
    cat_ok = [c.category == cat or cat.value in c.alt_categories for c, cat, _, _ in results]
    exact = [c.priority == p.value for c, _, p, _ in results]
    within = [abs(int(c.priority[1]) - p.rank) <= 1 for c, _, p, _ in results]
    per_cat: dict[str, list[bool]] = {}
    for (c, *_), ok in zip(results, cat_ok, strict=True):
        per_cat.setdefault(c.category, []).append(ok)
    print(f"\n== triage accuracy: {name} ({n} cases) ==")
    print(f"{'category accuracy':<28}{sum(cat_ok):>4}/{n:<4}{sum(cat_ok) / n:>8.1%}")
    print(f"{'priority exact':<28}{sum(exact):>4}/{n:<4}{sum(exact) / n:>8.1%}")
    print(f"{'priority within one step':<28}{sum(within):>4}/{n:<4}{sum(within) / n:>8.1%}")
    print("per labelled category: " + ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(per_cat.items())))
    misses = [(c, cat, p, rid) for (c, cat, p, rid), ok in zip(results, cat_ok, strict=True) if not ok]
    for c, cat, p, rid in misses:
        print(f"  MISS {c.id}: labelled {c.category}/{c.priority}, got {cat.value}/{p.value} via {rid}")
    rules_used = Counter(rid or "(none)" for *_, rid in results)
    print(f"distinct rules used: {len(rules_used)}")
    return {
        "category": sum(cat_ok) / n,
        "exact": sum(exact) / n,
        "within_one": sum(within) / n,
    }


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return RuleSet.load()


def test_corpus_accuracy(rules: RuleSet) -> None:
    cases = load_corpus()
    assert len(cases) == 40
    scores = report("corpus.jsonl", triage_all(rules, cases))
    assert scores["category"] >= 0.9
    assert scores["within_one"] >= 0.85


def test_generalisation_set_accuracy(rules: RuleSet) -> None:
    assert len({c.id for c in EXTRA}) == len(EXTRA) >= 25
    scores = report("hand-written extra set", triage_all(rules, EXTRA))
    assert scores["category"] >= 0.9
    assert scores["within_one"] >= 0.85


def test_corpus_is_not_matched_one_rule_per_case(rules: RuleSet) -> None:
    # General rules: many corpus cases share a rule (guards against overfitting drift).
    used = {rid for *_, rid in triage_all(rules, load_corpus())}
    assert len(used) <= 30
