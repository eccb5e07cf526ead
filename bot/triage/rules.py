"""Offline rules triage: an alert in, a `Triage` (category, priority, likely cause) out.

Why data and not code: the rules live in ``rules.toml`` next to this module so they can be
read, reviewed and extended by people who triage errors, without touching Python. This
module only loads, validates and applies them. The file format and the matching order are
documented in the header of ``bot/triage/rules.toml``.

Everything that can be wrong with a rules file is checked at load time (unknown keys, bad
regexes, regexes that could backtrack catastrophically, unknown categories, a cause that
refers to a group its regex does not define) and reported as a `RulesError` naming the
file, the rule id and the problem, so a broken file fails at start-up, not at 3 a.m.

Alert text is untrusted: it only ever meets regular expressions, is clipped to a bounded
size first, and values copied into the cause are redacted, then flattened to one short line.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.models import Alert, AlertKind, Category, Priority, Triage
from bot.redact import MASK, redact

if TYPE_CHECKING:
    from bot.triage.owners import OwnerMap

__all__ = ["Rule", "RuleSet", "RulesError"]

REGEX_FLAGS = re.IGNORECASE | re.MULTILINE
#: Bounds on how much alert text the regexes see (keeps matching cost flat on huge input).
#: Node traces put the error first, Python tracebacks put it last: keep both ends.
MAX_TITLE = 2_000
MAX_MESSAGE = 2_000
STACK_HEAD = 12_000
STACK_TAIL = 6_000
MAX_VALUE_LEN = 80
#: How much of a captured value's line is read on each side to judge whether it is a secret.
VALUE_CONTEXT = 64

_ID_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
# {name} or {name|default text}; anything else in a cause is literal text.
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_]\w{0,39})(?:\|([^{}\n]{0,120}))?\}")
# A quantified group whose body ends in a quantifier, e.g. (a+)+ or (\w*)*: the classic
# catastrophic-backtracking shape. Bounded repeats ({0,80}) are fine and not caught.
_NESTED_QUANTIFIER_RE = re.compile(r"\((?:[^()\\]|\\.)*[+*]\)(?:[+*]|\{\d*,\})")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_REGEX_META = frozenset(".^$*+?{}[]()|")
_FOLD_EXTRA = str.maketrans({"\u0131": "i"})

_TOP_KEYS = frozenset({"version", "fallback", "kinds", "modifiers", "rule"})
_RULE_KEYS = frozenset({"id", "match", "exclude", "require", "category", "priority", "tags", "cause", "fallback"})
_OUTCOME_KEYS = frozenset({"category", "priority", "cause", "tags"})
_MODIFIER_KEYS = frozenset({"environment", "level", "high_count", "high_count_steps"})
_KINDS = frozenset(k.value for k in AlertKind) - {AlertKind.ERROR.value}


class RulesError(ValueError):
    """A rules or owners file is unreadable or invalid; the message says where and why."""


@dataclass(frozen=True)
class Rule:
    """One rule: if any `match` regex hits, every `require` hits and no `exclude` hits."""

    id: str
    match: tuple[re.Pattern[str], ...]
    category: Category
    priority: Priority
    cause: str
    tags: tuple[str, ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()
    require: tuple[re.Pattern[str], ...] = ()
    fallback: bool = False
    #: per `match` regex, a literal it cannot match without (lower-cased), or None
    needles: tuple[str | None, ...] = ()

    def search(self, text: str, full: str, folded: str | None = None) -> re.Match[str] | None:
        """First `match` hit in `text`; `require`/`exclude` are checked on the `full` text.

        `folded` is `fold(full)`: when given, a regex whose required literal is absent
        from it is skipped without running (same result, much cheaper on long text).
        """
        hit = None
        for i, rx in enumerate(self.match):
            needle = self.needles[i] if i < len(self.needles) else None
            if folded is not None and needle is not None and needle not in folded:
                continue
            hit = rx.search(text)
            if hit:
                break
        if hit is None:
            return None
        if any(rx.search(full) is None for rx in self.require):
            return None
        if any(rx.search(full) for rx in self.exclude):
            return None
        return hit

    def render_cause(self, hit: re.Match[str] | None) -> str:
        return render_cause(self.cause, hit)


@dataclass(frozen=True)
class _Outcome:
    """A fixed result (the no-match fallback, or a non-error alert kind)."""

    category: Category
    priority: Priority
    cause: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Modifiers:
    environment: Mapping[str, int]
    level: Mapping[str, int]
    high_count: int
    high_count_steps: int


#: Used when a rules file has no [fallback] / [kinds.*] of its own.
_DEFAULT_FALLBACK = _Outcome(
    Category.UNKNOWN, Priority.P2, "No rule recognised this error; read the stack trace.", ("unclassified",)
)
_DEFAULT_KINDS: dict[str, _Outcome] = {
    AlertKind.UPTIME_DOWN.value: _Outcome(
        Category.INFRASTRUCTURE, Priority.P0, "The uptime monitor cannot reach the service: it is down.", ("uptime",)
    ),
    AlertKind.UPTIME_UP.value: _Outcome(
        Category.INFRASTRUCTURE, Priority.P3, "The uptime monitor reports the service is back up.", ("uptime",)
    ),
    AlertKind.TEST.value: _Outcome(
        Category.UNKNOWN, Priority.P3, "Test notification; nothing is broken.", ("test-event",)
    ),
}


class RuleSet:
    """Ordered rules plus the priority modifiers; build it with `RuleSet.load`."""

    def __init__(
        self,
        rules: Sequence[Rule],
        fallback: _Outcome,
        modifiers: _Modifiers,
        kinds: Mapping[str, _Outcome],
        source: str = "<rules>",
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.source = source
        self._fallback = fallback
        self._modifiers = modifiers
        self._kinds = dict(kinds)
        self._strong = tuple(r for r in self.rules if not r.fallback)
        self._weak = tuple(r for r in self.rules if r.fallback)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: Path | None = None) -> RuleSet:
        """Load and validate a rules file; None loads the packaged ``rules.toml``."""
        if path is None:
            source = "bot/triage/rules.toml"
            try:
                text = resources.files("bot.triage").joinpath("rules.toml").read_text("utf-8")
            except OSError as exc:  # pragma: no cover - broken install
                raise RulesError(f"{source}: cannot read packaged rules: {exc}") from exc
        else:
            source = str(path)
            try:
                text = Path(path).read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise RulesError(f"{source}: cannot read rules file: {exc}") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(f"{source}: invalid TOML: {exc}") from exc
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<rules>") -> RuleSet:
        """Validate already-parsed TOML data (what `load` does after reading the file)."""
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise RulesError(f"{source}: unknown top-level key(s): {', '.join(sorted(unknown))}")
        raw_rules = data.get("rule")
        if not isinstance(raw_rules, list) or not raw_rules:
            raise RulesError(f"{source}: no rules: expected one or more [[rule]] tables")
        rules: list[Rule] = []
        seen: set[str] = set()
        for index, raw in enumerate(raw_rules, 1):
            rule = _parse_rule(raw, source, index)
            if rule.id in seen:
                raise RulesError(f"{source}: rule '{rule.id}' (#{index}): duplicate id")
            seen.add(rule.id)
            rules.append(rule)
        fallback = _DEFAULT_FALLBACK
        if "fallback" in data:
            fallback = _parse_outcome(data["fallback"], f"{source}: [fallback]")
        kinds_raw = data.get("kinds", {})
        if not isinstance(kinds_raw, dict):
            raise RulesError(f"{source}: [kinds] must be a table")
        kinds: dict[str, _Outcome] = dict(_DEFAULT_KINDS)
        for kind, raw in kinds_raw.items():
            if kind not in _KINDS:
                raise RulesError(
                    f"{source}: [kinds.{kind}]: unknown alert kind (expected one of {', '.join(sorted(_KINDS))})"
                )
            kinds[kind] = _parse_outcome(raw, f"{source}: [kinds.{kind}]")
        modifiers = _parse_modifiers(data.get("modifiers", {}), f"{source}: [modifiers]")
        return cls(rules, fallback, modifiers, kinds, source)

    # ------------------------------------------------------------------ triage
    def match(self, alert: Alert) -> tuple[Rule, re.Match[str]] | None:
        """The rule that decides this alert, with its regex match, or None.

        Order: normal rules on the headline (title + message), then normal rules on the
        whole text, then `fallback = true` rules on the headline, then on the whole text.
        Within each pass the first rule in file order wins.
        """
        headline = "\n".join(p for p in (alert.title[:MAX_TITLE], alert.message[:MAX_MESSAGE]) if p)
        full = "\n".join(p for p in (headline, _clip(alert.stacktrace)) if p)
        folded = fold(full)
        for group in (self._strong, self._weak):
            for text in (headline, full):
                if not text:
                    continue
                for rule in group:
                    hit = rule.search(text, full, folded)
                    if hit is not None:
                        return rule, hit
        return None

    def triage(self, alert: Alert, owners: OwnerMap | None = None) -> Triage:
        """Categorise and prioritise one alert; fills the owner when `owners` is given."""
        kind_outcome = self._kinds.get(alert.kind.value)
        if kind_outcome is not None:
            # Uptime / test alerts have a fixed outcome; no rule or modifier applies
            # (an uptime monitor saying "down" is P0 whatever its level).
            category, priority, cause = (
                kind_outcome.category,
                kind_outcome.priority,
                kind_outcome.cause,
            )
            tags: list[str] = [*kind_outcome.tags, f"kind:{alert.kind.value}"]
            rule_id: str | None = f"kind.{alert.kind.value}"
        else:
            found = self.match(alert)
            if found is None:
                category, base, cause = (
                    self._fallback.category,
                    self._fallback.priority,
                    self._fallback.cause,
                )
                tags = [*self._fallback.tags]
                rule_id = None
            else:
                rule, hit = found
                category, base, cause = rule.category, rule.priority, rule.render_cause(hit)
                tags = [*rule.tags]
                rule_id = rule.id
            priority, trace = self._apply_modifiers(base, alert)
            tags.extend(trace)
        owner = None
        if owners is not None:
            paths = owners.paths_from_stacktrace(alert.stacktrace)
            owner = owners.find(alert.project, category, paths)
        return Triage(
            priority=priority,
            category=category,
            likely_cause=cause,
            tags=tuple(dict.fromkeys(tags)),
            owner=owner,
            affected_users=_affected_users(alert),
            rule_id=rule_id,
            source="rules",
        )

    def _apply_modifiers(self, base: Priority, alert: Alert) -> tuple[Priority, list[str]]:
        """Sum the steps (positive = more urgent) and apply them once, clamped to P0..P3."""
        mods = self._modifiers
        steps = 0
        trace: list[str] = []
        env = (alert.environment or "").strip().lower()
        env_steps = mods.environment.get(env, 0) if env else 0
        if env_steps:
            steps += env_steps
            trace.append(f"env:{_clean(env, 30)}")
        level = (alert.level or "").strip().lower()
        level_steps = mods.level.get(level, 0) if level else 0
        if level_steps:
            steps += level_steps
            trace.append(f"level:{_clean(level, 30)}")
        if mods.high_count_steps and alert.count >= mods.high_count:
            steps += mods.high_count_steps
            trace.append(f"count:{alert.count}")
        return Priority.from_rank(base.rank - steps), trace


# ---------------------------------------------------------------------- helpers
def render_cause(template: str, hit: re.Match[str] | None) -> str:
    """Fill {name} / {name|default} from the match's named groups; never raises.

    Values are redacted first, then flattened to one line and shortened: a cut never
    leaves half a secret. They are inserted in a single pass, so a value that itself
    looks like "{x}" is left as text, never expanded.
    """

    def fill(m: re.Match[str]) -> str:
        value = _clean(_redacted_group(hit, m.group(1)), MAX_VALUE_LEN)
        if value:
            return value
        return m.group(2) if m.group(2) is not None else "?"

    return _clean(_PLACEHOLDER_RE.sub(fill, template), 300)


def _redacted_group(hit: re.Match[str] | None, name: str) -> str:
    """A named group's value with its secrets masked, judged in the context of its line.

    Alone, ``default:S3cret@redis:6379`` carries no shape a redactor knows; with the
    ``redis://`` before it, it does. So the value is redacted together with up to
    VALUE_CONTEXT characters of its line on each side, and the context is taken off
    again. A secret that runs across the value's edge leaves a bare mask.
    """
    if hit is None or name not in hit.re.groupindex:
        return ""
    value = hit.group(name)
    if not value:
        return ""
    start, end = hit.span(name)
    text = hit.string
    head_start = max(text.rfind("\n", max(0, start - VALUE_CONTEXT), start) + 1, start - VALUE_CONTEXT)
    tail_end = text.find("\n", end, end + VALUE_CONTEXT)
    head = text[head_start:start]
    tail = text[end : tail_end if tail_end != -1 else end + VALUE_CONTEXT]
    masked = redact(head + value + tail)
    if len(masked) >= len(head) + len(tail) and masked.startswith(head) and masked.endswith(tail):
        return masked[len(head) : len(masked) - len(tail)]
    return MASK


def fold(text: str) -> str:
    """Case-fold like IGNORECASE does for ASCII literals (incl. dotless i, long s, Kelvin)."""
    return text.casefold().translate(_FOLD_EXTRA)


def required_literal(pattern: str) -> str | None:
    """A literal every match of `pattern` must contain (folded), or None if unsure.

    Only the plain-text run at the start of the pattern (after an optional \\b or ^) is
    used, and only when the pattern has no top-level '|'. Conservative by design: it may
    return None for patterns that do have a literal, never a literal that is not required.
    """
    if _has_top_level_bar(pattern):
        return None
    i = 2 if pattern.startswith("\\b") else 1 if pattern.startswith("^") else 0
    chars: list[str] = []
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not nxt or nxt.isalnum() or nxt == "_":
                break
            chars.append(nxt)
            i += 2
            continue
        if c in _REGEX_META:
            break
        chars.append(c)
        i += 1
    if i < len(pattern) and pattern[i] in "?*{" and chars:
        chars.pop()  # a quantifier makes the last character optional
    literal = "".join(chars)
    return fold(literal) if len(literal) >= 3 and literal.isascii() else None


def _has_top_level_bar(pattern: str) -> bool:
    depth, i, in_class = 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return True
        i += 1
    return False


def _clean(value: str, limit: int) -> str:
    value = _CONTROL_RE.sub(" ", value)
    value = " ".join(value.split()).strip(" .,;:")
    if len(value) > limit:
        value = value[: limit - 1].rstrip() + "…"
    return value


def _clip(text: str) -> str:
    if len(text) <= STACK_HEAD + STACK_TAIL:
        return text
    return f"{text[:STACK_HEAD]}\n…\n{text[-STACK_TAIL:]}"


def _affected_users(alert: Alert) -> str | None:
    for key in ("users", "affected_users", "user_count"):
        value = alert.tags.get(key)
        if value:
            return _clean(str(value), 40) or None
    return None


def _parse_rule(raw: Any, source: str, index: int) -> Rule:
    where = f"{source}: rule #{index}"
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: must be a table")
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ID_RE.fullmatch(rid):
        raise RulesError(f"{where}: 'id' must be lowercase letters, digits, '.', '_' or '-' (got {rid!r})")
    where = f"{source}: rule '{rid}' (#{index})"
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise RulesError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")
    match = _regexes(raw.get("match"), f"{where}: match", required=True)
    exclude = _regexes(raw.get("exclude", []), f"{where}: exclude")
    require = _regexes(raw.get("require", []), f"{where}: require")
    outcome = _parse_outcome({k: raw[k] for k in _OUTCOME_KEYS if k in raw}, where)
    _check_placeholders(outcome.cause, match, where)
    fallback = raw.get("fallback", False)
    if not isinstance(fallback, bool):
        raise RulesError(f"{where}: 'fallback' must be true or false")
    return Rule(
        id=rid,
        match=match,
        category=outcome.category,
        priority=outcome.priority,
        cause=outcome.cause,
        tags=outcome.tags,
        exclude=exclude,
        require=require,
        fallback=fallback,
        needles=tuple(required_literal(rx.pattern) for rx in match),
    )


def _parse_outcome(raw: Any, where: str) -> _Outcome:
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: missing or not a table (needs category, priority, cause)")
    unknown = set(raw) - _OUTCOME_KEYS
    if unknown:
        raise RulesError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")
    category = raw.get("category")
    try:
        cat = Category(str(category))
    except ValueError:
        raise RulesError(
            f"{where}: category {category!r} is not one of {', '.join(c.value for c in Category)}"
        ) from None
    priority = raw.get("priority")
    try:
        prio = Priority(str(priority))
    except ValueError:
        raise RulesError(f"{where}: priority {priority!r} is not one of P0, P1, P2, P3") from None
    cause = raw.get("cause")
    if not isinstance(cause, str) or not cause.strip():
        raise RulesError(f"{where}: 'cause' must be a non-empty string")
    if "\n" in cause or len(cause) > 240:
        raise RulesError(f"{where}: 'cause' must be one line of at most 240 characters")
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise RulesError(f"{where}: 'tags' must be a list of non-empty strings")
    return _Outcome(cat, prio, cause.strip(), tuple(tags))


def _regexes(raw: Any, where: str, required: bool = False) -> tuple[re.Pattern[str], ...]:
    if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
        raise RulesError(f"{where}: must be a list of regex strings")
    if required and not raw:
        raise RulesError(f"{where}: needs at least one regex")
    compiled = []
    for i, pattern in enumerate(raw):
        if not pattern:
            raise RulesError(f"{where}[{i}]: empty regex")
        if _NESTED_QUANTIFIER_RE.search(pattern):
            raise RulesError(
                f"{where}[{i}]: nested unbounded quantifier (like (a+)+) can backtrack catastrophically: {pattern!r}"
            )
        try:
            compiled.append(re.compile(pattern, REGEX_FLAGS))
        except re.error as exc:
            raise RulesError(f"{where}[{i}]: invalid regex {pattern!r}: {exc}") from None
    return tuple(compiled)


def _check_placeholders(cause: str, match: Sequence[re.Pattern[str]], where: str) -> None:
    """A placeholder without a default must be a named group in EVERY match regex."""
    stripped = _PLACEHOLDER_RE.sub("", cause)
    if "{" in stripped or "}" in stripped:
        raise RulesError(f"{where}: cause has a stray '{{' or '}}' (use {{name}} or {{name|default}})")
    for m in _PLACEHOLDER_RE.finditer(cause):
        name, default = m.group(1), m.group(2)
        missing = [i for i, rx in enumerate(match) if name not in rx.groupindex]
        if len(missing) == len(match):
            raise RulesError(f"{where}: cause uses {{{name}}} but no match regex has (?P<{name}>...)")
        if missing and default is None:
            raise RulesError(
                f"{where}: cause uses {{{name}}} without a default, but match{missing} has no "
                f"(?P<{name}>...): write {{{name}|some default}}"
            )


def _parse_modifiers(raw: Any, where: str) -> _Modifiers:
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: must be a table")
    unknown = set(raw) - _MODIFIER_KEYS
    if unknown:
        raise RulesError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")

    def steps_table(key: str) -> dict[str, int]:
        table = raw.get(key, {})
        if not isinstance(table, dict):
            raise RulesError(f"{where}.{key}: must be a table of name = steps")
        out: dict[str, int] = {}
        for name, steps in table.items():
            if isinstance(steps, bool) or not isinstance(steps, int) or not -3 <= steps <= 3:
                raise RulesError(f"{where}.{key}: {name!r} must be an integer from -3 to 3")
            out[name.strip().lower()] = steps
        return out

    high_count = raw.get("high_count", 100)
    steps = raw.get("high_count_steps", 1)
    for name, value, low in (("high_count", high_count, 1), ("high_count_steps", steps, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise RulesError(f"{where}: {name} must be an integer >= {low}")
    return _Modifiers(steps_table("environment"), steps_table("level"), high_count, steps)
