"""Operator-written regexes that slip past the backtracking check still cannot stall the bot.

`x.*y.*z` is polynomial, not catastrophic, so `bot.regex_safety` lets it through; on a crafted
64 KB line it would run for minutes. Every such regex now gives up after MATCH_TIMEOUT_S, with
the GIL released meanwhile, and giving up always errs on the safe side: a triage rule does not
apply, a fix is not proposed, a text is masked whole.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from pathlib import Path

import pytest

from bot.models import Alert, AlertKind, Category
from bot.redact import MASK, Redactor
from bot.regex_safety import MATCH_TIMEOUT_S, RegexTimeout, compile_regex, regex_problem
from bot.triage import RuleSet
from patterns import load_patterns

POLYNOMIAL = r"y.*y.*y.*z"
# No z after the ys: every split of them in three is tried (n³). The z before them gets past the
# rules' cheap "is the regex's literal in the text at all" test. Triage clips stacks to 8 KB.
HOSTILE = "z " + "y" * 8_000


@pytest.fixture
def short_deadline(monkeypatch: pytest.MonkeyPatch) -> float:
    """A 0.1 s deadline for the regexes compiled in a test: what giving up leads to is the same
    for any deadline, and each give-up costs its deadline in CPU. The real one is proved in the
    first test below; the event-loop test keeps it too (its ticks need time to happen)."""
    monkeypatch.setattr("bot.regex_safety.MATCH_TIMEOUT_S", 0.1)
    return 0.1


def alert(title: str, stacktrace: str = "") -> Alert:
    return Alert(source="generic", kind=AlertKind.ERROR, title=title, fingerprint="t", stacktrace=stacktrace)


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def test_the_polynomial_shape_passes_the_check_and_would_be_slow_unbounded() -> None:
    assert regex_problem(POLYNOMIAL) is None  # the gap the timeout closes
    started = time.process_time()
    with pytest.raises(RegexTimeout, match=f"gave up after {MATCH_TIMEOUT_S:g} s"):
        compile_regex(POLYNOMIAL).search(HOSTILE)
    assert time.process_time() - started < MATCH_TIMEOUT_S * 8


def test_a_rule_whose_regex_gives_up_does_not_apply_and_the_next_one_decides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, short_deadline: float,
) -> None:
    rules = RuleSet.load(write(tmp_path, "rules.toml", f"""
        [[rule]]
        id = "slow.first"
        category = "infrastructure"
        priority = "P0"
        cause = "slow"
        match = ['''{POLYNOMIAL}''']

        [[rule]]
        id = "code.second"
        category = "code"
        priority = "P2"
        cause = "the second rule"
        match = ['''y{{3}}''']
        """))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        triage = rules.triage(alert("worker failed", stacktrace=HOSTILE))
    assert time.monotonic() - started < 5
    assert triage.rule_id == "code.second" and triage.category is Category.CODE
    assert "slow.first" in caplog.text and f"gave up after {short_deadline:g} s" in caplog.text


def test_an_exclude_guard_that_gives_up_means_no_fix_is_proposed(tmp_path: Path, short_deadline: float) -> None:
    patterns = load_patterns(write(tmp_path, "patterns.toml", f"""
        [patterns.restart_it]
        description = "restart it"
        category = "infrastructure"
        match = {{any = ['''redis down''']}}
        exclude = ['''{POLYNOMIAL}''']
        action = ["systemctl", "restart", "redis-server"]
        """))
    calm = alert("redis down")
    found = patterns.match(calm, Category.INFRASTRUCTURE)
    assert found is not None and found.pattern.id == "restart_it"
    hostile = alert("redis down", stacktrace=HOSTILE)
    assert patterns.match(hostile, Category.INFRASTRUCTURE) is None
    assert "gave up" in patterns.why_none(hostile, Category.INFRASTRUCTURE)


def test_a_redact_pattern_that_gives_up_masks_the_whole_text(short_deadline: float) -> None:
    redactor = Redactor([POLYNOMIAL])
    assert redactor.redact("y then y then y then z") == MASK
    out = redactor.redact(HOSTILE)
    assert out.startswith(MASK) and "yyyy" not in out


async def test_the_event_loop_keeps_serving_while_a_slow_regex_works() -> None:
    """With `re`, the match holds the GIL: the loop would not tick until it ended."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.create_task(tick())
    with pytest.raises(RegexTimeout):
        await asyncio.to_thread(compile_regex(POLYNOMIAL).search, HOSTILE)
    ticker.cancel()
    assert ticks >= 5
