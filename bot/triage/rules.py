"""Offline rules triage: an alert in, a `Triage` (category, priority, likely cause) out.

Why data and not code: the rules live in ``rules.toml`` next to this module so they can be
read, reviewed and extended by people who triage errors, without touching Python. This
module only loads, validates and applies them. The file format and the matching order are
documented in the header of ``bot/triage/rules.toml``.

What a rules file may hold is declared by the pydantic models below (`RulesFile`, `RuleModel`,
`Outcome`, `Modifiers`): unknown keys, bad or catastrophically backtracking regexes (see
`bot.regex_safety`), unknown categories, a cause that refers to a group its regex does not
define. Every problem is reported at once in a `RulesError`, each naming the file, the rule
and the key, so a broken file fails at start-up, not at 3 a.m.

Alert text is untrusted: it only ever meets regular expressions, is clipped to a bounded
size first, and values copied into the cause are redacted, then flattened to one short line.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, Field, StrictBool, StrictInt, field_validator, model_validator

from bot.config_files import (
    ConfigFileError,
    Loc,
    NonEmptyStr,
    StrictModel,
    between,
    matching,
    parse_model,
    parse_toml,
    raise_problems,
    read_text,
    regex,
)
from bot.models import Alert, Category, Owner, Priority, Triage
from bot.redact import MASK, redact
from bot.regex_safety import BoundedRegex, RegexMatch, RegexTimeout

__all__ = ["OwnerLookup", "Rule", "RuleSet", "RulesError"]

log = logging.getLogger(__name__)
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
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_REGEX_META = frozenset(".^$*+?{}[]()|")
_FOLD_EXTRA = str.maketrans({"\u0131": "i"})


class RulesError(ConfigFileError):
    """The rules file is unreadable or invalid; ``problems`` says where and why, one line each."""

    what = "the rules file"


class OwnerLookup(Protocol):
    """What triage needs from an owners map (`bot.triage.owners.OwnerMap`)."""

    def paths_from_stacktrace(self, text: str) -> list[str]: ...

    def find(self, project: str | None, category: Category, paths: Sequence[str]) -> Owner | None: ...


@dataclass(frozen=True)
class Rule:
    """One rule: if any `match` regex hits, every `require` hits and no `exclude` hits."""

    id: str
    match: tuple[BoundedRegex, ...]
    category: Category
    priority: Priority
    cause: str
    tags: tuple[str, ...] = ()
    exclude: tuple[BoundedRegex, ...] = ()
    require: tuple[BoundedRegex, ...] = ()
    fallback: bool = False
    #: per `match` regex, a literal it cannot match without (lower-cased), or None
    needles: tuple[str | None, ...] = ()

    def search(self, text: str, full: str, folded: str | None = None) -> RegexMatch | None:
        """First `match` hit in `text`; `require`/`exclude` are checked on the `full` text.

        `folded` is `fold(full)`: when given, a regex whose required literal is absent
        from it is skipped without running (same result, much cheaper on long text).
        """
        try:
            return self._search(text, full, folded)
        except RegexTimeout as exc:  # a slow regex makes its rule not apply, never the triage fail
            log.warning("triage rule %s skipped for this alert: %s", self.id, exc)
            return None

    def _search(self, text: str, full: str, folded: str | None) -> RegexMatch | None:
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

    def render_cause(self, hit: RegexMatch | None) -> str:
        return render_cause(self.cause, hit)


# ----------------------------------------------------------------- the file, as models
Regex = Annotated[BoundedRegex, regex(REGEX_FLAGS)]
Steps = Annotated[StrictInt, between(-3, 3)]


def _one_line(cause: str) -> str:
    if "\n" in cause or len(cause) > 240:
        raise ValueError("must be one line of at most 240 characters")
    return cause


class Outcome(StrictModel):
    """A fixed result: the no-match [fallback], a [kinds.*] outcome; a rule has these keys too."""

    category: Category
    priority: Priority
    cause: Annotated[NonEmptyStr, AfterValidator(_one_line)]
    tags: tuple[NonEmptyStr, ...] = ()


class RuleModel(Outcome):
    """One [[rule]] table."""

    id: Annotated[str, matching(_ID_RE, "must be lowercase letters, digits, '.', '_' or '-', starting with a letter")]
    match: Annotated[list[Regex], Field(min_length=1)]
    exclude: list[Regex] = []
    require: list[Regex] = []
    fallback: StrictBool = False

    @model_validator(mode="after")
    def _cause_names_groups_of_match(self) -> RuleModel:
        raise_problems(_placeholder_problems(self.cause, self.match))
        return self

    def to_rule(self) -> Rule:
        return Rule(
            id=self.id, match=tuple(self.match), category=self.category, priority=self.priority, cause=self.cause,
            tags=self.tags, exclude=tuple(self.exclude), require=tuple(self.require), fallback=self.fallback,
            needles=tuple(required_literal(rx.pattern) for rx in self.match),
        )


class Kinds(StrictModel):
    """[kinds.*]: the fixed outcome of each alert kind other than "error" (defaults when left out)."""

    uptime_down: Outcome = Outcome(
        category=Category.INFRASTRUCTURE, priority=Priority.P0,
        cause="The uptime monitor cannot reach the service: it is down.", tags=("uptime",),
    )
    uptime_up: Outcome = Outcome(
        category=Category.INFRASTRUCTURE, priority=Priority.P3,
        cause="The uptime monitor reports the service is back up.", tags=("uptime",),
    )
    test: Outcome = Outcome(
        category=Category.UNKNOWN, priority=Priority.P3, cause="Test notification; nothing is broken.",
        tags=("test-event",),
    )


class Modifiers(StrictModel):
    """[modifiers]: priority steps by environment, level and count (+1 = one step more urgent)."""

    environment: dict[str, Steps] = {}
    level: dict[str, Steps] = {}
    high_count: Annotated[StrictInt, Field(ge=1)] = 100
    high_count_steps: Annotated[StrictInt, Field(ge=0)] = 1

    @field_validator("environment", "level")
    @classmethod
    def _names_as_compared(cls, table: dict[str, int]) -> dict[str, int]:
        return {name.strip().lower(): steps for name, steps in table.items()}


class RulesFile(StrictModel):
    """The whole rules file (format: the header of ``bot/triage/rules.toml``)."""

    version: StrictInt = 1
    fallback: Outcome = Outcome(
        category=Category.UNKNOWN, priority=Priority.P2,
        cause="No rule recognised this error; read the stack trace.", tags=("unclassified",),
    )
    kinds: Kinds = Kinds()
    modifiers: Modifiers = Modifiers()
    rule: Annotated[list[RuleModel], Field(min_length=1, description="one or more [[rule]] tables")]

    @model_validator(mode="after")
    def _ids_are_unique(self) -> RulesFile:
        first: dict[str, int] = {}
        duplicates: list[tuple[Loc, str]] = []
        for i, rule in enumerate(self.rule):
            if rule.id in first:
                duplicates.append((("rule", i, "id"), f"duplicate id (rule #{first[rule.id] + 1} has it too)"))
            first.setdefault(rule.id, i)
        raise_problems(duplicates)
        return self


# ---------------------------------------------------------------------------- the rules
class RuleSet:
    """Ordered rules plus the priority modifiers; build it with `RuleSet.load`."""

    def __init__(
        self,
        rules: Sequence[Rule],
        fallback: Outcome,
        modifiers: Modifiers,
        kinds: Mapping[str, Outcome],
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
        """Load and validate a rules file; None loads the packaged ``rules.toml``.

        The same text from the same file is parsed and validated once per process (about 25 ms of
        CPU each time otherwise: ~800 regexes checked and compiled, their literals found); a rule
        set is never changed once built, so every caller can share it.
        """
        path = Path(str(resources.files("bot.triage").joinpath("rules.toml"))) if path is None else Path(path)
        return _rules_from_text(str(path), read_text(path, RulesError, "rules file"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<rules>") -> RuleSet:
        """Validate already-parsed TOML data (what `load` does after reading the file)."""
        model = parse_model(RulesFile, data, source, RulesError)
        kinds = {name: getattr(model.kinds, name) for name in Kinds.model_fields}
        return cls([r.to_rule() for r in model.rule], model.fallback, model.modifiers, kinds, source)

    # ------------------------------------------------------------------ triage
    def match(self, alert: Alert) -> tuple[Rule, RegexMatch] | None:
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

    def triage(self, alert: Alert, owners: OwnerLookup | None = None) -> Triage:
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
def render_cause(template: str, hit: RegexMatch | None) -> str:
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


def _redacted_group(hit: RegexMatch | None, name: str) -> str:
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


@functools.lru_cache(maxsize=8)
def _rules_from_text(source: str, text: str) -> RuleSet:
    """The rule set in `text`, read from `source` (a file's name); see `RuleSet.load`."""
    return RuleSet.from_dict(parse_toml(text, source, RulesError), source)


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


def _placeholder_problems(cause: str, match: Sequence[BoundedRegex]) -> list[tuple[Loc, str]]:
    """A placeholder without a default must be a named group in EVERY match regex."""
    stripped = _PLACEHOLDER_RE.sub("", cause)
    if "{" in stripped or "}" in stripped:
        return [(("cause",), "stray '{' or '}' (use {name} or {name|default})")]
    problems: list[tuple[Loc, str]] = []
    for m in _PLACEHOLDER_RE.finditer(cause):
        name, default = m.group(1), m.group(2)
        missing = [i for i, rx in enumerate(match) if name not in rx.groupindex]
        if len(missing) == len(match):
            problems.append((("cause",), f"uses {{{name}}} but no match regex has (?P<{name}>...)"))
        elif missing and default is None:
            problems.append((("cause",), f"uses {{{name}}} without a default, but match{missing} has no "
                                         f"(?P<{name}>...): write {{{name}|some default}}"))
    return problems
