"""Parsing incoming alert bodies into domain `Alert`s.

Each source has a pydantic schema: a body of the wrong shape is a `PayloadError` naming the
field (the web layer answers 422), so nothing malformed reaches the inbox.

Everything an alert can send is bounded here, before any other code sees it: JSON nesting,
numbers, the number of issues in one body, and the length of every text field (cut to what a
human needs, with the cut marked). So the work spent on one alert downstream (fingerprints,
redaction, triage, cards) is bounded whatever the sender posts. The limits are in the README.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationError

from bot.models import Alert

# What a human needs to decide, and what keeps every later step cheap. A longer value is cut,
# not refused (a real tracker must not get a 422 for a long title), except where the generic
# schema documents a limit. The marker says how much was cut.
TITLE_MAX = 2000
MESSAGE_MAX = 10_000
STACK_MAX = 64 * 1024  # the head and the tail are kept: the crash is at one end or the other
VALUE_MAX = 1000  # a GlitchTip field value (a tag)
NAME_MAX = 200  # a GlitchTip field or section name, a colour, an alias
URL_MAX = 2000
MAX_ISSUES_PER_BODY = 10  # GlitchTip sends at most 3 issues per POST
MAX_FIELDS = 50  # GlitchTip fields per issue kept; the rest are ignored
COUNT_MAX = 1_000_000_000
MAX_DEPTH = 32  # JSON nesting; real alerts nest 5 deep at most


class PayloadError(Exception):
    """A body we refuse; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class ParsedPayload:
    alerts: list[Alert] = field(default_factory=list)
    test_notification: str | None = None  # the text of a "test" ping: answered in chat, no incident


SOURCES = ("glitchtip", "generic")


# --------------------------------------------------------------------------- text caps


def _cut_marker(cut: int) -> str:
    return f"… [{cut:,} chars cut]"


def cut_end(text: str, limit: int) -> str:
    """`text` kept to `limit` characters, the cut marked at the end."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(_cut_marker(len(text))))
    return text[:keep] + _cut_marker(len(text) - keep)


def cut_middle(text: str, limit: int) -> str:
    """`text` kept to `limit` characters: its head and its tail, the cut marked between them."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(_cut_marker(len(text))) - 2)
    head = keep // 2
    tail = keep - head
    return text[:head] + "\n" + _cut_marker(len(text) - keep) + "\n" + text[len(text) - tail:]


def capped(limit: int) -> AfterValidator:
    """A pydantic validator: the string cut to `limit` (the cut marked)."""
    return AfterValidator(lambda value: cut_end(value, limit))


CappedTitle = Annotated[str, capped(TITLE_MAX)]
CappedMessage = Annotated[str, capped(MESSAGE_MAX)]
CappedName = Annotated[str, capped(NAME_MAX)]
CappedValue = Annotated[str, capped(VALUE_MAX)]
CappedUrl = Annotated[str, capped(URL_MAX)]


# --------------------------------------------------------------------------- decoding


def _refuse_constant(name: str) -> Any:
    raise PayloadError(400, f"body is not JSON: {name} is not a JSON number")


def _nesting_exceeds(data: object, limit: int) -> bool:
    """True when `data` nests lists/objects deeper than `limit` (an iterative walk: no recursion)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


# A `\ud800`-style escape: the only way a UTF-8 JSON body can carry a lone surrogate (valid in JSON,
# not in UTF-8). Left in a string it would fail at the first UTF-8 encode: pydantic, SQLite, Telegram.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _without_lone_surrogates(data: object) -> object:
    """`data` with every lone surrogate replaced by `?` (pairs were already joined by the decoder)."""
    text = json.dumps(data, ensure_ascii=False)
    return json.loads(text.encode("utf-8", "replace"))


def decode_json(body: bytes) -> object:
    """The body as JSON; PayloadError(400) with the reason when it is not JSON we take."""
    try:
        # Strict UTF-8 (RFC 8259), not json's own detection, which also takes UTF-16/32 and
        # encoded surrogates; a leading BOM is tolerated.
        data = json.loads(body.decode("utf-8-sig"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise PayloadError(400, f"body is not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(400, f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise PayloadError(400, f"body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError:  # Python's limit on the digits of an integer it converts
        limit = sys.get_int_max_str_digits()
        raise PayloadError(400, f"body has an integer of more than {limit:,} digits") from None
    # Fast path: a body with few brackets cannot nest deeply (every real alert).
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _nesting_exceeds(data, MAX_DEPTH):
        raise PayloadError(400, f"body is nested more than {MAX_DEPTH} levels deep")
    if _SURROGATE_ESCAPE.search(body):
        data = _without_lone_surrogates(data)
    return data


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_payload(source: str, body: bytes) -> ParsedPayload:
    """Parse a raw body from `source`; raises PayloadError (400 not JSON, 422 wrong shape).

    CPU-bound and bounded by the caps above; the web layer runs it in a worker thread.
    """
    from bot.ingest.generic import parse_generic
    from bot.ingest.glitchtip import parse_glitchtip

    parser = {"glitchtip": parse_glitchtip, "generic": parse_generic}.get(source)
    if parser is None:
        raise PayloadError(404, f"unknown source {source!r}")
    data = decode_json(body)
    try:
        return parser(data)
    except ValidationError as exc:
        raise PayloadError(422, describe_validation_error(exc)) from None
