"""The demo driven from the terminal: typed lines act as the approver through the emulator, and
the transcript numbers cards by incident.

The console is driven directly with lines against the real application and emulator; one test
runs the real demo process with commands on its stdin.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import IO

from bot.demo_console import USAGE, DemoConsole, Transcript, drive, typed_lines
from bot.settings import Settings
from tests.conftest import APPROVER, CHAT_ID, WEBHOOK_TOKEN, free_port
from tests.forked_cli import PIPE, ForkedCli

REPO = Path(__file__).resolve().parent.parent


async def _driven(start_app):
    h = await start_app()
    transcript: list[str] = []
    h.emu.on_event = Transcript(write=transcript.append)
    console = DemoConsole(h.emu, CHAT_ID, APPROVER, f"{h.base}/webhook/generic/{WEBHOOK_TOKEN}")
    return h, console, transcript


def _card_of(h, incident_id: int):
    return next(m for m in h.emu.messages(CHAT_ID) if f"· #{incident_id}" in m.plain_text.splitlines()[0])


async def test_typed_commands_act_as_the_approver(start_app):
    h, console, transcript = await _driven(start_app)
    # A command first, so Telegram's message numbers no longer match incident numbers.
    assert await console.handle("/status") is None
    await h.emu.wait_for(lambda: any("Status" in m.plain_text for m in h.cards()), timeout=10)

    note = await console.handle("alert Error: connect ECONNREFUSED 127.0.0.1:6379")
    assert note is not None and note.startswith("Alert accepted (inbox row 1)")
    await h.wait_cards(2)
    assert (await console.handle("alert TypeError: Cannot read properties of undefined (reading 'id')")).startswith(
        "Alert accepted")
    await h.wait_cards(3)
    first, second = _card_of(h, 1), _card_of(h, 2)
    assert (first.message_id, second.message_id) == (3, 4)  # /status (1), its reply (2), then the cards

    assert await console.handle("approve 1") is None
    await h.wait_text(first.message_id, "approved by Demo")
    assert await console.handle("p0 #2") is None
    await h.wait_text(second.message_id, "(triaged P")
    assert await console.handle("mute 2 24h") is None
    await h.wait_text(second.message_id, "Muted until")
    assert await console.handle("reject 2") is None
    await h.wait_text(second.message_id, "Rejected by Demo")
    assert await console.handle("resolve 2") is None
    await h.wait_text(second.message_id, "Resolved by Demo")
    assert await console.handle("approve 2") == (
        "Card #2 has no Approve button now (already decided, resolved, or not offered).")
    assert await console.handle("resolve 9") == "No card for incident #9 in the chat (yet)."
    listing = await console.handle("/incidents")
    assert listing is None
    await h.emu.wait_for(lambda: any("Open incidents" in m.plain_text for m in h.cards()), timeout=10)

    text = "\n".join(transcript)
    assert f"[bot → chat {CHAT_ID}] NEW #1\n" in text
    assert f"[bot → chat {CHAT_ID}] NEW #2\n" in text
    assert f'[user {APPROVER} pressed "✅ Approve" on #1]' in text
    assert f'[user {APPROVER} pressed "🚫 Reject" on #2]' in text
    assert f"[user {APPROVER} → chat {CHAT_ID}] /status" in text
    assert f"[bot → chat {CHAT_ID}] NEW message\n📊 Status" in text
    # Every numbered head names the incident its card shows; no Telegram message number leaks in.
    _assert_numbers_are_incidents(transcript)


def _assert_numbers_are_incidents(transcript: list[str]) -> None:
    numbered = 0
    for entry in transcript:
        head, _, body = entry.partition("\n")
        match = re.search(r"\] (?:NEW|EDIT) #(\d+)$", head)
        if match and body:
            numbered += 1
            assert f"· #{match.group(1)}" in body.splitlines()[0], entry
    assert numbered >= 2


async def test_console_explains_what_it_cannot_do(start_app):
    _, console, _ = await _driven(start_app)
    assert await console.handle("help") == USAGE
    assert await console.handle("approve") == "Which incident? e.g. approve 3"
    assert await console.handle("p2 three") == "Which incident? e.g. p2 3"
    assert await console.handle("frobnicate 3") == "Unknown: 'frobnicate'. Type help for the list."
    assert (await console.handle("alert")).startswith("Usage: alert <the error line>")
    assert await console.handle("   ") is None


async def test_lines_from_a_pipe_reach_the_chat(start_app):
    """The demo's stdin path: lines read off a file descriptor without blocking the loop."""
    h, console, _ = await _driven(start_app)
    read_end, write_end = os.pipe()
    notes: list[str] = []
    try:
        driving = drive(console, typed_lines(read_end), notes.append)
        os.write(write_end, b"/status\nhelp\nno-newline-at-the-end")
        os.close(write_end)
        await driving  # ends at end of input
        await h.emu.wait_for(lambda: any("Status" in m.plain_text for m in h.cards()), timeout=10)
        assert notes == [USAGE, "Unknown: 'no-newline-at-the-end'. Type help for the list."]
    finally:
        os.close(read_end)


