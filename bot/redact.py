"""Mask secrets in error text before it leaves the process.

Why: error reports routinely carry connection strings, request headers, tokens and
config dumps. Everything we forward (Telegram cards, log lines, the audit log, Claude
prompts, GitHub issues) is read by people and vendors who must never see those
credentials, so all outbound text goes through :func:`redact` (or a configured
:class:`Redactor`) first.

Design choices, and why:

* Keep the context, drop the secret: ``Authorization: Bearer [REDACTED]``,
  ``postgres://app:[REDACTED]@db:5432/x``, ``password=[REDACTED]``. A triager still
  sees *which* credential was involved, never its value.
* Linear time: a hostile or huge payload must not stall the bot. Every pattern uses
  bounded or possessive quantifiers over character classes that cannot overlap, and
  the key=value scan is a single forward pass.
* Idempotent: ``[REDACTED]`` is never itself treated as a secret, so text that was
  redacted upstream (or twice) comes out unchanged.
* Ordinary error text stays byte-for-byte intact. Where a shape is ambiguous ("Invalid
  token: jwt malformed", long numbers) a cheap plausibility check (does the value look
  random, does the number pass Luhn) decides, because a mangled stack trace costs
  debugging time on every alert.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MASK", "Redactor", "redact"]

MASK = "[REDACTED]"

# --------------------------------------------------------------------------- helpers


def _looks_secret(value: str) -> bool:
    """True for random-looking values (mixed letters+digits, or long mixed case).

    Used only where the surrounding shape is ambiguous, so prose such as
    ``Invalid token: jwt malformed`` or ``Bearer realm`` is left alone.
    """
    if len(value) < 8:
        return False
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    if has_digit and has_alpha:
        return True
    return len(value) >= 16 and any(c.isupper() for c in value) and any(c.islower() for c in value)


def _is_card(number: str) -> bool:
    """Card-number plausibility: brand prefix, card-like grouping, Luhn checksum.

    The prefix test (2221-2720, 3x, 4x, 5x, 6x) is what keeps epoch milliseconds and
    snowflake ids (leading 1) and compact timestamps (2024...) unmasked; Luhn alone
    would let one in ten through.
    """
    seps = {c for c in number if not c.isdigit()}
    digits = "".join(c for c in number if c.isdigit())
    if len(seps) > 1:
        return False
    if seps:
        groups = [len(g) for g in re.split(r"[ -]", number)]
        four_blocks = all(n == 4 for n in groups[:-1]) and 1 <= groups[-1] <= 4
        if not four_blocks and groups not in ([4, 6, 5], [4, 6, 4]):
            return False
    first = digits[0]
    if first not in "3456" and not (first == "2" and 2221 <= int(digits[:4]) <= 2720):
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _sentry_style_key(user: str) -> bool:
    """A URL user part that is really a key (Sentry/GlitchTip DSN, token-as-username)."""
    return len(user) >= 16 and any(c.isdigit() for c in user)


@dataclass(frozen=True, slots=True)
class _Rule:
    """One regex; ``group`` is the secret part (0 = whole match).

    ``check`` vetoes a match (the match is left as it was); it is how Luhn and the
    "looks random" test plug in without making the regexes clever.
    """

    regex: re.Pattern[str]
    group: int | str = "s"
    check: Callable[[str], bool] | None = None
    mask_empty: bool = False  # insert a mask even when the secret part is empty

    def apply(self, text: str) -> str:
        return self.regex.sub(self._replace, text)

    def _replace(self, m: re.Match[str]) -> str:
        secret = m.group(self.group)
        whole = m.group(0)
        if secret == "" and self.mask_empty:
            return whole + MASK
        if not secret or secret == MASK or (self.check is not None and not self.check(secret)):
            return whole
        start, end = m.span(self.group)
        base = m.start()
        return whole[: start - base] + MASK + whole[end - base :]


# ------------------------------------------------------------------ built-in rules

_PEM = _Rule(
    re.compile(
        r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
        # body: base64, whitespace, literal "\n" escapes, PEM headers (Proc-Type, DEK-Info)
        r"(?P<s>(?:\[REDACTED\]|[A-Za-z0-9+/=\s\\,:]|-(?!----))*+)"
    ),
    mask_empty=True,  # header with the body cut off by truncation: still flag it
)

_SCHEME = r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,30}://"

# scheme://user:password@host -- password may contain '@' (backtracks to the last one)
_URL_PASSWORD = _Rule(re.compile(_SCHEME + r"[^\s:/@\"'<>]*:(?P<s>[^\s/?#\"'<>]+)@"))
# scheme://<key>@host -- Sentry/GlitchTip DSNs, https://<token>@github.com
_URL_KEY = _Rule(re.compile(_SCHEME + r"(?P<s>[A-Za-z0-9_-]{16,}+)@"), check=_sentry_style_key)


def _vendor_token(token: str) -> bool:
    """Real keys are random; ``sk-learn-some-long-package-name`` is not a key."""
    return not token.startswith("sk-") or any(c.isdigit() for c in token)


_TOKENS = _Rule(
    re.compile(
        r"(?<![A-Za-z0-9_-])(?P<s>"
        r"sk-[A-Za-z0-9_-]{20,}+"  # Anthropic sk-ant-api03-, OpenAI sk-, sk-proj-
        r"|gh[pousr]_[A-Za-z0-9]{30,}+"  # GitHub classic / OAuth / app tokens
        r"|github_pat_[A-Za-z0-9_]{30,}+"
        r"|glpat-[A-Za-z0-9_-]{20,}+"  # GitLab
        r"|xox[abprs]-[A-Za-z0-9-]{10,}+|xapp-[A-Za-z0-9-]{10,}+"  # Slack
        r"|(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"  # AWS access key id
        r"|AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])"  # Google API key
        r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}+|whsec_[A-Za-z0-9+/=]{20,}+"  # Stripe
        r"|SG\.[A-Za-z0-9_-]{16,}+\.[A-Za-z0-9_-]{16,}+"  # SendGrid
        r"|npm_[A-Za-z0-9]{30,}+"
        r"|eyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+"  # JWT
        r")"
    ),
    check=_vendor_token,
)

# 123456789:AA... -- also glued to "bot" in https://api.telegram.org/bot<token>/
_TELEGRAM = _Rule(re.compile(r"(?:(?<=bot)|(?<![A-Za-z0-9_]))(?P<s>[0-9]{6,12}:[A-Za-z0-9_-]{30,}+)"))

_WEBHOOKS = _Rule(
    re.compile(r"(?:hooks\.slack\.com/services/|discord(?:app)?\.com/api/webhooks/)(?P<s>[A-Za-z0-9/_-]++)")
)

# Authorization: Digest username="..", response=".." -- the whole parameter list
_DIGEST = _Rule(
    re.compile(
        r"(?i)(?<![A-Za-z0-9_-])digest[ \t]+(?=(?:username|realm|nonce)=)"
        r"(?P<s>(?:[^\r\n\"']|\"[^\"\r\n]*+\")++)"
    )
)

# A bare "Bearer xxx" outside a header; only random-looking values ("Bearer realm" stays).
_BEARER = _Rule(
    re.compile(r"(?i)(?<![A-Za-z0-9_-])(?:bearer|basic)[ \t]+(?P<s>[A-Za-z0-9._~+/-]++=*+)"),
    check=_looks_secret,
)

_CARD = _Rule(
    re.compile(
        r"(?<![A-Za-z0-9_.])(?<![0-9][ -])"
        r"(?P<s>[0-9](?:[ -]?[0-9]){12,18})"
        r"(?![ -]?[0-9])(?![A-Za-z_]|\.[0-9])"
    ),
    check=_is_card,
)

# ------------------------------------------------------------- key = value fields

# The sensitive word sits at the *end* of the key; anything glued before it is kept as
# part of the key (db_password, spring.datasource.password, x-api-key, accessToken,
# PHPSESSID). Nothing may follow it except a key/hash/value suffix, so token_count,
# tokens, secret_name, password_reset are not keys we care about.
_KEY_CORE = (
    r"(?:(?P<pw>passw(?:or)?d|passphrase|pwd)|secret|token|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|(?P<auth>auth(?:orization)?)|sess(?:ion)?(?:[_-]?id)?|sid|sig(?:nature)?)"
    r"(?:[_-]?(?:key|hash|value))?"
)
_FIELD = re.compile(r"(?i)" + _KEY_CORE + r"(?P<kq>\\?[\"'])?(?P<gap>[ \t]*)(?P<sep>:=|=>|[:=])(?!=)[ \t]*")
_SENSITIVE_KEY = re.compile(r"(?i)[A-Za-z0-9_.-]{0,64}?" + _KEY_CORE)
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_FIELD_START = frozenset("\n\r{,;(&?[|")

_AUTH_SCHEME = r"(?i:bearer|basic|token|bot|digest|negotiate|apikey|jwt)[ \t]+"
_OPEN_QUOTE = re.compile(r"\\?[\"']")
_BODIES = {
    '"': re.compile(r"(?:[^\"\\\r\n]|\\[^\r\n])*+"),
    "'": re.compile(r"(?:[^'\\\r\n]|\\[^\r\n])*+"),
    '\\"': re.compile(r"[^\"'\\\r\n]*+"),  # JSON escaped inside a JSON string
    "\\'": re.compile(r"[^\"'\\\r\n]*+"),
}
_BARE_BODY = re.compile(r"(?:" + _AUTH_SCHEME + r")?(?:\[REDACTED\]|\$\{[^}\s]{0,100}\}|[^\s\"'`,;&<>(){}\[\]\\])++")
_SCHEME_PREFIX = re.compile(_AUTH_SCHEME)
# Values that are not secrets and are worth seeing: unset config, placeholders, env refs.
_NOT_A_SECRET = re.compile(
    r"(?i:null|none|nil|undefined|true|false|yes|no|bearer|basic|token)|\*+|\?|%s|%\(\w+\)s|\$[0-9]+|:\w+"
    r"|\$\{[^}]*\}|\$[A-Z_][A-Z0-9_]*|\{\{[^}]*\}\}|<[^>]*>|(?:\[REDACTED\])+"
)


def _split_scheme(value: str) -> tuple[str, str]:
    """``Bearer abc`` -> (``Bearer ``, ``abc``): the scheme is context worth keeping."""
    scheme = _SCHEME_PREFIX.match(value)
    prefix = scheme.group(0) if scheme else ""
    return prefix, value[len(prefix) :]


def _mask_value(value: str) -> str:
    """``Bearer abc`` -> ``Bearer [REDACTED]``; placeholders and null-ish values kept."""
    prefix, rest = _split_scheme(value)
    rest = rest.strip()
    if not rest or _NOT_A_SECRET.fullmatch(rest):
        return value
    return prefix + MASK


def _at_field_start(text: str, key_start: int) -> bool:
    """Is the key at the start of a line/object/argument list/query string?

    Structured positions (``password: x`` in YAML, ``{"token": 1}``, ``?sig=``) are
    masked unconditionally; mid-sentence ones (``Invalid token: jwt malformed``) only
    when the value looks random.
    """
    i, lo = key_start, max(0, key_start - 64)
    while i > lo and text[i - 1] in " \t\"'\\-":
        i -= 1
    return i == 0 or text[i - 1] in _FIELD_START


def _continues_as_prose(text: str, value_end: int) -> bool:
    """Is the value followed by another word or a call on the same line?

    YAML, headers and log fields end the value at the line end or a delimiter; a
    sentence ("secret: must be provided") or code ("password = crypt(...)") goes on.
    """
    i, hi = value_end, min(len(text), value_end + 8)
    while i < hi and text[i] in " \t":
        i += 1
    if i == value_end:
        return i < len(text) and text[i] == "("
    return i < len(text) and (text[i].isalnum() or text[i] == "(")


def _field_mask(text: str, key: re.Match[str], quote: str, body: re.Match[str]) -> str | None:
    """The masked replacement for one field's value, or None to leave it alone."""
    value = body.group(0)
    masked = _mask_value(value)
    if masked == value:
        return None
    key_start = key.start()
    while key_start > max(0, key.start() - 64) and text[key_start - 1] in _KEY_CHARS:
        key_start -= 1
    if text.endswith("://", 0, key_start):
        return None  # user:password in a URL, the URL rule's business
    scheme, rest = _split_scheme(value)
    if quote or (key.group("sep") != ":" and not key.group("gap")):
        strong = True  # "key": "v", key='v', key=v: unambiguous assignments
    elif scheme and key.group("auth") is not None:
        strong = True  # Authorization: Basic xxx
    elif _continues_as_prose(text, body.end()):
        strong = False  # "password: must be at least 8 characters"
    else:
        strong = key.group("pw") is not None or _at_field_start(text, key_start)
    return masked if strong or _looks_secret(rest.replace(MASK, "")) else None


