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
* Where a secret hides matters as much as its shape: connection strings, env lines,
  YAML (also with the value on the next line), JSON that was URL-encoded or
  HTML-escaped, command lines (``--password x``, and ``-p``/``-u`` only after the
  mysql/curl commands that read them as credentials, so ``ssh -p 2222`` stays).
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

import regex as _regex

from bot.regex_safety import BoundedRegex, RegexTimeout

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

    regex: re.Pattern[str] | BoundedRegex  # bounded: a REDACT_PATTERNS regex
    group: int | str = "s"
    check: Callable[[str], bool] | None = None
    mask_empty: bool = False  # insert a mask even when the secret part is empty
    #: the rule can only match text holding one of these (a cheap test that skips the regex)
    needles: tuple[str, ...] = ()

    def apply(self, text: str) -> str:
        if self.needles and not any(needle in text for needle in self.needles):
            return text
        try:
            return self.regex.sub(self._replace, text)
        except RegexTimeout:
            # An operator regex that gave up may have left its secret in place: losing this text
            # costs a line of context, showing it could cost a credential.
            return f"{MASK} (a REDACT_PATTERNS regex gave up on this text of {len(text):,} characters)"

    def _replace(self, m: re.Match[str] | _regex.Match[str]) -> str:
        group = self.group
        if group == "s" and m.group(group) is None and m.lastgroup is not None:
            group = m.lastgroup  # alternatives with a group each (s2, s3: one per quoting style)
        secret = m.group(group)
        whole = m.group(0)
        if secret == "" and self.mask_empty:
            return whole + MASK
        if not secret or secret == MASK or (self.check is not None and not self.check(secret)):
            return whole
        start, end = m.span(group)
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

# scheme://user:password@host. Drivers print passwords raw, so the password may hold
# / # ? ' and '@' (P4ss@w0rd@host: once past an '@', a '/' means that '@' was the
# delimiter and a path follows) or, failing that, a few spaces ("redis://:my pass@h").
# "host:6379/x?mail=a@b" is a port, not a password. Every run is bounded or possessive,
# and none crosses another "://", so the scans from two URLs never overlap.
_URL_HOST_AHEAD = r"(?=@[A-Za-z0-9\[])"
_URL_PASSWORD_CHAR = r"(?:[^\s\"<>@:]|:(?!//))"
_URL_PASSWORD = _Rule(
    re.compile(
        _SCHEME + r"[^\s:/@\"'<>\[]*+:"
        r"(?![0-9]{1,5}(?:[/?#\s'\"<>),;:\]]|$))"
        r"(?P<s>" + _URL_PASSWORD_CHAR + r"{1,256}+(?:@[^\s\"<>@/]{0,256}+){0,8}" + _URL_HOST_AHEAD
        + r"|" + _URL_PASSWORD_CHAR + r"{1,64}+(?:[ ]" + _URL_PASSWORD_CHAR + r"{1,64}+){1,4}" + _URL_HOST_AHEAD
        + r")@"
    ),
    check=lambda password: not password.startswith(MASK),  # "[REDACTED]@host@x": already done
    needles=("://",),
)
# scheme://<key>@host -- Sentry/GlitchTip DSNs, https://<token>@github.com
_URL_KEY = _Rule(re.compile(_SCHEME + r"(?P<s>[A-Za-z0-9_-]{16,}+)@"), check=_sentry_style_key, needles=("://",))


def _vendor_token(token: str) -> bool:
    """Real keys are random; ``sk-learn-some-long-package-name`` is not a key."""
    if token.startswith("sk-"):
        return any(c.isdigit() for c in token)
    if token.startswith("hf_"):  # Hugging Face tokens are mixed-case letters, digits optional
        return _looks_secret(token[3:])
    return True