# -- the real demo process, commands typed on its stdin ----------------------------------------------


class _Output:
    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        with stream:
            for line in stream:
                with self._cond:
                    self.lines.append(line.decode("utf-8").rstrip("\n"))
                    self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while (found := re.search(pattern, "\n".join(self.lines), re.MULTILINE)) is None:
                if time.monotonic() >= deadline:
                    return None
                self._cond.wait(deadline - time.monotonic())
            return found


def test_the_demo_process_takes_typed_commands(tmp_path: Path, forked_cli: ForkedCli) -> None:
    """`python -m bot run` as its own process, forked from the worker's preloaded interpreter (the
    `forked_cli` fixture: the imports are shared, the process and its pipes are its own)."""
    settings = {n.upper() for n in Settings.model_fields} | {"REMEDIATOR_ENV_FILE"}  # no token may sneak in
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", DATABASE_PATH=str(tmp_path / "demo.db"),
               WEBHOOK_PORT=str(free_port()), TELEGRAM_RATE_PER_CHAT="50", TELEGRAM_GROUP_PER_MINUTE="1000")
    proc = forked_cli.spawn(["run"], cwd=tmp_path, env=env, stdin=PIPE, stdout=PIPE, stderr=PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err = _Output(proc.stdout), _Output(proc.stderr)
    try:
        # Starting takes a second or more on a busy machine: wait generously.
        assert out.wait_for(r"Press Ctrl\+C to stop\.", timeout=90), "\n".join(out.lines + err.lines)
        banner = "\n".join(out.lines)
        assert "Type here as the approver (user 1001): /status, /incidents, approve 3" in banner
        assert "Numbers in the transcript (#3) are incident numbers" in banner

        proc.stdin.write(b"alert DemoTyped: from the terminal\n")
        card = out.wait_for(r"NEW #(\d+)\n\S+ P\d · \w+ · #(\d+)\nDemoTyped: from the terminal$")
        assert card is not None, "\n".join(out.lines + err.lines)
        assert card.group(1) == card.group(2)  # the transcript's number is the card's incident number
        incident = card.group(1)

        proc.stdin.write(f"resolve {incident}\n/status\n".encode())
        assert out.wait_for(rf'pressed "✔️ Resolve" on #{incident}\]'), "\n".join(out.lines)
        assert out.wait_for(rf"EDIT #{incident}\n(?:.*\n)*?✅ Resolved by Demo"), "\n".join(out.lines)
        assert out.wait_for(r"NEW message\n📊 Status"), "\n".join(out.lines)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, "\n".join(err.lines)
        assert not any("Traceback" in line for line in err.lines), "\n".join(err.lines)
    finally:
        proc.stdin.close()
        if proc.returncode is None:
            proc.kill()
            proc.wait(5)
