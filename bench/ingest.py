"""Ingest benchmark: N alerts at a running instance wired to the Bot API emulator.

Starts the emulator in this process and `python -m bot run` as a subprocess (a real instance,
its own SQLite file), posts N GlitchTip alerts over loopback with C concurrent senders
(repeats mixed with D distinct issues), then waits until every incident has its card and
the last count is on it. Prints: accepted alerts/s, p50/p99 webhook latency, time until every
incident has its card, Telegram calls made, alerts lost.

    .venv/bin/python bench/ingest.py --alerts 20000 --distinct 20 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bot.telegram_emulator import BotAPIEmulator  # noqa: E402

REPO = str(Path(__file__).resolve().parent.parent)  # this checkout

CHAT_ID = 424242  # a private chat: Telegram's pace there is about 1 message/s
TOKEN = "bench-webhook-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alert(issue: int) -> bytes:
    return json.dumps({
        "alias": "GlitchTip", "text": "GlitchTip Alert",
        "attachments": [{
            "title": f"Error: connect ECONNREFUSED 10.0.0.{issue % 250}:6379 (job {issue})",
            "title_link": f"https://glitchtip.example.com/acme/issues/{1000 + issue}",
            "text": "processQueue(worker/queue)", "color": "#e52b50",
            "fields": [{"title": "Project", "value": "worker", "short": True},
                       {"title": "Environment", "value": "production", "short": True}],
            "mrkdown_in": ["text"],
        }],
    }).encode()


async def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=20000)
    parser.add_argument("--distinct", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate-per-chat", type=float, default=1.0, help="TELEGRAM_RATE_PER_CHAT of the instance")
    parser.add_argument("--storm-cards-per-minute", type=int, default=10, help="STORM_CARDS_PER_MINUTE of the instance")
    args = parser.parse_args()

    emu = BotAPIEmulator()
    await emu.start()
    workdir = Path(tempfile.mkdtemp(prefix="remediator-bench-"))
    port = free_port()
    # The bot of this checkout, whatever the virtualenv's editable install points at.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
           "TELEGRAM_BOT_TOKEN": "123456789:BENCH-bench-bench-bench-bench-bench",
           "TELEGRAM_API_BASE": emu.base_url, "TELEGRAM_CHAT_ID": str(CHAT_ID), "TELEGRAM_APPROVERS": "1",
           "WEBHOOK_PORT": str(port), "WEBHOOK_TOKEN": TOKEN, "DATABASE_PATH": str(workdir / "bench.db"),
           "TELEGRAM_RATE_PER_CHAT": str(args.rate_per_chat), "LOG_LEVEL": "WARNING",
           "STORM_CARDS_PER_MINUTE": str(args.storm_cards_per_minute)}
    proc = subprocess.Popen([sys.executable, "-m", "bot", "run"], env=env, cwd=workdir)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/healthz")
        bodies = [alert(i % args.distinct) for i in range(args.alerts)]
        path = f"/webhook/glitchtip/{TOKEN}"
        latencies: list[float] = []
        failures = 0
        next_index = 0

        async def sender() -> None:
            # A lean keep-alive HTTP/1.1 client on raw streams: the load generator shares the
            # machine's two cores with the server, so it must cost as little as possible.
            nonlocal next_index, failures
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                while next_index < len(bodies):
                    body = bodies[next_index]
                    next_index += 1
                    started = time.perf_counter()
                    writer.write(
                        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n".encode() + body
                    )
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    latencies.append(time.perf_counter() - started)
                    if not head.startswith(b"HTTP/1.1 202"):
                        failures += 1
            finally:
                writer.close()

        t0 = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - t0

        # Every incident has its card showing its final count, or is named in a storm summary.
        per_issue = args.alerts // args.distinct

        def done() -> bool:
            db = sqlite3.connect(workdir / "bench.db")
            try:
                incidents, waiting = db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(card_deferred = 1), 0) FROM incidents").fetchone()
                outbox = db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
            finally:
                db.close()
            cards = [m for m in emu.messages(CHAT_ID) if "×" in m.plain_text]
            return (incidents >= args.distinct and waiting == 0 and outbox == 0
                    and all(f"×{per_issue}" in m.plain_text for m in cards))

        await emu.wait_for(done, timeout=900)
        cards_done = time.perf_counter() - t0

        db = sqlite3.connect(workdir / "bench.db")
        stored = db.execute("SELECT COALESCE(SUM(count), 0), COUNT(*) FROM incidents").fetchone()
        held = db.execute("SELECT COUNT(*) FROM incidents WHERE card_deferred != 0").fetchone()[0]
        pending = db.execute("SELECT COUNT(*) FROM inbox WHERE state != 'done'").fetchone()[0]
        db.close()
        latencies.sort()
        p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
        calls = emu.call_count("sendMessage") + emu.call_count("editMessageText")
        print(f"alerts posted            {args.alerts} ({args.distinct} distinct issues, {args.concurrency} senders)")
        print(f"accepted alerts/s        {args.alerts / elapsed:,.0f}  ({failures} not accepted)")
        print(f"webhook latency p50/p99  {p(0.50):.1f} ms / {p(0.99):.1f} ms (mean {statistics.mean(latencies) * 1000:.1f} ms)")
        print(f"all cards up to date     {cards_done:.1f} s after the first post (pace {args.rate_per_chat}/s per chat)")
        print(f"Telegram calls           {calls} (sendMessage {emu.call_count('sendMessage')}, "
              f"editMessageText {emu.call_count('editMessageText')})")
        print(f"incidents / alerts kept  {stored[1]} / {stored[0]}; inbox not done: {pending}")
        print(f"cards held back (storm)  {held}, named in {emu.call_count('sendMessage') - (stored[1] - held)} "
              f"summary message(s) (STORM_CARDS_PER_MINUTE {args.storm_cards_per_minute})")
        print(f"alerts lost              {args.alerts - stored[0]}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        await emu.stop()


if __name__ == "__main__":
    asyncio.run(main())
