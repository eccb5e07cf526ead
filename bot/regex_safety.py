r"""One check for every regex an operator writes: it must compile and must not backtrack catastrophically.

The triage rules and the fix allow-list run operator-written regexes over untrusted alert text
of up to 64 KB; ``(a+)+$`` or ``(a|a)*$`` take minutes on a crafted line of 40 characters. So
a regex is judged as Python's parser sees it (after its prefix factoring and its merging of
one-character alternatives), and a repeat that can run more than once (``*``, ``+``, ``{m,n}``)
is refused when one text can be split between its iterations in several ways:

- an optional part at its edge can take what the next (previous) iteration starts (ends) with:
  ``(a+)+``, ``(\w*)*``, ``(\w+\s*)+``, ``(a|aa)*``; ``(\w+\.)*`` and ``(\s+\w+)*`` are fine;
- alternatives inside it can both match nothing or start alike: ``(a|a)*``, ``(x|\w+)*``
  (``GET|PUT|POST`` part at their second letter: fine).

Atomic groups and possessive quantifiers never backtrack and are accepted. A conservative
heuristic, not a proof: polynomial shapes such as ``x.*y.*z`` pass. So the regexes that pass
are compiled with the ``regex`` package and run as :class:`BoundedRegex`: each search gives up
after ``MATCH_TIMEOUT_S`` (raising :class:`RegexTimeout`, which the rules and the allow-list
treat as "this rule does not apply", never as "no exclusion") and lets other threads run while
it works, so one slow match can neither stall the event loop nor outlive its row's budget.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import pairwise
from typing import Any

import regex as _regex

__all__ = ["MATCH_TIMEOUT_S", "BoundedRegex", "RegexMatch", "RegexTimeout", "compile_regex", "regex_problem"]

#: How long one operator-written regex may search one text. The linear ones the check lets
#: through take milliseconds on the longest text they are given (64 KB); a polynomial one that
#: slipped past the check gives up here instead of running for minutes.
MATCH_TIMEOUT_S = 0.25
RegexMatch = _regex.Match[str]


class RegexTimeout(Exception):
    """An operator-written regex gave up on a text: the rule using it must not apply."""


class BoundedRegex:
    """A compiled operator regex whose every search gives up after `timeout` seconds.

    The same surface the rules and the allow-list use from ``re.Pattern`` (``pattern``,
    ``groupindex``, ``groups``, ``search``, ``fullmatch``, ``sub``); the matching runs with
    the GIL released (``concurrent=True``), so the event loop keeps serving meanwhile.
    """

    __slots__ = ("_compiled", "flags", "timeout")

    def __init__(self, compiled: _regex.Pattern[str], flags: int = 0, timeout: float | None = None) -> None:
        self._compiled = compiled
        self.flags = flags  # as given, in `re`'s terms (what `regex_problem` judges)
        # MATCH_TIMEOUT_S read now, not when this module was loaded: a test can shorten it.
        self.timeout = MATCH_TIMEOUT_S if timeout is None else timeout

    @property
    def pattern(self) -> str:
        return self._compiled.pattern

    @property
    def groupindex(self) -> Mapping[str, int]:
        return self._compiled.groupindex

    @property
    def groups(self) -> int:
        return self._compiled.groups

    def search(self, text: str, pos: int = 0) -> RegexMatch | None:
        try:
            return self._compiled.search(text, pos, concurrent=True, timeout=self.timeout)
        except TimeoutError as exc:
            raise self._gave_up(len(text)) from exc

    def fullmatch(self, text: str) -> RegexMatch | None:
        try:
            return self._compiled.fullmatch(text, concurrent=True, timeout=self.timeout)
        except TimeoutError as exc:
            raise self._gave_up(len(text)) from exc

    def sub(self, repl: Callable[[RegexMatch], str], text: str) -> str:
        try:
            return self._compiled.sub(repl, text, concurrent=True, timeout=self.timeout)
        except TimeoutError as exc:
            raise self._gave_up(len(text)) from exc

    def _gave_up(self, length: int) -> RegexTimeout:
        return RegexTimeout(f"regex {self.pattern[:80]!r} gave up after {self.timeout:g} s "
                            f"on {length:,} characters")

    def __repr__(self) -> str:
        return f"BoundedRegex({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BoundedRegex) and self._compiled == other._compiled

    def __hash__(self) -> int:
        return hash(self._compiled)

# Python's own regex parser. Private but stable since 3.11; imported by name because the
# type stubs do not describe it.
_parser: Any = importlib.import_module("re._parser")
_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT"})
_CATEGORIES = {name: re.compile(rx) for name, rx in (
    ("CATEGORY_DIGIT", r"\d"), ("CATEGORY_NOT_DIGIT", r"\D"), ("CATEGORY_SPACE", r"\s"),
    ("CATEGORY_NOT_SPACE", r"\S"), ("CATEGORY_WORD", r"\w"), ("CATEGORY_NOT_WORD", r"\W"),
)}
# Characters tried when asking "can these two parts start with the same character?": all of
# Latin-1, some other scripts and separators, plus every character the regex itself names.
_SAMPLES = frozenset(chr(c) for c in (*range(256), 0x130, 0x131, 0x17F, 0x212A, 0x416, 0x4E2D, 0x2028, 0x3000))

NESTED = "nested quantifier (like (a+)+) can backtrack catastrophically"
OVERLAP = "alternatives that can match the same text, repeated (like (a|a)*), can backtrack catastrophically"


@functools.lru_cache(maxsize=4096)  # the same files are loaded again (checks, tests): judge each regex once
def regex_problem(pattern: str, flags: int = 0) -> str | None:
    """Why ``pattern`` may not be used (does not compile, or can backtrack catastrophically), or None."""
    try:
        re.compile(pattern, flags)
        parsed = _parser.parse(pattern, flags)
    except re.error as exc:
        return f"invalid regex {pattern!r}: {exc}"
    except RecursionError:
        return f"regex nested too deeply: {pattern!r}"
    alphabet = _SAMPLES | frozenset(_named_chars(parsed.data))
    reason = _Judge(alphabet, parsed.state.flags).first_danger(parsed.data)
    return f"{reason}: {pattern!r}" if reason else None


def compile_regex(pattern: str, flags: int = 0) -> BoundedRegex:
    """Compile an operator-written regex, bounded in time; ValueError saying why when refused.

    Judged as Python's ``re`` reads it, then compiled by ``regex`` in its ``re``-compatible
    mode (V0; ``re``'s flag values are ``regex``'s)."""
    problem = regex_problem(pattern, flags)
    if problem:
        raise ValueError(problem)
    try:
        return BoundedRegex(_compiled(pattern, flags | _regex.V0), flags)
    except _regex.error as exc:  # the rare pattern `re` takes and `regex` reads otherwise
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc


@functools.lru_cache(maxsize=4096)  # as regex_problem: `regex`'s own cache holds 500, the rules have ~800
def _compiled(pattern: str, flags: int) -> _regex.Pattern[str]:
    return _regex.compile(pattern, flags)


Items = Sequence[tuple[Any, Any]]


def _children(op: str, av: Any) -> list[Items]:
    """The sub-sequences of one parsed item (lookarounds included)."""
    if op in _REPEATS or op == "POSSESSIVE_REPEAT":
        return [av[2]]
    if op == "SUBPATTERN":
        return [av[3]]
    if op == "BRANCH":
        return list(av[1])
    if op in ("ASSERT", "ASSERT_NOT"):
        return [av[1]]
    if op == "ATOMIC_GROUP":
        return [av]
    if op == "GROUPREF_EXISTS":
        return [av[1]] + ([av[2]] if av[2] else [])
    return []


def _named_chars(items: Items) -> Iterator[str]:
    for op, av in items:
        name = str(op)
        if name in ("LITERAL", "NOT_LITERAL"):
            yield chr(av)
        elif name == "IN":
            yield from _named_chars(av)
        elif name == "RANGE":
            yield from (chr(av[0]), chr(av[1]))
        for child in _children(name, av):
            yield from _named_chars(child)


class _Judge:
    """Walks a parsed regex; character sets are represented by the sample characters they match."""

    def __init__(self, alphabet: frozenset[str], flags: int) -> None:
        self.alphabet = alphabet
        self.flags = flags

    def first_danger(self, items: Items, flags: int | None = None) -> str | None:
        flags = self.flags if flags is None else flags
        for op, av in items:
            name = str(op)
            if name in _REPEATS and av[1] > 1:  # `?` alone offers one choice, not one per iteration
                reason = self._ambiguous(av[2], flags)
                if reason:
                    return reason
            for child in _children(name, av):
                reason = self.first_danger(child, _scoped(name, av, flags))
                if reason:
                    return reason
        return None

    def _ambiguous(self, body: Items, flags: int) -> str | None:
        """Why one text could be split between iterations of ``body`` in several ways."""
        if self._overlapping_branch(body, flags):
            return OVERLAP
        # More of an optional part at the end vs. the next iteration starting (and mirrored).
        if any(chars & self.first(body, flags) for chars in self._edge_choices(body, flags, at_end=True)):
            return NESTED
        if any(chars & self.last(body, flags) for chars in self._edge_choices(body, flags, at_end=False)):
            return NESTED
        return None

    def _overlapping_branch(self, items: Items, flags: int) -> bool:
        for op, av in items:
            name = str(op)
            if name == "BRANCH" and self._branches_overlap(av[1], flags):
                return True
            if name not in ("ATOMIC_GROUP", "POSSESSIVE_REPEAT", "ASSERT", "ASSERT_NOT") and any(
                self._overlapping_branch(c, _scoped(name, av, flags)) for c in _children(name, av)
            ):
                return True
        return False

    def _branches_overlap(self, branches: Sequence[Items], flags: int) -> bool:
        """Two alternatives both match nothing, or can start alike without their literal
        starts parting (``GET|PUT|POST`` part at the second letter: no overlap)."""
        if sum(self.nullable(b) for b in branches) > 1:
            return True
        starting_with: dict[str, list[str]] = {}
        for branch in branches:
            prefix = _literal_prefix(branch, flags)
            for ch in self.first(branch, flags):
                starting_with.setdefault(ch, []).append(prefix)
        for prefixes in starting_with.values():
            ordered = sorted(prefixes)  # a prefix of another sorts right before one that starts with it
            if any(not a or b.startswith(a) for a, b in pairwise(ordered)):
                return True
        return False

    def _edge_choices(self, items: Items, flags: int, at_end: bool) -> Iterator[frozenset[str]]:
        """Places at the end (or start) of ``items`` where the matcher may take more or stop,
        as the characters that optional part would start (at the end) or end (at the start) with."""
        outer = self.first if at_end else self.last
        for op, av in reversed(items) if at_end else items:
            name = str(op)
            if name in _REPEATS:
                if av[1] > av[0]:
                    yield outer(av[2], flags)
                yield from self._edge_choices(av[2], flags, at_end)
            elif name == "SUBPATTERN":
                yield from self._edge_choices(av[3], _scoped(name, av, flags), at_end)
            elif name == "BRANCH":
                if any(self.nullable(b) for b in av[1]):
                    yield frozenset().union(*(outer(b, flags) for b in av[1]))
                for branch in av[1]:
                    yield from self._edge_choices(branch, flags, at_end)
            if not self.nullable([(op, av)]):
                break

    # -- what a part of the regex can match ------------------------------------------------

    def nullable(self, items: Items) -> bool:
        """Can ``items`` match the empty string?"""
        for op, av in items:
            name = str(op)
            if name in _REPEATS or name == "POSSESSIVE_REPEAT":
                empty = av[0] == 0 or self.nullable(av[2])
            elif name in ("SUBPATTERN", "BRANCH", "ATOMIC_GROUP", "GROUPREF_EXISTS"):
                empty = any(self.nullable(c) for c in _children(name, av))
            else:
                empty = name in ("AT", "ASSERT", "ASSERT_NOT", "GROUPREF")
            if not empty:
                return False
        return True

    def first(self, items: Items, flags: int) -> frozenset[str]:
        return self.last(items, flags, reverse=False)

    def last(self, items: Items, flags: int, reverse: bool = True) -> frozenset[str]:
        """The sample characters a match of ``items`` can end (or start) with."""
        found: set[str] = set()
        for op, av in reversed(items) if reverse else items:
            name = str(op)
            if name == "SUBPATTERN":
                found |= self.last(av[3], _scoped(name, av, flags), reverse)
            elif name == "GROUPREF":
                found |= self.alphabet  # a back-reference can hold anything
            elif name in ("AT", "ASSERT", "ASSERT_NOT"):
                pass
            elif _children(name, av):
                for child in _children(name, av):
                    found |= self.last(child, flags, reverse)
            else:
                found |= self._chars(name, av, flags)
            if not self.nullable([(op, av)]):
                break
        return frozenset(found)

    def _chars(self, name: str, av: Any, flags: int) -> frozenset[str]:
        """The sample characters one single-character item matches."""
        fold = bool(flags & re.IGNORECASE)
        if name == "LITERAL" and not fold:
            return frozenset({chr(av)})
        dotall = bool(flags & re.DOTALL)

        def hit(ch: str) -> bool:
            variants = {ch, ch.lower(), ch.upper()} if fold else {ch}
            return any(_matches_one(name, av, c, dotall) for c in variants if len(c) == 1)

        return frozenset(ch for ch in self.alphabet if hit(ch))


def _literal_prefix(items: Items, flags: int) -> str:
    """The plain characters ``items`` starts with (case-folded under IGNORECASE)."""
    chars = []
    for op, av in items:
        if str(op) != "LITERAL":
            break
        chars.append(chr(av))
    text = "".join(chars)
    return text.casefold() if flags & re.IGNORECASE else text


def _scoped(name: str, av: Any, flags: int) -> int:
    """The flags inside a group: ``(?i:…)`` adds IGNORECASE there, ``(?-i:…)`` removes it."""
    return (flags | av[1]) & ~av[2] if name == "SUBPATTERN" else flags


def _matches_one(name: str, av: Any, ch: str, dotall: bool) -> bool:
    if name == "LITERAL":
        return ch == chr(av)
    if name == "NOT_LITERAL":
        return ch != chr(av)
    if name == "ANY":
        return dotall or ch != "\n"
    if name == "RANGE":
        return av[0] <= ord(ch) <= av[1]
    if name == "CATEGORY":
        rx = _CATEGORIES.get(str(av))
        return rx is None or rx.fullmatch(ch) is not None
    if name == "IN":
        negate = bool(av) and str(av[0][0]) == "NEGATE"
        members = av[1:] if negate else av
        return negate != any(_matches_one(str(op), a, ch, dotall) for op, a in members)
    return True  # anything unknown: assume it may match (refuse rather than miss)
