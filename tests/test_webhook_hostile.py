"""Hostile clients against the real webhook: the aiohttp server on 127.0.0.1 and real SQLite.

Strangers leave no rows, slow clients are cut off, a flood of connections neither locks a real
sender out nor fills the log, and no body of any shape gets a 5xx or takes long to answer.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import gzip
import json
import logging
import random
import sys
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web

from bot.ingest import MAX_DEPTH, MAX_ISSUES_PER_BODY, MESSAGE_MAX, STACK_MAX, TITLE_MAX, PayloadError, parse_payload
from bot.web import WebhookLimits, WebhookServer
from storage.audit import AuditRepository
from storage.db import Database
from tests.conftest import WEBHOOK_TOKEN, eventually, glitchtip_sample

REPO = Path(__file__).resolve().parent.parent
Serve = Callable[..., Awaitable[WebhookServer]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """Start a WebhookServer (real aiohttp, real SQLite) with the given limits."""
    started: list[WebhookServer] = []

    async def start(**limits: Any) -> WebhookServer:
        db = Database(tmp_path / f"webhook-{len(started)}.db")
        await db.connect()
        server = WebhookServer(db, WEBHOOK_TOKEN, limits=WebhookLimits(**limits))
        await server.start("127.0.0.1", 0)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()
        await server.db.close()


def url(server: WebhookServer, source: str = "generic", token: str = WEBHOOK_TOKEN) -> str:
    return f"http://127.0.0.1:{server.port}/webhook/{source}/{token}"


async def count_rows(server: WebhookServer, table: str) -> int:
    row = await server.db.fetchone(f"SELECT COUNT(*) FROM {table}")
    assert row is not None
    return int(row[0])


def web_log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the webhook server logged, apart from the line saying where it listens."""
    return [r.getMessage() for r in caplog.records
            if r.name.startswith(("bot.web", "aiohttp", "asyncio")) and "listening on" not in r.getMessage()]


# --------------------------------------------------------------------------- strangers and loops