def _redact_fields(text: str) -> str:
    """Mask the value of every ``key=value`` / ``key: value`` / ``"key": "value"``.

    One forward pass: after each field the scan resumes *behind its value*, masked or
    not, so a long unmasked value ("x sig:sig:sig:...") is never rescanned.
    """
    out: list[str] = []
    last = pos = 0
    while (key := _FIELD.search(text, pos)) is not None:
        pos = key.end()
        quote_m = _OPEN_QUOTE.match(text, pos)
        quote = quote_m.group(0) if quote_m else ""
        body = (_BODIES[quote] if quote else _BARE_BODY).match(text, pos + len(quote))
        if body is None:
            continue
        pos = max(body.end(), pos + 1)
        masked = _field_mask(text, key, quote, body)
        if masked is not None:
            out.append(text[last : body.start()])
            out.append(masked)
            last = body.end()
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


# ------------------------------------------------------------------------ public API


class Redactor:
    """Masks secrets in text; one instance per configuration, safe to share.

    ``extra_patterns`` come from the REDACT_PATTERNS setting for formats only the
    operator knows (internal tokens, customer ids). A pattern with a capturing group
    masks only group 1, otherwise the whole match. They run first, on the raw text.
    """

    def __init__(self, extra_patterns: Sequence[str] = ()) -> None:
        if isinstance(extra_patterns, str):  # a lone string is one pattern, not a list of chars
            extra_patterns = [extra_patterns]
        extras: list[_Rule] = []
        for pattern in extra_patterns:
            if not pattern.strip():
                continue
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid redaction pattern {pattern!r}: {exc}") from exc
            if regex.fullmatch(""):
                raise ValueError(f"invalid redaction pattern {pattern!r}: it matches the empty string")
            extras.append(_Rule(regex, group=1 if regex.groups else 0))
        self._rules: tuple[_Rule, ...] = (
            *extras,
            _PEM,
            _URL_PASSWORD,
            _URL_KEY,
            _TOKENS,
            _TELEGRAM,
            _WEBHOOKS,
            _DIGEST,
            _BEARER,
        )

    def redact(self, text: str) -> str:
        """Return ``text`` with every recognised secret replaced by ``[REDACTED]``."""
        if not text:
            return text
        for rule in self._rules:
            text = rule.apply(text)
        text = _redact_fields(text)
        return _CARD.apply(text)

    def redact_obj(self, obj: Any) -> Any:
        """Redact every string inside dicts/lists/tuples (for JSON export of the audit log).

        A scalar under a sensitive key (``{"password": "hunter2"}``) is masked whole,
        since the bare value carries no shape to recognise. Keys are kept as they are.
        """
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, Mapping):
            return {key: self._redact_item(key, value) for key, value in obj.items()}
        if isinstance(obj, list):
            return [self.redact_obj(item) for item in obj]
        if isinstance(obj, tuple):
            return tuple(self.redact_obj(item) for item in obj)
        return obj

    def _redact_item(self, key: Any, value: Any) -> Any:
        sensitive = isinstance(key, str) and _SENSITIVE_KEY.fullmatch(key) is not None
        if sensitive and isinstance(value, str):
            return _mask_value(value)
        if sensitive and isinstance(value, int | float) and not isinstance(value, bool):
            return MASK
        return self.redact_obj(value)


_DEFAULT = Redactor()


def redact(text: str) -> str:
    """Redact with the built-in rules only (no REDACT_PATTERNS)."""
    return _DEFAULT.redact(text)
