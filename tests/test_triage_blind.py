"""Triage rules and the default pattern allow-list on a blind set (tests/data/blind.jsonl).

The 60 alerts in blind.jsonl were written from typical Node.js/Python production failures
(Sentry/GlitchTip/GitHub-issue shapes) before the rules were read, labelled with the
conventions of the corpus README, and are meant as a generalisation check: it is measured the
same way as tests/test_triage_corpus.py and tests/test_patterns_corpus.py.
Run with `pytest -s` to see the figures.
"""

from __future__ import annotations

import pytest

from bot.triage import RuleSet
from patterns import PatternSet, load_patterns
from tests.labelled import Case, load_cases

FIX_PATTERNS = ("restart_redis", "restart_service", "npm_install_missing", "pip_install_missing", "cleanup_disk")


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return load_cases("blind.jsonl")


def test_blind_set_is_well_formed(cases: list[Case]) -> None:
    assert len(cases) == 60
    assert len({c.id for c in cases}) == len(cases)
    cats = {c.category for c in cases}
    assert cats == {"infrastructure", "transient", "resource", "dependency", "configuration", "database",
                    "security", "code"}
    assert all(c.priority in ("P0", "P1", "P2", "P3") for c in cases)


def test_blind_triage_accuracy(cases: list[Case]) -> None:
    rules = RuleSet.load()
    n = len(cases)
    cat_ok = exact = within = 0
    misses: list[str] = []
    for c in cases:
        t = rules.triage(c.alert())
        ok = t.category.value == c.category or t.category.value in c.alt_categories
        cat_ok += ok
        exact += t.priority.value == c.priority
        off = abs(int(c.priority[1]) - t.priority.rank)
        within += off <= 1
        if not ok or off > 1:
            misses.append(f"  MISS {c.id}: labelled {c.category}/{c.priority}, got {t.category.value}/"
                          f"{t.priority.value} via {t.rule_id}")
    print(f"\n== triage accuracy: blind.jsonl ({n} cases) ==")
    print(f"{'category accuracy':<28}{cat_ok:>4}/{n:<4}{cat_ok / n:>8.1%}")
    print(f"{'priority exact':<28}{exact:>4}/{n:<4}{exact / n:>8.1%}")
    print(f"{'priority within one step':<28}{within:>4}/{n:<4}{within / n:>8.1%}")
    print("\n".join(misses))
    assert cat_ok / n >= 0.85
    assert within / n >= 0.85


def test_blind_patterns(cases: list[Case]) -> None:
    pset: PatternSet = load_patterns()
    positives = [c for c in cases if c.safe_pattern in FIX_PATTERNS]
    hits = 0
    false_positives: list[str] = []
    misses: list[str] = []
    for c in cases:
        m = pset.match(c.alert())
        got = m.pattern.id if m is not None else "none"
        if m is not None:
            assert m.runnable and m.argv
        acceptable = {c.safe_pattern, *c.alt_patterns}
        if got != "none" and got not in acceptable:
            false_positives.append(f"  FALSE POSITIVE {c.id}: labelled {c.safe_pattern}, matched {got}")
        if c.safe_pattern in FIX_PATTERNS:
            if got in acceptable:
                hits += 1
            else:
                misses.append(f"  miss {c.id}: labelled {c.safe_pattern}, matched {got}")
    share = hits / len(positives)
    print(f"\n[patterns blind] matched by an acceptable pattern: {share:.2f} ({hits}/{len(positives)}); "
          f"false positives: {len(false_positives)} of {len(cases) - len(positives)} no-fix cases")
    print("\n".join(false_positives + misses))
    assert false_positives == []
