"""The one regex check every operator-written regex goes through (rules, owners-free, allow-list)."""

from __future__ import annotations

import re

import pytest

from bot.regex_safety import compile_regex, regex_problem

# Each of these takes seconds to hours on a crafted line of 30-60 characters in Python's re.
CATASTROPHIC = [
    r"(a+)+$",
    r"(\w*)*$",
    r"(a*)*b",
    r"(x+x+)+y",
    r"(\w+\s*)+$",
    r"(?:a?a)*$",
    r"(a|aa)*$",
    r"(?:\d+,?)+$",
    r"(?:a{1,5}){2,}$",
    r"(?:a+){0,10}$",
    r"^(?:[^@]+)*@",
    r"(?i:(?:[A-Z][a-z]+)+)$",
    r"\s((a+))+$",  # nested inside more groups
    r"x(?:y|(a+)+)z",  # inside an alternative
]
OVERLAPPING = [r"(a|a)*$", r"(ab|ab)*c", r"(?:x|\w+)*!", r"(?s:(.|\n)*)!", r"(?:\w+|_)*!"]
# Linear (or at worst the quadratic cost of an unanchored search): iterations cannot overlap,
# alternatives part at their first differing character, or the engine never backtracks into them.
SAFE = [
    r"(?:\s+\w+)*$",
    r"(?:\w+\.)*$",
    r"(\\.|[^\"\\])*\"",
    r"(?:GET|PUT|POST)+ /",
    r"(?:foo|far)*$",
    r"(?:foo|fo)+x",  # factored to fo(?:o|): no text splits two ways
    r"(?:\r\n|\n)+",
    r"(.|\n)*$",
    r"(?:[A-Z][a-z]+)+$",
    r"(?>a+)+$",
    r"(a++)+$",
    r"(?:\.\d+){0,3}",
    r"(?:[^\n]{0,200}\n){0,5}",
    r"Redis connection to (?:localhost|127\.0\.0\.1):(?P<port>\d{2,5}) failed",
    r"Cannot connect to redis://(?:[^@\s/]*@)?(?:localhost|127\.0\.0\.1)(?::(?P<port>\d{2,5}))?",
    r"(?P<x>a)(?P=x)*",
    r"a*b*c*",
]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_nested_quantifiers_that_can_split_the_same_text_are_refused(pattern: str) -> None:
    problem = regex_problem(pattern)
    assert problem is not None and "nested quantifier" in problem and "backtrack catastrophically" in problem
    assert repr(pattern) in problem


@pytest.mark.parametrize("pattern", OVERLAPPING)
def test_repeated_alternatives_that_match_the_same_text_are_refused(pattern: str) -> None:
    problem = regex_problem(pattern)
    assert problem is not None and "alternatives that can match the same text" in problem


@pytest.mark.parametrize("pattern", SAFE)
def test_linear_shapes_are_accepted(pattern: str) -> None:
    assert regex_problem(pattern) is None
    assert regex_problem(pattern, re.MULTILINE) is None


def test_the_flags_the_regex_runs_with_are_the_ones_judged() -> None:
    # Case-sensitive, [A-Z] and [a-z] cannot take each other's letters; ignoring case they can.
    assert regex_problem(r"(?:[A-Z][a-z]+)+$") is None
    assert regex_problem(r"(?:[A-Z][a-z]+)+$", re.IGNORECASE) is not None
    assert regex_problem(r"(?-i:(?:[A-Z][a-z]+)+)$", re.IGNORECASE) is None
    # '.' takes a newline only with DOTALL
    assert regex_problem(r"(.|\n)*$") is None
    assert regex_problem(r"(.|\n)*$", re.DOTALL) is not None


def test_a_regex_that_does_not_compile_says_where() -> None:
    problem = regex_problem("No space (left")
    assert problem is not None and problem.startswith("invalid regex 'No space (left'") and "position 9" in problem
    assert regex_problem("(?P<x>a)(?P<x>b)") is not None


def test_compile_regex_compiles_with_the_flags_or_says_why() -> None:
    rx = compile_regex(r"redis (?P<port>\d+)", re.IGNORECASE)
    assert rx.flags & re.IGNORECASE and rx.search("REDIS 6379") is not None
    with pytest.raises(ValueError, match="nested quantifier"):
        compile_regex("(a+)+$")
    with pytest.raises(ValueError, match="invalid regex"):
        compile_regex("[")


def test_a_huge_alternation_is_judged_quickly() -> None:
    # an operator's long list of names: judging it must not cost more than loading the file
    names = "|".join(f"module{i}x" for i in range(3000))
    assert regex_problem(f"(?:{names})+") is None
