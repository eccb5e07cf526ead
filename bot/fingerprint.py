"""Fingerprints: which alerts are the same problem.

GlitchTip already groups events into issues, so its issue id is the fingerprint; other sources
give one, or we normalise the title so `timeout after 3012 ms` and `timeout after 2999 ms` group.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

_QUOTED = re.compile(r"'[^'\n]{0,200}'|\"[^\"\n]{0,200}\"|`[^`\n]{0,200}`")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)
# Hex-looking words, found in one linear pass: each candidate is a whole word (the `\b` at the
# start only matches at word starts, so a failing candidate costs its own length once), and
# `_hex_word` decides in Python. The old single regex backtracked quadratically on long digit runs.
_HEX_WORD = re.compile(r"\b(?:0x[0-9a-f]+|[0-9a-f]{8,})\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SPACE = re.compile(r"\s+")


def _hex_word(match: re.Match[str]) -> str:
    """An id-like hex word (a digit and a hex letter, or 12+ hex digits) becomes `<hex>`."""
    word = match.group(0)
    lower = word.lower()
    if lower.startswith("0x") or len(word) >= 12:
        return "<hex>"
    has_digit = any(c.isdigit() for c in word)
    has_letter = any(c in "abcdef" for c in lower)
    return "<hex>" if has_digit and has_letter else word


def normalise_title(title: str) -> str:
    """The title with the parts that vary between repeats (values, ids, numbers) taken out."""
    text = _QUOTED.sub("<v>", title)
    text = _UUID.sub("<uuid>", text)
    text = _HEX_WORD.sub(_hex_word, text)
    text = _NUMBER.sub("<n>", text)
    return _SPACE.sub(" ", text).strip().lower()


def _digest(*parts: str | None) -> str:
    joined = "\x1f".join(p or "" for p in parts)
    return hashlib.sha256(joined.encode()).hexdigest()[:24]


def title_fingerprint(title: str, project: str | None, environment: str | None) -> str:
    return "title:" + _digest(normalise_title(title), project, environment)


def given_fingerprint(value: str, project: str | None) -> str:
    return "given:" + _digest(value, project)


_ISSUE_PATH = re.compile(r"/issues/(\d+)/?$")
_MONITOR_PATH = re.compile(r"/uptime-monitors/(\d+)/?$")


def glitchtip_ids(link: str | None) -> tuple[str, str, str] | None:
    """(host, "issue" | "monitor", id) from a GlitchTip `title_link`, or None."""
    if not link:
        return None
    try:
        parts = urlsplit(link)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, an unclosed [IPv6 bracket…
        return None
    if not host:
        return None
    # Only host and port: credentials in a link (`user:password@`) never reach a fingerprint,
    # and from there kv keys or the audit log.
    where = f"{host}:{port}" if port else host
    for kind, pattern in (("issue", _ISSUE_PATH), ("monitor", _MONITOR_PATH)):
        match = pattern.search(parts.path)
        if match:
            return where, kind, match.group(1)
    return None


def glitchtip_fingerprint(host: str, kind: str, ident: str) -> str:
    return f"glitchtip:{host}:{kind}:{ident}"
