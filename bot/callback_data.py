"""Callback data for card buttons: `action:incident:arg`, always well under Telegram's 64 bytes.

Approve and Reject carry the proposal id, so a press on a card whose proposal was superseded
is recognised as stale instead of acting on the newer proposal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

APPROVE, REJECT, INVESTIGATE, PRIORITY, MUTE, RESOLVE = "ap", "rj", "iv", "pr", "mu", "rs"
# 👍/👎 under an investigation report: `hf:<incident>:<investigation id>y|n`
HELPFUL = "hf"
# 📝 File GitHub issue under an investigation report: `gi:<incident>:<investigation id>`
FILE_ISSUE = "gi"
# Priority overrides (bot/overrides.py), under the digest, /stats and /overrides: the number is an
# offer's id (`oa:<offer>:`, Apply) or an override's id (`ox:<override>:`, Remove), not an incident's.
OVERRIDE_APPLY, OVERRIDE_REMOVE = "oa", "ox"
OVERRIDE_ACTIONS = {OVERRIDE_APPLY, OVERRIDE_REMOVE}
ACTIONS = {APPROVE, REJECT, INVESTIGATE, PRIORITY, MUTE, RESOLVE, HELPFUL, FILE_ISSUE, *OVERRIDE_ACTIONS}
MAX_BYTES = 64
# The largest id SQLite can store: a larger number cannot name a row, and binding it raises
# OverflowError, so ids from buttons and commands are checked against it before any query.
MAX_ID = 2**63 - 1
_ID = re.compile(r"[0-9]{1,19}", re.ASCII)


def parse_id(text: str) -> int | None:
    """An incident or proposal id typed or sent by a user: ASCII digits from 1 to MAX_ID, else None."""
    if _ID.fullmatch(text) is None:
        return None
    value = int(text)
    return value if is_valid_id(value) else None


def is_valid_id(value: int) -> bool:
    return 1 <= value <= MAX_ID


@dataclass(frozen=True)
class CardPress:
    action: str
    incident_id: int
    arg: str = ""

    def encode(self) -> str:
        data = f"{self.action}:{self.incident_id}:{self.arg}"
        if len(data.encode()) > MAX_BYTES:
            raise ValueError("callback data over 64 bytes")
        return data


_DATA = re.compile(r"([a-z]{2}):([0-9]{1,15}):([A-Za-z0-9]{0,20})", re.ASCII)


def decode(data: str) -> CardPress | None:
    """The press a button stands for, or None for data this bot did not make."""
    if len(data.encode()) > MAX_BYTES:
        return None
    match = _DATA.fullmatch(data)
    if match is None or match.group(1) not in ACTIONS:
        return None
    action, arg = match.group(1), match.group(3)
    if action in (APPROVE, REJECT, FILE_ISSUE) and parse_id(arg) is None:
        return None  # these carry a proposal or investigation id; the bot never draws one out of range
    return CardPress(action, int(match.group(2)), arg)