_TOKENS = _Rule(
    re.compile(
        r"(?<![A-Za-z0-9_-])(?P<s>"
        r"sk-[A-Za-z0-9_-]{20,}+"  # Anthropic sk-ant-api03-, OpenAI sk-, sk-proj-
        r"|gh[pousr]_[A-Za-z0-9]{30,}+"  # GitHub classic / OAuth / app tokens
        r"|github_pat_[A-Za-z0-9_]{30,}+"
        r"|glpat-[A-Za-z0-9_-]{20,}+"  # GitLab
        r"|xoxe\.xox[abp]-[A-Za-z0-9-]{10,}+"  # Slack rotating token (before the plain form)
        r"|xox[abeprs]-[A-Za-z0-9-]{10,}+|xapp-[A-Za-z0-9-]{10,}+"  # Slack; xoxe- = refresh token
        r"|(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"  # AWS access key id
        r"|AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])"  # Google API key
        r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}+|whsec_[A-Za-z0-9+/=]{20,}+"  # Stripe
        r"|SG\.[A-Za-z0-9_-]{16,}+\.[A-Za-z0-9_-]{16,}+"  # SendGrid
        r"|npm_[A-Za-z0-9]{30,}+"
        r"|hf_[A-Za-z0-9]{30,}+"  # Hugging Face
        r"|do[opr]_v1_[a-f0-9]{64}(?![A-Za-z0-9])"  # DigitalOcean personal / OAuth / refresh
        r"|shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}(?![A-Za-z0-9])"  # Shopify
        r"|SK[0-9a-f]{32}(?![A-Za-z0-9])"  # Twilio API key SID
        r"|key-[0-9a-f]{32}(?![A-Za-z0-9])"  # Mailgun
        r"|eyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+"  # JWT
        r")"
    ),
    check=_vendor_token,
)

# 123456789:AA... -- also glued to "bot" in https://api.telegram.org/bot<token>/
# Here and in _DIGEST and _BEARER the first character comes before the lookbehinds (which look
# past it): a pattern that starts with a character lets the engine skip to where that character
# is, one that starts with a lookbehind tries every position (2-5x slower). Same matches.
_TELEGRAM = _Rule(
    re.compile(r"(?P<s>[0-9](?:(?<=bot[0-9])|(?<![A-Za-z0-9_][0-9]))[0-9]{5,11}:[A-Za-z0-9_-]{30,}+)")
)

_WEBHOOKS = _Rule(
    re.compile(r"(?:hooks\.slack\.com/services/|discord(?:app)?\.com/api/webhooks/)(?P<s>[A-Za-z0-9/_-]++)")
)

# Authorization: Digest username="..", response=".." -- the whole parameter list
_DIGEST = _Rule(
    re.compile(
        r"[Dd](?i:(?<![A-Za-z0-9_-]d)igest[ \t]+(?=(?:username|realm|nonce)=)"
        r"(?P<s>(?:[^\r\n\"']|\"[^\"\r\n]*+\")++))"
    )
)

# A bare "Bearer xxx" outside a header; only random-looking values ("Bearer realm" stays).
_BEARER = _Rule(
    re.compile(r"[Bb](?i:(?<![A-Za-z0-9_-]b)(?:earer|asic)[ \t]+(?P<s>[A-Za-z0-9._~+/-]++=*+))"),
    check=_looks_secret,
)

_CARD = _Rule(
    re.compile(
        r"(?P<s>[0-9](?<![A-Za-z0-9_.][0-9])(?<![0-9][ -][0-9])"  # lookbehinds after the first digit: see _TELEGRAM
        r"(?:[ -]?[0-9]){12,18})"
        r"(?![ -]?[0-9])(?![A-Za-z_]|\.[0-9])"
    ),
    check=_is_card,
)

# ------------------------------------------------------------- key = value fields

