"""The default allow-list on real labelled errors: zero false positives, high recall.

A held-out set of the same kind measures the project, so the regexes in default.toml are
general (error shapes plus excludes for the near-miss classes), and the extra cases below,
written independently of the corpus, check that they generalise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.models import Alert, AlertKind
from patterns import PatternSet, load_patterns

CORPUS = Path(__file__).parent / "data" / "corpus.jsonl"
FIX_PATTERNS = ("restart_redis", "restart_service", "npm_install_missing", "pip_install_missing", "cleanup_disk")
NO_FIX = ("none", "retry_transient")  # retry_transient carries no action: it must match nothing


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    stacktrace: str
    label: str
    acceptable: frozenset[str]  # the label plus alt_acceptable safe_pattern values

    def alert(self) -> Alert:
        return Alert(source="generic", kind=AlertKind.ERROR, title=self.title, fingerprint=self.id,
                     stacktrace=self.stacktrace)


def load_corpus() -> list[Case]:
    cases = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        alt = row.get("alt_acceptable", {}).get("safe_pattern", [])
        cases.append(Case(row["id"], row["title"], row.get("stacktrace", ""), row["safe_pattern"],
                          frozenset({row["safe_pattern"], *alt})))
    return cases


def matched_id(pset: PatternSet, case: Case) -> str:
    m = pset.match(case.alert())
    if m is None:
        return "none"
    assert m.runnable and m.argv
    return m.pattern.id


def score(pset: PatternSet, cases: list[Case]) -> tuple[float, list[str], list[str]]:
    """(share of fix-labelled cases matched by an acceptable pattern, false positives, misses)."""
    positives = [c for c in cases if c.label in FIX_PATTERNS]
    hits, false_positives, misses = 0, [], []
    for case in cases:
        got = matched_id(pset, case)
        if got != "none" and got not in case.acceptable:
            false_positives.append(f"{case.id}: labelled {case.label}, matched {got}")
        if case.label in FIX_PATTERNS:
            if got in case.acceptable:
                hits += 1
            else:
                misses.append(f"{case.id}: labelled {case.label}, matched {got}")
    return (hits / len(positives) if positives else 1.0), false_positives, misses


@pytest.fixture(scope="module")
def pset() -> PatternSet:
    return load_patterns()


def test_corpus_zero_false_positives_and_recall(pset: PatternSet) -> None:
    cases = load_corpus()
    assert len(cases) >= 40
    share, false_positives, misses = score(pset, cases)
    positives = sum(1 for c in cases if c.label in FIX_PATTERNS)
    print(f"\n[patterns corpus] matched by labelled pattern: {share:.2f} "
          f"({round(share * positives)}/{positives}); false positives: {len(false_positives)} "
          f"of {len(cases) - positives} no-fix cases")
    for miss in misses:
        print(f"  miss: {miss}")
    assert false_positives == []
    assert share >= 0.8


def test_retry_transient_cases_match_nothing(pset: PatternSet) -> None:
    for case in load_corpus():
        if case.label == "retry_transient":
            assert pset.match(case.alert()) is None, case.id


# Written from the error formats of the clients, not from the corpus: positives and the
# near-miss classes the corpus README describes.
EXTRA: list[tuple[str, str, str, str]] = [
    # (expected pattern or none, title, stacktrace, expected first argv's last element or "")
    ("restart_redis", "Error: connect ECONNREFUSED 127.0.0.1:6379",
     "    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)", "redis-server"),
    ("restart_redis", "kombu.exceptions.OperationalError: Error 111 connecting to localhost:6379. Connection refused.",
     "", "redis-server"),
    ("restart_redis", "consumer: Cannot connect to redis://localhost:6379/0: Error 111 connecting to "
     "localhost:6379. Connection refused..", "", "redis-server"),
    ("none", "Error: Redis connection to 10.0.3.7:6379 failed - connect ECONNREFUSED 10.0.3.7:6379", "", ""),
    ("none", "redis.exceptions.ConnectionError: Error -2 connecting to redis:6379. Name or service not known.",
     "", ""),
    ("none", "redis.sentinel.MasterNotFoundError: No master found for 'mymaster'", "", ""),
    ("none", "Error: connect ECONNREFUSED ::1:6379", "", ""),
    ("restart_service", "psycopg2.OperationalError: connection to server at \"localhost\" (127.0.0.1), port 5432 "
     "failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
     "", "postgresql"),
    ("restart_service", "django.db.utils.OperationalError: could not connect to server: No such file or "
     "directory\n\tIs the server running locally and accepting\n\tconnections on Unix domain socket "
     "\"/var/run/postgresql/.s.PGSQL.5432\"?", "", "postgresql"),
    ("restart_service", "pymongo.errors.ServerSelectionTimeoutError: localhost:27017: [Errno 111] Connection "
     "refused", "", "mongod"),
    ("restart_service", "Error: EMFILE: too many open files, open '/srv/app/public/index.html'", "", "pm2-root"),
    ("restart_service", "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory", "",
     "pm2-root"),
    ("restart_service", "OSError: Multiple exceptions: [Errno 111] Connect call failed ('::1', 5432, 0, 0), "
     "[Errno 111] Connect call failed ('127.0.0.1', 5432)", "", "postgresql"),
    ("restart_service", "consumer: Cannot connect to amqp://guest:**@localhost//: [Errno 111] Connection refused.",
     "", "rabbitmq-server"),
    ("none", "Error: EMFILE: too many open files, watch", "", ""),
    ("none", "psycopg2.OperationalError: FATAL:  the database system is starting up", "", ""),
    ("none", "psycopg2.OperationalError: could not connect to server: Connection refused\n\tIs the server "
     "running on host \"db\" (172.18.0.2) and accepting\n\tTCP/IP connections on port 5432?", "", ""),
    ("none", "MongooseServerSelectionError: connect ECONNREFUSED ::1:27017", "", ""),
    ("npm_install_missing", "Error [ERR_MODULE_NOT_FOUND]: Cannot find package '@aws-sdk/client-s3' imported "
     "from /srv/app/src/storage.js", "", "@aws-sdk/client-s3"),
    ("npm_install_missing", "Error: Cannot find module 'lodash/fp'", "Require stack:\n- /srv/app/index.js",
     "lodash"),
    ("npm_install_missing", "Error: Cannot find module '/srv/app/node_modules/@babel/runtime/helpers/"
     "interopRequireDefault'", "", "@babel/runtime"),
    ("npm_install_missing", "Error: Cannot find module './lib/express'",
     "Require stack:\n- /srv/app/node_modules/express/index.js\n- /srv/app/server.js", "express"),
    ("none", "Error: Cannot find module '@/components/Button'", "", ""),
    ("none", "Error: Cannot find module './routes/api'", "Require stack:\n- /srv/app/server.js", ""),
    ("none", "Error: Cannot find module 'fs/promises'", "", ""),
    ("none", "Error: Cannot find module 'utils/logger'", "Require stack:\n- /srv/app/dist/index.js", ""),
    ("none", "src/index.ts(3,20): error TS2307: Cannot find module 'foo' or its corresponding type declarations.",
     "", ""),
    ("pip_install_missing", "ModuleNotFoundError: No module named 'yaml'", "", "PyYAML"),
    ("pip_install_missing", "ImportError: No module named MySQLdb", "", "mysqlclient"),
    ("pip_install_missing", "django.core.exceptions.ImproperlyConfigured: Error loading MySQLdb module.\n"
     "Did you install mysqlclient?", "", "mysqlclient"),
    ("none", "django.core.exceptions.ImproperlyConfigured: Error loading psycopg2 module: libpq.so.5: cannot "
     "open shared object file: No such file or directory", "", ""),
    ("pip_install_missing", "RuntimeError: Failed to import transformers.pipelines because of the following "
     "error (look up to see its traceback):\nNo module named 'torch'", "", "torch"),
    ("none", "ModuleNotFoundError: No module named 'django.utils.six'", "", ""),
    ("none", "ModuleNotFoundError: No module named 'settings'", "", ""),
    ("none", "ModuleNotFoundError: No module named 'app/main'", "", ""),
    ("none", "ModuleNotFoundError: No module named 'requests.adapters'; 'requests' is not a package", "", ""),
    ("none", "ModuleNotFoundError: No module named 'urllib2'", "", ""),
    ("cleanup_disk", "Error: ENOSPC: no space left on device, write", "    at Logger.write (src/lib/logger.js)",
     "--vacuum-size=500M"),
    ("cleanup_disk", "OSError: [Errno 28] No space left on device: '/var/log/app/app.log'", "",
     "--vacuum-size=500M"),
    ("none", "Error: ENOSPC: System limit for number of file watchers reached, watch '/srv/app/src'", "", ""),
    ("none", "ERROR: could not resize shared memory segment \"/PostgreSQL.123\" to 8388608 bytes: No space left "
     "on device", "", ""),
    ("none", "OSError: [Errno 28] No space left on device: '/mnt/data/uploads/photo.jpg'", "", ""),
    ("none", "AxiosError: Request failed with status code 503", "", ""),
    ("none", "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.stripe.com', port=443): Max "
     "retries exceeded with url: /v1/charges (Caused by NewConnectionError('<urllib3.connection."
     "HTTPSConnection object at 0x7f>: Failed to establish a new connection: [Errno 111] Connection refused'))",
     "", ""),
]


@pytest.mark.parametrize("expected, title, stacktrace, last_arg", EXTRA, ids=[e[1][:50] for e in EXTRA])
def test_extra_cases_generalise(pset: PatternSet, expected: str, title: str, stacktrace: str,
                                last_arg: str) -> None:
    m = pset.match(Alert(source="generic", kind=AlertKind.ERROR, title=title, fingerprint="x",
                         stacktrace=stacktrace))
    assert (m.pattern.id if m else "none") == expected
    if m is not None:
        assert m.argv[0][-1] == last_arg


def test_extra_cases_summary(pset: PatternSet) -> None:
    cases = [Case(f"extra-{i}", t, s, e, frozenset({e})) for i, (e, t, s, _) in enumerate(EXTRA)]
    share, false_positives, _ = score(pset, cases)
    print(f"\n[patterns extra] matched: {share:.2f}; false positives: {len(false_positives)} "
          f"of {sum(1 for c in cases if c.label in NO_FIX)} near-misses")
    assert false_positives == [] and share == 1.0