async def test_three_hundred_wrong_token_requests_write_no_row_and_one_log_line(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await serve()
    body = glitchtip_sample("issue_alert_v1.json")
    # aiohttp's client: four times faster than httpx here, and the test is about the server.
    # Twenty strangers at once: the tally is hit concurrently; the log stays at one line a minute
    # whatever the count (a flood of any size within the minute proves it as well as 300 do).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20)) as session:

        async def stranger(first: int) -> None:
            for i in range(first, first + 15):
                # Guessed tokens, and the right token on a source that does not exist.
                target = url(server, "glitchtip", f"guess-{i:06d}") if i % 10 else url(server, "sentry")
                async with session.post(target, data=body) as response:
                    assert response.status == 404

        await asyncio.gather(*(stranger(k * 15) for k in range(20)))
        async with session.get(f"http://127.0.0.1:{server.port}/healthz") as response:
            health = await response.json()
    assert await count_rows(server, "audit") == 0
    assert await count_rows(server, "inbox") == 0
    assert health["rejected"]["not_found"] == 300
    lines = web_log_lines(caplog)
    assert len(lines) == 1 and "not_found" in lines[0], lines  # the first at once; the rest in a minute


async def test_a_sender_looping_on_bad_bodies_gets_ten_audit_rows_a_minute_then_one_summary(serve: Serve) -> None:
    server = await serve()
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(25):  # ten rows, then fifteen that only the summary counts
            assert (await client.post(url(server), json={"message": "no title"})).status_code == 422
    rows = await AuditRepository(server.db).list()
    assert [r.outcome for r in rows] == ["http 422"] * 10
    await server.stop()  # ends the minute early: what was not audited one by one is summed up
    rows = await AuditRepository(server.db).list()
    assert len(rows) == 11
    assert rows[-1].detail["counts"] == {"http 422": 15} and "15 more refused" in rows[-1].outcome


async def test_a_five_thousand_issue_body_is_refused_at_once_naming_the_limit(serve: Serve) -> None:
    server = await serve()
    attachments = [{"title": f"Error: boom {i}", "title_link": f"https://glitchtip.example.com/acme/issues/{i}"}
                   for i in range(5000)]
    body = json.dumps({"text": "GlitchTip Alert (5000 issues)", "attachments": attachments}).encode()
    assert 300_000 < len(body) < 1024 * 1024
    async with httpx.AsyncClient(timeout=10) as client:
        started = time.monotonic()
        response = await client.post(url(server, "glitchtip"), content=body)
        elapsed = time.monotonic() - started
    assert response.status_code == 422
    assert f"at most {MAX_ISSUES_PER_BODY} issues per body" in response.json()["error"]
    assert elapsed < 1.0
    assert await count_rows(server, "inbox") == 0


async def test_the_parsed_body_is_handed_to_the_pipeline_with_its_inbox_id(tmp_path: Path) -> None:
    db = Database(tmp_path / "handover.db")
    await db.connect()
    handed: list[tuple[int, list[str]]] = []
    server = WebhookServer(db, WEBHOOK_TOKEN, on_parsed=lambda row, parsed: handed.append(
        (row, [a.title for a in parsed.alerts])))
    await server.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(url(server, "glitchtip"), content=glitchtip_sample("issue_alert_batch.json"))
        assert response.status_code == 202
        [(row, titles)] = handed
        assert row == response.json()["inbox_id"] and len(titles) == 3
    finally:
        await server.stop()
        await db.close()


# --------------------------------------------------------------------------- slow and many connections

HEAD_START = f"POST /webhook/generic/{WEBHOOK_TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()


async def open_slow_client(server: WebhookServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has sent the start of a request head and nothing more."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(HEAD_START)
    await writer.drain()
    return reader, writer


async def drip(writer: asyncio.StreamWriter, every_s: float) -> None:
    """Slowloris: one more header line every `every_s`, for as long as the server keeps the connection."""
    try:
        while True:
            await asyncio.sleep(every_s)
            writer.write(b"X-Drip: 1\r\n")
            await writer.drain()
    except (ConnectionError, OSError):
        return


async def closed_after(reader: asyncio.StreamReader, started: float, timeout: float) -> float:
    """Seconds from `started` until the server closed the connection (inf if it did not in time)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return float("inf")
    except (ConnectionError, OSError):
        pass
    return time.monotonic() - started


async def test_slow_clients_are_cut_off_at_the_header_deadline_and_cost_one_log_line(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await serve(header_timeout=1.0)
    started = time.monotonic()
    clients = [await open_slow_client(server) for _ in range(50)]
    drips = [asyncio.create_task(drip(writer, 0.2)) for _, writer in clients]
    closed = await asyncio.gather(*(closed_after(reader, started, timeout=6) for reader, _ in clients))
    for task in drips:
        task.cancel()
    assert max(closed) < 3.0, f"slowest closed after {max(closed):.1f} s"
    assert server.connections["open"] == 0
    async with httpx.AsyncClient(timeout=10) as client:
        health = (await client.get(f"http://127.0.0.1:{server.port}/healthz")).json()
    assert health["rejected"]["slow_headers"] == 50
    assert len(web_log_lines(caplog)) == 1


async def test_at_the_connection_limit_a_real_sender_still_gets_in_and_nothing_is_logged_per_connection(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await serve(max_connections=16, header_timeout=60)
    clients = [await open_slow_client(server) for _ in range(100)]  # six times the limit
    await asyncio.sleep(0.05)
    assert server.connections["open"] <= 16
    async with httpx.AsyncClient(timeout=10) as client:
        started = time.monotonic()
        response = await client.post(url(server), json={"title": "RuntimeError: the real alert"})
        elapsed = time.monotonic() - started
    assert response.status_code == 202 and elapsed < 1.0
    assert server.connections["open"] <= 16 and server.connections["dropped_idle"] >= 85
    assert web_log_lines(caplog) == []  # waiting connections dropped for room are counted, not logged
    for _, writer in clients:
        writer.close()


async def test_when_every_connection_is_mid_request_a_new_one_is_refused_at_once(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiohttp lingers on a refused body before closing (LINGER_S); its length is not the claim here.
    monkeypatch.setattr("bot.web.LINGER_S", 0.2)
    server = await serve(max_connections=4, body_timeout=1.0)
    busy = []
    for _ in range(4):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(HEAD_START + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        busy.append((reader, writer))
    await asyncio.sleep(0.2)  # their heads are in; they are reading bodies that will not come
    async with httpx.AsyncClient(timeout=10) as client:
        started = time.monotonic()
        try:
            status = (await client.post(url(server), json={"title": "RuntimeError: refused"})).status_code
        except httpx.TransportError:
            status = 0  # closed before the 503 could be read: refused all the same
        assert status in (0, 503) and time.monotonic() - started < 0.5
        answers = [await asyncio.wait_for(reader.read(), 5) for reader, _ in busy]
        assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers)
        response = await client.post(url(server), json={"title": "RuntimeError: after the slow ones"})
        assert response.status_code == 202
        health = (await client.get(f"http://127.0.0.1:{server.port}/healthz")).json()
    assert health["rejected"]["slow_body"] == 4 and health["rejected"]["connection_limit"] >= 1


async def test_fifty_malformed_requests_cost_a_few_log_lines_not_fifty_tracebacks(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await serve()
    for i in range(50):  # ten times the five lines a minute the log lets through
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"POST /webhook/generic/x HTTP/1.1\r\nHost: a\r\nBad Header {i}\r\n\r\n".encode())
        assert b" 400 Bad Request" in await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert 1 <= len(web_log_lines(caplog)) <= 5


async def test_a_gzip_bomb_is_refused_quickly_and_the_sender_told_to_reconnect(serve: Serve) -> None:
    server = await serve()
    # 16 MiB of zeros in 16 KB: sixteen times the body limit once inflated (the server refuses at
    # 1 MiB and closes the connection without reading the rest; see the test below for its cost).
    bomb = gzip_bomb(b'{"title": "', mib_of_zeros=16)
    async with httpx.AsyncClient(timeout=10) as client:
        started = time.monotonic()
        response = await client.post(url(server), content=bomb, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 413 and response.headers["Connection"] == "close"
        assert time.monotonic() - started < 3.0
        fine = await client.post(url(server), content=gzip.compress(b'{"title": "ok"}'),
                                 headers={"Content-Encoding": "gzip"})
        assert fine.status_code == 202


def gzip_bomb(start: bytes, mib_of_zeros: int) -> bytes:
    """A valid gzip stream: `start`, then `mib_of_zeros` MiB of zero bytes, in about 1 KB per MiB.

    Each MiB is compressed once after a full flush (which resets the compressor's history), so its
    compressed bytes are the same every time and are repeated rather than computed 64 times over
    (a third of a second of CPU); the trailer's CRC and size are those of the whole content.
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip
    head = packer.compress(start) + packer.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(1 << 20)
    one_mib = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    last_block = packer.flush()[:-8]  # without the trailer, which describes only what was compressed here
    crc = zlib.crc32(start)
    for _ in range(mib_of_zeros):
        crc = zlib.crc32(zeros, crc)
    size = (len(start) + mib_of_zeros * len(zeros)) % (1 << 32)
    return head + one_mib * mib_of_zeros + last_block + crc.to_bytes(4, "little") + size.to_bytes(4, "little")


async def test_a_plain_body_far_over_the_limit_still_gets_its_413_not_a_reset(serve: Serve) -> None:
    """A plain body is read and dropped after the 413, not cut off: closing while the sender is still
    uploading made the kernel reset the connection, and httpx lost the answer (8 MiB, 3 of 3)."""
    server = await serve()
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(2):
            response = await client.post(url(server), content=b'{"title": "' + b"x" * (8 << 20) + b'"}')
            assert response.status_code == 413 and response.headers["Connection"] == "close"
        assert (await client.post(url(server), json={"title": "fine"})).status_code == 202


def test_the_gzip_bomb_builder_makes_a_well_formed_gzip_of_its_zeros() -> None:
    """The bomb the test above sends is what it claims to be; three MiB show it as well as 16."""
    assert gzip.decompress(gzip_bomb(b'{"title": "', mib_of_zeros=3)) == b'{"title": "' + bytes(3 << 20)
    assert len(gzip_bomb(b"", mib_of_zeros=16)) < 20_000


@pytest.mark.parametrize(("token", "answer"), [(WEBHOOK_TOKEN, b"HTTP/1.1 413 "), ("stranger", b"HTTP/1.1 404 ")],
                         ids=["right token", "stranger"])
async def test_a_refused_gzip_bomb_is_not_inflated_to_its_end_token_or_not(
    tmp_path: Path, token: str, answer: bytes
) -> None:
    """64 MiB of zeros in 66 KB: inflating it all took the server a quarter of a second of CPU each time
    (it read the rest of a refused body before closing), for anyone who cared to send it, token or not."""
    server = WebhookServer(Database(tmp_path / "bomb.db"), WEBHOOK_TOKEN)
    bodies: list[aiohttp.StreamReader] = []

    async def keep_body(request: web.Request, _: web.StreamResponse) -> None:
        bodies.append(request.content)

    server.app.on_response_prepare.append(keep_body)
    await server.db.connect()
    await server.start("127.0.0.1", 0)
    bomb = bomb_of_64_mib()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        cpu_before = time.process_time()
        writer.write(f"POST /webhook/generic/{token} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: gzip\r\n"
                     f"Content-Length: {len(bomb)}\r\n\r\n".encode() + bomb)
        try:
            reply = await asyncio.wait_for(reader.read(), 3)  # to its end: the server closed the connection
        except TimeoutError:
            reply = b"(nothing: the connection was still open after 3 s)"
        cpu = time.process_time() - cpu_before
        writer.close()
    finally:
        await server.stop()
        await server.db.close()
    inflated = bodies[0].total_bytes
    assert inflated < 8 << 20, f"inflated {inflated / (1 << 20):.0f} MiB of a refused body"
    assert cpu < 0.1, f"{cpu:.2f} s of CPU for one refused bomb"
    assert reply.startswith(answer) and b"Connection: close" in reply, reply[:200]


@functools.cache
def bomb_of_64_mib() -> bytes:
    """Built once for both runs above (its CRC alone is 64 MiB of work)."""
    return gzip_bomb(b'{"title": "', mib_of_zeros=64)


SERVER_WITH_128_FILES = """
import asyncio, logging, resource, sys
from pathlib import Path

resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from bot.web import WebhookLimits, WebhookServer
from storage.db import Database

async def main():
    db = Database(Path(sys.argv[1]))
    await db.connect()
    server = WebhookServer(db, sys.argv[2], limits=WebhookLimits(header_timeout=1.0))
    await server.start("127.0.0.1", 0)
    print(server.port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_two_hundred_slow_connections_against_a_128_file_limit_neither_block_a_sender_nor_fill_the_log(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SERVER_WITH_128_FILES, str(tmp_path / "limited.db"), WEBHOOK_TOKEN,
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=log_file,
        )
    clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), 30))
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):  # more than the 128 files, three times the 64 connections the server allows
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(HEAD_START)
            clients.append((reader, writer))
        drips = [asyncio.create_task(drip(writer, 0.25)) for _, writer in clients]
        async with httpx.AsyncClient(timeout=5) as client:
            # Past one header deadline (the server has cut dripping heads off), while the drips go on.
            await eventually(lambda: client.get(f"{base}/healthz"),
                             until=lambda r: r.json()["rejected"]["slow_headers"] > 0, timeout=10)
            started = time.monotonic()
            response = await client.post(f"{base}/webhook/generic/{WEBHOOK_TOKEN}", json={"title": "OSError: real"})
            elapsed = time.monotonic() - started
            health = (await client.get(f"{base}/healthz")).json()
        for task in drips:
            task.cancel()
        assert response.status_code == 202 and elapsed < 2.0
        assert health["connections"]["max"] == 64  # half of the 128 files
    finally:
        for _, writer in clients:
            writer.close()
        proc.terminate()
        await proc.wait()
    log = log_path.read_text(errors="replace")
    assert "Too many open files" not in log and "out of system resource" not in log
    assert len(log.splitlines()) <= 5, log[:2000]


# --------------------------------------------------------------------------- any body: 4xx, never 5xx

HOSTILE_VALUES: list[Any] = [
    None, True, 0, -1, 10**30, 1e308, 1.5, "", "   ", "x" * 100_000, "9" * 50_000, "\ud800", "\x00\x1b[31m",
    [], {}, [[[]]], {"a": {"b": {}}}, ["x"] * 1000, [None], [{}],
]


def json_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from json_paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from json_paths(value, (*prefix, index))


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """`doc` with `value` at `path`; `doc` itself unchanged. Only the containers on the path are
    copied (the rest is shared, never written to): a deep copy per body was half this file's work."""
    if not path:
        return value
    copied = copy.copy(doc)
    copied[path[0]] = replaced(doc[path[0]], path[1:], value)
    return copied


GENERIC_FULL = {
    "title": "Error: connect ECONNREFUSED 127.0.0.1:6379", "message": "queue worker", "level": "error",
    "project": "api", "environment": "production", "release": "1.2.3", "server": "web-1",
    "url": "https://logs.example.com/x", "stacktrace": ["at a (a.js:1)", "at b (b.js:2)"], "count": 4,
    "fingerprint": "redis-down",
}
SAMPLES = {
    "generic": [GENERIC_FULL],
    "glitchtip": [json.loads(glitchtip_sample(name)) for name in
                  ("issue_alert_v1.json", "issue_alert_batch.json", "uptime_down.json", "test_notification.json")],
}


def assert_bounded(source: str, body: bytes) -> None:
    """Parsing `body` either refuses it with a 4xx or gives alerts within every documented bound."""
    try:
        parsed = parse_payload(source, body)
    except PayloadError as exc:
        assert 400 <= exc.status < 500
        return
    assert len(parsed.alerts) <= MAX_ISSUES_PER_BODY
    for alert in parsed.alerts:
        assert 1 <= alert.count <= 1_000_000_000
        assert len(alert.title) <= TITLE_MAX and len(alert.message) <= MESSAGE_MAX
        assert len(alert.stacktrace) <= STACK_MAX
        texts = [alert.title, alert.message, alert.stacktrace, alert.url or "", *alert.tags, *alert.tags.values()]
        for text in texts:
            text.encode("utf-8")  # no lone surrogate left to fail SQLite, the log or Telegram


def test_a_wrong_value_at_every_field_is_refused_or_bounded() -> None:
    # Each value is encoded once and spliced in where a marker's encoding stands: the same bytes
    # as encoding the whole document each time (the 100 KB strings made that most of the work).
    marker = json.dumps("\0hostile value\0")
    encoded_values = [json.dumps(value) for value in HOSTILE_VALUES]
    tried = 0
    for source, docs in SAMPLES.items():
        for doc in docs:
            for path in json_paths(doc):
                with_marker = json.dumps(replaced(doc, path, "\0hostile value\0"))
                for value, encoded in zip(HOSTILE_VALUES, encoded_values, strict=True):
                    body = with_marker.replace(marker, encoded).encode()
                    if tried % 97 == 0:  # the splice is what encoding the document would give
                        assert body == json.dumps(replaced(doc, path, value)).encode()
                    assert_bounded(source, body)
                    tried += 1
    assert tried > 2000


def nth(options: Sequence[Any], n: int) -> Any:
    """The n-th of `options`, round and round: consecutive bodies of a kind cover every option."""
    return options[n % len(options)]


def hostile_body(rng: random.Random, kind: int, n: int) -> tuple[str, bytes]:
    """The `n`-th hostile body of the given kind (0-15).

    A kind's fixed shapes (depths, digit counts, count literals, ...) are taken in turn by `n`, so
    the first few bodies of a kind cover all of them (see BODIES_PER_KIND); what is random (bytes,
    lengths, junk) comes from `rng`. The sender alternates between the two sources, and through
    each source's sample documents.
    """
    source = nth(["generic", "glitchtip"], n)
    doc = nth(SAMPLES[source], n // 2)
    valid = json.dumps(doc).encode()
    if kind == 0:
        return source, rng.randbytes(rng.randint(0, 4096))
    if kind == 1:
        return source, valid[: rng.randint(0, len(valid) - 1)]
    if kind == 2:  # 3 depths x 2 openers: 6 bodies (2 and 3 are coprime, so n takes every pair)
        depth = nth([MAX_DEPTH + 1, 1000, 100_000], n)
        opener, closer = nth([(b"[", b"]"), (b'{"a": ', b"}")], n)
        return source, opener * depth + b"1" + closer * depth
    if kind == 3:  # 4 lengths x 3 fields: 12 bodies
        digits = nth([19, 20, 4301, 200_000], n)
        field = nth([b"count", b"title", b"attachments"], n)
        return source, b'{"title": "x", "' + field + b'": ' + b"7" * digits + b"}"
    if kind == 4:
        count = nth(["1e23", "1e308", "-0.0", "1e-300", "2.5", "NaN", "Infinity", "-Infinity", "1E400"], n)
        return "generic", f'{{"title": "x", "count": {count}}}'.encode()
    if kind == 5:
        path = rng.choice(list(json_paths(doc)))
        return source, json.dumps(replaced(doc, path, rng.choice(HOSTILE_VALUES))).encode()
    if kind == 6:
        junk = "".join(rng.choice(["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\u0000", "é", "\\\\", "\\\""])
                       for _ in range(rng.randint(1, 50)))
        field = rng.choice(["title", "message", "project", "server"])
        if source == "glitchtip":
            return source, f'{{"attachments": [{{"title": "{junk}", "text": "{junk}", "fields": [{{"title": "{junk}", "value": "{junk}"}}]}}]}}'.encode()
        return source, f'{{"title": "{junk}", "{field}": "{junk}", "stacktrace": ["{junk}"]}}'.encode()
    if kind == 7:
        issue = {"title": "Error: boom", "title_link": "https://glitchtip.example.com/acme/issues/1"}
        return "glitchtip", json.dumps({"attachments": [issue] * nth([11, 500, 5000], n)}).encode()
    if kind == 8:
        title = rng.randbytes(rng.randint(2001, 200_000)).translate(HEX_AND_SPACE).decode()
        return "glitchtip", json.dumps({"attachments": [{"title": title, "text": title}]}).encode()
    if kind == 9:
        return source, b'{"title": "x", "x": "' + b"y" * (1024 * 1024) + b'"}'
    if kind == 10:
        return "generic", json.dumps({"title": "x", "stacktrace": ["at f (a.js:1)"] * rng.randint(10_000, 60_000)}).encode()
    if kind == 11:  # what json.dumps writes for {"k0": 0, ...}, without building the dict first
        return source, ("{" + ", ".join(f'"k{i}": {i}' for i in range(rng.randint(1000, 50_000))) + "}").encode()
    if kind == 12:
        return source, nth([b"", b" ", b"null", b"[]", b"{}", b'"a string"', b"0", b"true", b"\xef\xbb\xbf"], n)
    if kind == 13:  # 3 shapes x 2 sources: 6 bodies
        return source, nth([b"\xef\xbb\xbf" + valid, valid.decode().encode("utf-16"), valid + b"garbage"], n)
    if kind == 14:
        return source, json.dumps(random_json(rng, depth=rng.randint(1, 8))).encode()
    return source, valid.replace(b'"', b"'", rng.randint(1, 3))


# How many bodies of each kind: enough to take every fixed shape of the kind in turn, and for the
# kinds built from a sample document, every glitchtip sample (n // 2 takes them in turn). The rest
# are random: four each, two per source.
BODIES_PER_KIND = {0: 4, 1: 8, 2: 6, 3: 12, 4: 9, 5: 10, 6: 4, 7: 3, 8: 4, 9: 2, 10: 4, 11: 4, 12: 9, 13: 6, 14: 4,
                   15: 8}


def hostile_bodies(rng: random.Random) -> Iterator[tuple[int, str, bytes]]:
    """(kind, source, body) for every body, the kinds interleaved as a stream of hostile senders would be."""
    for n in range(max(BODIES_PER_KIND.values())):
        for kind, count in BODIES_PER_KIND.items():
            if n < count:
                yield (kind, *hostile_body(rng, kind, n))


# Random bytes mapped onto 17 characters (hex digits and a space): a long random title at C speed.
HEX_AND_SPACE = bytes(b"0123456789abcdef "[i % 17] for i in range(256))


def random_json(rng: random.Random, depth: int) -> Any:
    if depth == 0:
        return rng.choice([None, True, rng.randint(-(10**12), 10**12), rng.random() * 1e300, "x" * rng.randint(0, 300)])
    if rng.random() < 0.5:
        return {rng.choice(["title", "attachments", "count", "fields", "text", "a"]): random_json(rng, depth - 1)
                for _ in range(rng.randint(0, 4))}
    return [random_json(rng, depth - 1) for _ in range(rng.randint(0, 4))]


async def test_ninety_seven_hostile_bodies_of_every_kind_and_shape_get_a_4xx_or_a_202_quickly_and_never_a_5xx(
    serve: Serve,
) -> None:
    server = await serve()
    rng = random.Random(20261107)
    statuses: dict[int, int] = {}
    kinds: set[int] = set()
    async with httpx.AsyncClient(timeout=10) as client:
        for i, (kind, source, body) in enumerate(hostile_bodies(rng)):
            kinds.add(kind)
            started = time.monotonic()
            response = await client.post(url(server, source), content=body)
            elapsed = time.monotonic() - started
            assert response.status_code < 500, (i, kind, source, body[:200], response.text)
            assert elapsed < 2.0, (i, kind, source, body[:200], elapsed)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 202:
                assert_bounded(source, body)
        assert (await client.get(f"http://127.0.0.1:{server.port}/healthz")).status_code == 200
    assert sum(statuses.values()) == 97 and kinds == set(range(16))
    assert set(statuses) <= {202, 400, 413, 422}, statuses
    # Every answer a hostile body can earn, each several times (these bodies earn 400 42, 422 37, 202 16, 413 2).
    assert statuses.get(400, 0) > 25 and statuses.get(422, 0) > 15 and statuses.get(202, 0) > 10, statuses
    assert statuses.get(413, 0) >= 2, statuses
    assert await count_rows(server, "inbox") == statuses[202]