# The sensitive word sits at the *end* of the key; anything glued before it is kept as
# part of the key (db_password, spring.datasource.password, x-api-key, accessToken,
# PHPSESSID). Nothing may follow it except a key/hash/value suffix, so token_count,
# tokens, secret_name, password_reset, PASSWORD_MIN_LENGTH are not keys we care about.
# A bare "pass" is case-sensitive and must stand on its own or after a separator (PASS,
# DB_PASS, redis.pass, dbPass), so bypass=, compass: and "Pass :code:" stay text.
_KEY_CORE = (
    r"(?:(?P<pw>passw(?:or)?d|passphrase|pwd)|secret|token|api[_-]?key|access[_-]?key|account[_-]?key"
    r"|private[_-]?key|credentials?|(?P<pass>(?-i:(?<![A-Za-z0-9])(?:pass|PASS)|(?<=[a-z0-9])Pass))"
    r"|(?P<auth>auth(?:orization)?)|sess(?:ion)?(?:[_-]?id)?|sid|sig(?:nature)?)"
    r"(?:[_-]?(?:key|hash|value))?"
)
# The lookahead on the first letter lets the engine skip most positions cheaply (8x faster).
_FIELD = re.compile(
    r"(?i)(?=[acpst])" + _KEY_CORE + r"(?P<kq>\\?[\"'])?(?P<gap>[ \t]*)(?P<sep>:=|=>|[:=])(?!=)[ \t]*"
)
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
# Type names too: "password: str" in a signature, "password: string" in a TS interface.
_NOT_A_SECRET = re.compile(
    r"(?i:null|none|nil|undefined|true|false|yes|no|bearer|basic|token)|\*+|\?|%s|%\(\w+\)s|\$[0-9]+|:\w+"
    r"|\$\{[^}]*\}|\$[A-Z_][A-Z0-9_]*|\{\{[^}]*\}\}|<[^>]*>|(?:\[REDACTED\])+"
    r"|(?:str|string|String|bytes|int|integer|float|bool|boolean|number|any|Any|unknown|object|list|List|dict"
    r"|Dict|tuple|Tuple|Callable|Optional|Union|Final|SecretStr)"
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


def _key_start(text: str, key: re.Match[str]) -> int:
    """Where the whole key begins, qualifiers glued before the sensitive word included."""
    key_start = key.start()
    while key_start > max(0, key.start() - 64) and text[key_start - 1] in _KEY_CHARS:
        key_start -= 1
    return key_start


def _field_mask(text: str, key: re.Match[str], quote: str, body: re.Match[str]) -> str | None:
    """The masked replacement for one field's value, or None to leave it alone."""
    value = body.group(0)
    masked = _mask_value(value)
    if masked == value:
        return None
    key_start = _key_start(text, key)
    if text.endswith("://", 0, key_start):
        return None  # user:password in a URL, the URL rule's business
    scheme, rest = _split_scheme(value)
    if quote or (key.group("sep") != ":" and not key.group("gap")):
        strong = True  # "key": "v", key='v', key=v: unambiguous assignments
    elif scheme and key.group("auth") is not None:
        strong = True  # Authorization: Basic xxx
    elif _continues_as_prose(text, body.end()):
        strong = False  # "password: must be at least 8 characters"
    elif key.group("pass") is not None and (
        key.group("sep") != ":" or key.group("gap") or (key.group("pass") == "PASS" and key_start == key.start())
    ):
        # "x_pass = other_var" in a traceback's source line, "pass :code:" in a docstring,
        # "PASS: test_login" in a test report. DB_PASS=x (above), DB_PASS: x, pass: x stay strong.
        strong = False
    else:
        strong = key.group("pw") is not None or _at_field_start(text, key_start)
    return masked if strong or _looks_secret(rest.replace(MASK, "")) else None


_BLOCK_INDICATOR = re.compile(r"[|>][-+]?[0-9]?")
_KEY_LINE_PREFIX = re.compile(r"[ \t]*(?:-[ \t]+)?[\"']?")
_LINE_BREAK = re.compile(r"[ \t]*\r?\n")
_NESTED_KEY = re.compile(r"[\w.-]{1,64}:(?:\s|$)|-(?:\s|$)")
_MAX_BLOCK_LINES = 64


def _value_below_key(text: str, key: re.Match[str], value_start: int, block: bool) -> tuple[int, int] | None:
    """YAML: the span of a value written on the lines below its key, or None.

    ``password:\n  hunter2`` (one token on the next, deeper line) and block scalars
    ``private_key: |\n  line\n  line`` (every deeper line, up to a bound). The key must
    open its line, so "Error: wrong password:" above an indented stack is not a key.
    """
    brk = _LINE_BREAK.match(text, value_start)
    if brk is None or not text.startswith((" ", "\t"), brk.end()):
        return None  # the value is not on an indented line below
    key_start = _key_start(text, key)
    line_start = text.rfind("\n", max(0, key_start - 128), key_start) + 1
    if (line_start == 0 and key_start > 128) or not _KEY_LINE_PREFIX.fullmatch(text, line_start, key_start):
        return None
    indent = key_start - line_start
    start = end = -1
    pos = brk.end()
    for _ in range(_MAX_BLOCK_LINES if block else 1):
        line_end = text.find("\n", pos)
        line_end = len(text) if line_end == -1 else line_end
        line = text[pos:line_end].rstrip(" \t\r")
        content = line.lstrip(" \t")
        if not content or len(line) - len(content) <= indent:
            break
        if start < 0:
            start = pos + len(line) - len(content)
            if not block:
                content = content.split(" #", 1)[0].rstrip(" \t")  # a trailing YAML comment stays
                if " " in content or _NESTED_KEY.match(content):
                    return None  # a nested mapping or list, or prose: not a scalar value
                line = line[: len(line) - len(line.lstrip(" \t"))] + content
            if _NOT_A_SECRET.fullmatch(content):
                return None
        end = pos + len(line)
        pos = line_end + 1
        if pos > len(text):
            break
    return (start, end) if start >= 0 else None


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
        block = body is not None and _BLOCK_INDICATOR.fullmatch(body.group(0)) is not None
        if not quote and key.group("sep") == ":" and (body is None or block):
            below = _value_below_key(text, key, body.end() if body else pos, block)
            if below is not None:
                out.append(text[last : below[0]])
                out.append(MASK)
                last = pos = below[1]
                continue
            if block:
                continue  # "key: |" with nothing below it: the "|" is no secret
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


# ------------------------------------------------- encoded JSON and command lines


def _not_placeholder(value: str) -> bool:
    return _NOT_A_SECRET.fullmatch(value.strip("'\"")) is None


# JSON that went through a URL (%22password%22%3A%22x%22) or a query value (password%3Dx).
# Encoded once or twice (%2522 is %22 sent through a second encoder): "%(?:25)?" below.
_PCT = r"%(?:25){0,2}"
_URL_ENCODED_VALUE = r"(?P<s>(?:[^%\s\"'&<>]|%(?!(?:25){0,2}(?:22|26))[0-9A-Fa-f]{2})++)"
_URL_ENCODED_JSON = _Rule(
    re.compile(
        _PCT + r"22[A-Za-z0-9_.-]{0,64}?(?i:" + _KEY_CORE + r")" + _PCT + r"22(?:" + _PCT + r"20|\+)*+"
        + _PCT + r"3[Aa](?:" + _PCT + r"20|\+)*+" + _PCT + r"22" + _URL_ENCODED_VALUE
    ),
    check=_not_placeholder,
)
_URL_ENCODED_QUERY = _Rule(
    re.compile(r"(?i)(?=[acpst])" + _KEY_CORE + _PCT + r"3D" + _URL_ENCODED_VALUE),
    check=_not_placeholder,
    needles=("%3D", "%3d", "%253D", "%253d"),
)
# key&#61;value: an "=" escaped as an HTML entity (a query string printed into a page or an email).
_HTML_EQUALS_FIELD = _Rule(
    re.compile(
        r"(?i)(?=[acpst])" + _KEY_CORE + r"(?:&#0*61;|&#x0*3d;|&equals;)"
        r"(?P<s>[^&\s\"'<>]++)"  # a literal "&" ends it: the next parameter (escaped or not)
    ),
    check=_not_placeholder,
    needles=("&#", "&equals;", "&#X"),
)
# <password>x</password>, <ns:secretKey attr="1">x</ns:secretKey>: XML config and SOAP faults.
_XML_ELEMENT = _Rule(
    re.compile(
        r"(?i)<(?P<tag>[A-Za-z0-9_.:-]{0,64}?" + _KEY_CORE + r")(?:[ \t][^<>]{0,256})?>"
        r"(?P<s>[^<]{1,4096}+)</(?P=tag)>"
    ),
    check=_not_placeholder,
    needles=("</",),
)
# JSON or attributes that went through an HTML escaper: &quot;password&quot;:&quot;x&quot;
_HTML_QUOTE = r"&(?:quot;|apos;|#0*3[49];|#[xX]0*2[27];)"
_HTML_ESCAPED_FIELD = _Rule(
    re.compile(
        _HTML_QUOTE + r"[A-Za-z0-9_.-]{0,64}?(?i:" + _KEY_CORE + ")" + _HTML_QUOTE
        + r"[ \t]*+[:=][ \t]*+" + _HTML_QUOTE
        + r"(?P<s>(?:[^&\r\n<>\"]|&(?!quot;|apos;|#0*3[49];|#[xX]0*2[27];))++)"
    ),
    check=_not_placeholder,
)

# Between a flag and its value: spaces, or "', '" when an argv list was logged as a list.
_ARG_GAP = r"(?:[ \t]++|['\"],[ \t]?(?=['\"]))"
_ARG_START = r"(?<=[ \t'\"])"

# --password x, -token 'x' (the "=" form is a key=value field). A flag in a sentence
# ("--password is required", "--token TOKEN" in usage text) is no secret: a value of
# lowercase letters only counts when nothing but another flag or the line end follows.
_FLAG_PROSE = frozenset(
    {
        "is", "are", "was", "must", "should", "can", "cannot", "will", "may", "requires", "required", "needs",
        "expects", "expected", "option", "options", "flag", "flags", "argument", "arguments", "parameter", "value",
        "not", "and", "or", "to", "for", "of", "in", "on", "with", "without", "the", "a", "an", "given", "provided",
        "specified", "missing", "ignored", "deprecated", "set", "unset",
    }
)


_METAVAR = re.compile(r"[A-Z][A-Z_]{2,}")


def _flag_value_is_secret(value: str) -> bool:
    bare = value.strip("'\"").rstrip(")]},;.")  # "[--token TOKEN]" in a usage line
    if not bare or bare.lower() in _FLAG_PROSE or _METAVAR.fullmatch(bare):
        return False  # prose or a usage metavar
    return _not_placeholder(value)


_CLI_SECRET_FLAG = _Rule(
    re.compile(
        # "-" first (the lookbehind then checks what precedes it): a literal start is fast to find
        r"-(?<![\w-]-)-?(?i:passw(?:or)?d|pass|pwd|passphrase|token|secret|api[_-]?key"
        r"|(?:access|auth|bearer|refresh)[_-]?token|client[_-]?secret)(?![\w-])"
        + _ARG_GAP
        + r"(?:'(?P<s>[^'\r\n]*+)'?|\"(?P<s2>[^\"\r\n]*+)\"?"
        r"|(?P<s3>(?![a-z]++(?![^\s'\"]))[^\s'\"-][^\s'\"]*+"
        r"|[a-z]++(?=[ \t]*+(?:$|[\r\n'\"]|-))))"
    ),
    check=_flag_value_is_secret,
)


@dataclass(frozen=True, slots=True)
class _CommandRule:
    """Arguments that are secret only after a given command on the same line.

    ``mysql -pS3cret`` and ``curl -u user:S3cret``: the same flags elsewhere (``ssh -p
    2222``, ``docker -u 1000:1000``) are ports and user ids. The line after the command
    is read once (a bounded number of words, so masking does not move the bound and a
    second pass finds the same arguments), so the cost stays linear.
    """

    command: re.Pattern[str]
    argument: re.Pattern[str]
    needles: tuple[str, ...]

    def apply(self, text: str) -> str:
        if not any(needle in text for needle in self.needles):
            return text
        return self.command.sub(self._replace_line, text)

    def _replace_line(self, m: re.Match[str]) -> str:
        return m.group("cmd") + self.argument.sub(_mask_secret_group, m.group("rest"))


def _mask_secret_group(m: re.Match[str]) -> str:
    """Mask the secret group that took part (s, s2, s3: one per quoting style)."""
    name = m.lastgroup
    secret = m.group(name) if name else None
    if name is None or not secret or secret == MASK or not _not_placeholder(secret):
        return m.group(0)
    start, end = m.span(name)
    return m.group(0)[: start - m.start()] + MASK + m.group(0)[end - m.start() :]


_LINE_REST = r"(?P<rest>[^\s]{0,256}+(?:[ \t]++[^\s]{1,256}+){0,64})"
_MYSQL_PASSWORD = _CommandRule(
    re.compile(
        r"(?P<cmd>(?<![\w-])(?:mysql(?:dump|admin|import|show|check|pump|binlog|slap)?|mariadb(?:-[a-z]{2,12})?)"
        r"(?![\w-]))" + _LINE_REST
    ),
    re.compile(_ARG_START + r"-p(?:'(?P<s>[^'\r\n]*+)'?|\"(?P<s2>[^\"\r\n]*+)\"?|(?P<s3>[^\s'\"]++))"),
    needles=("mysql", "mariadb"),
)
_CURL_USER = _CommandRule(
    re.compile(r"(?P<cmd>(?<![\w-])curl(?![\w-]))" + _LINE_REST),
    re.compile(
        _ARG_START + r"(?:-u|-U|--user|--proxy-user)(?:=|" + _ARG_GAP + r")?"
        r"(?:'[^':\r\n]*+:(?P<s>[^'\r\n]*+)|\"[^\":\r\n]*+:(?P<s2>[^\"\r\n]*+)|[^\s:'\"]*+:(?P<s3>[^\s'\"]++))"
    ),
    needles=("curl",),
)
# redis-cli -a x (also -a'x'), and sshpass -p x: both read the password from argv.
_REDIS_CLI_PASSWORD = _CommandRule(
    re.compile(r"(?P<cmd>(?<![\w-])redis-cli(?![\w-]))" + _LINE_REST),
    re.compile(_ARG_START + r"-a(?:" + _ARG_GAP + r")?(?:'(?P<s>[^'\r\n]*+)'?|\"(?P<s2>[^\"\r\n]*+)\"?"
               r"|(?P<s3>[^\s'\"-][^\s'\"]*+))"),
    needles=("redis-cli",),
)
_SSHPASS_PASSWORD = _CommandRule(
    re.compile(r"(?P<cmd>(?<![\w-])sshpass(?![\w-]))" + _LINE_REST),
    re.compile(_ARG_START + r"-p(?:" + _ARG_GAP + r")?(?:'(?P<s>[^'\r\n]*+)'?|\"(?P<s2>[^\"\r\n]*+)\"?"
               r"|(?P<s3>[^\s'\"-][^\s'\"]*+))"),
    needles=("sshpass",),
)


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
                re.compile(pattern)  # the error messages people know
                regex = BoundedRegex(_regex.compile(pattern, _regex.V0))
            except (re.error, _regex.error) as exc:
                raise ValueError(f"invalid redaction pattern {pattern!r}: {exc}") from exc
            if regex.fullmatch(""):
                raise ValueError(f"invalid redaction pattern {pattern!r}: it matches the empty string")
            extras.append(_Rule(regex, group=1 if regex.groups else 0))
        self._rules: tuple[_Rule | _CommandRule, ...] = (
            *extras,
            _PEM,
            _URL_PASSWORD,
            _URL_KEY,
            _TOKENS,
            _TELEGRAM,
            _WEBHOOKS,
            _DIGEST,
            _BEARER,
            _URL_ENCODED_JSON,
            _URL_ENCODED_QUERY,
            _HTML_ESCAPED_FIELD,
            _HTML_EQUALS_FIELD,
            _XML_ELEMENT,
            _CLI_SECRET_FLAG,
            _MYSQL_PASSWORD,
            _CURL_USER,
            _REDIS_CLI_PASSWORD,
            _SSHPASS_PASSWORD,
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
