"""Callback data for card buttons: `action:incident:arg`, always well under Telegram's 64 bytes.

Approve and Reject carry the proposal id, so a press on a card whose proposal was superseded
is recognised as stale instead of acting on the newer proposal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

APPROVE, REJECT, INVESTIGATE, PRIORITY, MUTE, RESOLVE = "ap", "rj", "iv", "pr", "mu", "rs"
ACTIONS = {APPROVE, REJECT, INVESTIGATE, PRIORITY, MUTE, RESOLVE}
MAX_BYTES = 64


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
    return CardPress(match.group(1), int(match.group(2)), match.group(3))
