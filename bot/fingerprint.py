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
_HEX = re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]*\d[0-9a-f]*[a-f][0-9a-f]*\b(?<=\w{8})|\b[0-9a-f]{12,}\b",
                  re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SPACE = re.compile(r"\s+")


def normalise_title(title: str) -> str:
    """The title with the parts that vary between repeats (values, ids, numbers) taken out."""
    text = _QUOTED.sub("<v>", title)
    text = _UUID.sub("<uuid>", text)
    text = _HEX.sub("<hex>", text)
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
    parts = urlsplit(link)
    if not parts.netloc:
        return None
    for kind, pattern in (("issue", _ISSUE_PATH), ("monitor", _MONITOR_PATH)):
        match = pattern.search(parts.path)
        if match:
            return parts.netloc.lower(), kind, match.group(1)
    return None


def glitchtip_fingerprint(host: str, kind: str, ident: str) -> str:
    return f"glitchtip:{host}:{kind}:{ident}"
