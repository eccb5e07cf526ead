"""Issue 13: the metrics, computed on a crafted history in a real SQLite file, match the figures
worked out by hand below; empty windows and nothing-to-divide-by give "no figure", not a crash."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot import cli
from bot.metrics import (
    MIN_SAMPLE,
    Metrics,
    Ratio,
    compute_metrics,
    fit,
    metrics_lines,
    percentile,
    plain_text,
    rollout_hint,
)
from bot.models import Alert, AlertKind, Category, Priority, ProposalState, Triage, utcnow
from bot.proposals import ProposalKind
from bot.rollout import RolloutPolicy, Stage
from bot.telegram_emulator import parse_html
from storage.audit import AuditRepository
from storage.db import Database
from storage.incidents import IncidentRepository
from storage.investigations import InvestigationRepository
from storage.llm import LlmUsageRepository
from storage.proposals import ProposalRepository

STAGE_2 = RolloutPolicy(Stage.TRIAGE)


@dataclass
class History:
    now: datetime
    ids: dict[str, int]


async def _incident(db: Database, name: str, *, at: datetime, rule: str | None, project: str, priority: Priority,
                    category: Category, count: int, regression_of: int | None = None,
                    fingerprint: str | None = None) -> int:
    alert = Alert(source="generic", kind=AlertKind.ERROR, title=f"{name} failed", fingerprint=fingerprint or name,
                  project=project, count=count)
    triage = Triage(priority=priority, category=category, likely_cause="?", rule_id=rule)
    incident = await IncidentRepository(db).create(alert, triage, at, None, regression_of)
    return incident.id


async def _correct(db: Database, incident_id: int, original: Priority, to: Priority) -> None:
    await IncidentRepository(db).set_priority(incident_id, to)
    await ProposalRepository(db).record_priority_correction(incident_id, original.value, to.value, 1, "Ann")


async def _fix(db: Database, incident_id: int, outcome: str, **detail: object) -> int:
    proposals = ProposalRepository(db)
    pid = await proposals.create(incident_id, ProposalKind.PATTERN, "fix", utcnow() + timedelta(hours=1),
                                 pattern_id="restart")
    await AuditRepository(db).record("action.finish", outcome, incident_id=incident_id, proposal_id=pid,
                                     detail=detail)
    return pid


async def craft(db: Database) -> History:
    """Six incidents in the last day, one ten days ago (outside a 7-day window)."""
    now = utcnow()
    day = timedelta(days=1)
    hour = timedelta(hours=1)
    infra, code = Category.INFRASTRUCTURE, Category.CODE
    ids: dict[str, int] = {}
    ids["old"] = await _incident(db, "db", at=now - 10 * day, rule="db_timeout", project="jobs",
                                 priority=Priority.P2, category=Category.DATABASE, count=900)
    await _correct(db, ids["old"], Priority.P2, Priority.P0)
    await IncidentRepository(db).resolve(ids["old"], "Ann", now - 9 * day)
    ids["a"] = await _incident(db, "a", at=now - 6 * hour, rule="redis_down", project="billing-api",
                               priority=Priority.P1, category=infra, count=50)
    ids["b"] = await _incident(db, "b", at=now - 6 * hour, rule="redis_down", project="billing-api",
                               priority=Priority.P1, category=infra, count=5)
    ids["c"] = await _incident(db, "c", at=now - 6 * hour, rule="redis_down", project="billing-api",
                               priority=Priority.P1, category=infra, count=1)
    ids["d"] = await _incident(db, "d", at=now - 6 * hour, rule="redis_down", project="shop",
                               priority=Priority.P1, category=infra, count=20)
    ids["e"] = await _incident(db, "e", at=now - 6 * hour, rule=None, project="jobs",
                               priority=Priority.P2, category=code, count=3)
    ids["f"] = await _incident(db, "f", at=now - 6 * hour, rule="db_timeout", project="jobs", priority=Priority.P2,
                               category=Category.DATABASE, count=8, regression_of=ids["old"], fingerprint="db")
    await _correct(db, ids["a"], Priority.P1, Priority.P0)
    await _correct(db, ids["b"], Priority.P1, Priority.P0)
    await _correct(db, ids["d"], Priority.P1, Priority.P2)
    # e's proposal was rejected: a human stepped in without touching the priority.
    proposals = ProposalRepository(db)
    rejected = await proposals.create(ids["e"], ProposalKind.ACKNOWLEDGE, "ack", now + day)
    await proposals.transition(rejected, ProposalState.PENDING, ProposalState.REJECTED, by="Ann")
    # Resolved: c after 30 min (P1), e after 2 h and f after 10 min (P2).
    incidents = IncidentRepository(db)
    await incidents.resolve(ids["c"], "Ann", now - 6 * hour + timedelta(minutes=30))
    await incidents.resolve(ids["e"], "Ann", now - 6 * hour + 2 * hour)
    await incidents.resolve(ids["f"], "Ann", now - 6 * hour + timedelta(minutes=10))
    # Fixes: one held, one failed its verify, one came back; one refused by its precheck (did not run).
    await _fix(db, ids["a"], "succeeded", verify_ok=True)
    await _fix(db, ids["b"], "failed", verify_ok=False)
    recurred = await _fix(db, ids["d"], "succeeded", verify_ok=True)
    await AuditRepository(db).record("fix.recurred", "failed (false positive)", proposal_id=recurred)
    await _fix(db, ids["f"], "failed", verify_ok=None, action_ran=False)
    audit = AuditRepository(db)
    for _ in range(4):
        await audit.record("action.start", "running")
    await audit.record("action.start", "refused: the kill switch is on")
    await audit.record("action.start", "refused: rate limit")
    await audit.record("action.start", "refused: rate limit")
    await audit.record("action.interrupted", "failed (interrupted)")
    await audit.record("webhook.rejected", "http 422", detail={"reason": "bad json"})
    await audit.record("webhook.rejected", "http 422", detail={"reason": "bad json"})
    await audit.record("webhook.rejected", "5 more refused, not audited one by one",
                       detail={"counts": {"http 422": 5, "http 413": 1}})
    return History(now, ids)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database(tmp_path / "metrics.db").connect()
    yield database
    await database.close()


async def _metrics(db: Database, days: int = 7) -> Metrics:
    return await compute_metrics(db, STAGE_2, until=utcnow() + timedelta(minutes=1), days=days)


async def test_metrics_match_the_hand_computed_figures(db: Database) -> None:
    await craft(db)
    m = await _metrics(db)
    # Six triaged in the window (the old one is outside); a, b, d corrected.
    assert m.triage_accuracy == Ratio(3, 6)
    assert m.accuracy_by_category == {"code": Ratio(1, 1), "database": Ratio(1, 1), "infrastructure": Ratio(1, 4)}
    assert m.accuracy_by_source == {"rules": Ratio(3, 6)}
    # Corrected (a, b, d) or rejected (e): 4 of 6.
    assert m.intervention == Ratio(4, 6)
    assert m.helpfulness == Ratio(0, 0)
    # b failed its verify, d came back; the precheck-refused one did not run: 2 of 3.
    assert m.false_fixes == Ratio(2, 3)
    ttr = m.time_to_resolution
    assert (ttr["all"].count, ttr["all"].median_s, ttr["all"].p90_s) == (3, pytest.approx(1800, abs=1),
                                                                        pytest.approx(7200, abs=1))
    assert ttr["P1"].median_s == pytest.approx(1800, abs=1)
    assert ttr["P2"].median_s == pytest.approx(3900, abs=1)
    assert ttr["P0"].count == 0 and ttr["P0"].median_s is None
    v = m.volume
    assert (v.new, v.regressed, v.resolved) == (5, 1, 3)
    assert v.open_by_priority == {"P0": 2, "P2": 1}
    assert [n for _, n in v.noisiest] == [50, 20, 8, 5, 3]
    assert v.noisiest[0][0] == "a failed"
    assert (v.actions_run, v.actions_failed) == (4, 3)  # two failed finishes + one interrupted
    assert v.refused == {"rate limit": 2, "the kill switch is on": 1}
    assert v.webhook_rejected == {"http 422": 7, "http 413": 1}
    # redis_down was corrected 3 times of 4, mostly to P0; in billing-api to P0 in 2 of 3.
    [rule, *_] = m.corrected_rules
    assert (rule.rule_id, rule.to, rule.times, rule.corrected, rule.of) == ("redis_down", "P0", 2, 3, 4)
    pairs = [(c.rule_id, c.project, c.to, c.times, c.of) for c in m.corrected_rule_projects]
    assert pairs == [("redis_down", "billing-api", "P0", 2, 3), ("redis_down", "shop", "P2", 1, 1)]
    # Six cases are too few to judge the stage.
    assert "not yet judged" in m.hint and "stage 3" in m.hint


async def test_the_rendered_metrics_mark_misses_and_name_corrected_rules(db: Database) -> None:
    await craft(db)
    text = fit(metrics_lines(await _metrics(db)))
    parse_html(text)
    assert "Triage accuracy: <b>50%</b> (3/6; target &gt; 90%) ❌ <b>misses</b>" in text
    assert "Human intervention: <b>67%</b> (4/6; target &lt; 20%) ❌" in text
    assert "Investigation helpfulness: no votes yet" in text
    assert "<code>redis_down</code> in <code>billing-api</code>: corrected to P0 in 2 of 3" in text


async def test_an_empty_window_has_no_figures_and_no_division_by_zero(db: Database) -> None:
    await craft(db)
    # A window that ends before anything happened.
    m = await compute_metrics(db, STAGE_2, until=utcnow() - timedelta(days=20), days=3)
    assert m.triage_accuracy == Ratio(0, 0) and m.triage_accuracy.value is None
    assert m.intervention.value is None and m.false_fixes.value is None
    assert m.time_to_resolution["all"].median_s is None and m.time_to_resolution["all"].p90_s is None
    assert m.volume.quiet and m.corrected_rules == []
    text = fit(metrics_lines(m))
    parse_html(text)
    assert "Triage accuracy: <b>—</b> (0/0" in text and "misses" not in text
    json.dumps(m.as_dict())


async def test_an_empty_database_gives_empty_figures(db: Database) -> None:
    m = await _metrics(db, days=1)
    assert m.triage_accuracy == Ratio(0, 0) and m.volume.noisiest == [] and m.volume.open_by_priority == {}


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.9) is None
    assert percentile([5.0], 0.9) == 5.0
    assert percentile([float(n) for n in range(1, 11)], 0.9) == 9.0
    assert percentile([float(n) for n in range(1, 12)], 0.9) == 10.0


def test_the_hint_says_whether_the_next_stage_is_justified() -> None:
    good = {"triage_accuracy": Ratio(95, 100), "intervention": Ratio(10, 100), "helpfulness": Ratio(0, 0),
            "false_fixes": Ratio(0, 40)}
    assert rollout_hint(RolloutPolicy(Stage.TRIAGE), good).startswith("Next stage 3 (investigate): justified")
    bad = {**good, "intervention": Ratio(30, 100)}
    hint = rollout_hint(RolloutPolicy(Stage.TRIAGE), bad)
    assert "not yet justified" in hint and "human intervention" in hint
    # Stage 3 waits for investigation votes, which do not exist yet.
    assert "not yet judged" in rollout_hint(RolloutPolicy(Stage.INVESTIGATE), good)
    assert "is the last, and" in rollout_hint(RolloutPolicy(Stage.AUTO_FIX), good)
    wrong_fixes = {**good, "false_fixes": Ratio(2, 40)}
    assert "going back" in rollout_hint(RolloutPolicy(Stage.AUTO_FIX), wrong_fixes)
    thin = {**good, "triage_accuracy": Ratio(MIN_SAMPLE - 1, MIN_SAMPLE - 1)}
    assert "not yet judged" in rollout_hint(RolloutPolicy(Stage.MONITOR), thin)


def test_stats_cli_prints_the_same_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    path = tmp_path / "remediator.db"

    async def seed() -> None:
        async with Database(path) as database:
            await craft(database)

    asyncio.run(seed())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_PATH", str(path))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert cli.main(["stats", "--days", "7", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["figures"]["triage_accuracy"] == {"hits": 3, "total": 6, "value": 0.5, "target": "> 90%",
                                                   "met": False}
    assert found["figures"]["helpfulness"]["value"] is None
    assert found["volume"]["webhook_rejected"] == {"http 422": 7, "http 413": 1}
    assert found["volume"]["claude"] == {"configured": False, "calls": 0, "failed_calls": 0, "input_tokens": 0,
                                         "output_tokens": 0, "cost_usd": 0, "by_purpose": {}}
    assert found["time_to_resolution"]["not_investigated"]["count"] == 3
    assert cli.main(["stats"]) == 0
    out = capsys.readouterr().out
    assert "Triage accuracy: 50% (3/6; target > 90%) ❌ misses" in out
    assert "redis_down in billing-api: corrected to P0 in 2 of 3" in out
    assert "Claude: no calls (no ANTHROPIC_API_KEY" in out
    assert "with an investigation: —/— (0); without: 30m/2.0h (3)" in out


async def _resolved(db: Database, name: str, *, priority: Priority, took: timedelta, at: datetime,
                    investigation: str | None) -> int:
    """An incident resolved at `at` after `took`; `investigation`: "done" (its report delivered now,
    before `at`), "failed", "after" (delivered after the resolve) or None (never asked)."""
    incident_id = await _incident(db, name, at=at - took, rule=None, project="jobs", priority=priority,
                                  category=Category.CODE, count=1)
    if investigation is not None:
        repo = InvestigationRepository(db)
        run = await repo.create(incident_id, "Ann", 1, "button")
        assert run is not None and await repo.start(run)
        if investigation == "failed":
            await repo.fail(run, "no repository")
        else:
            await repo.finish(run, "<b>report</b>")
    await IncidentRepository(db).resolve(incident_id, "Ann", at)
    return incident_id


async def test_time_to_resolution_with_and_without_an_investigation(db: Database) -> None:
    soon = utcnow() + timedelta(minutes=1)  # resolves after the reports, which are stamped "now"
    hour = timedelta(hours=1)
    await _resolved(db, "x", priority=Priority.P0, took=hour, at=soon, investigation="done")
    await _resolved(db, "y", priority=Priority.P1, took=3 * hour, at=soon, investigation="done")
    await _resolved(db, "z", priority=Priority.P1, took=hour / 2, at=soon, investigation="failed")
    await _resolved(db, "w", priority=Priority.P2, took=2 * hour, at=soon, investigation=None)
    # Resolved 5 minutes before its report came: the report did not help resolve it.
    await _resolved(db, "u", priority=Priority.P2, took=timedelta(minutes=5), at=utcnow() - timedelta(minutes=5),
                    investigation="after")
    m = await compute_metrics(db, STAGE_2, until=utcnow() + timedelta(minutes=2), days=7)
    ttr = m.time_to_resolution
    # With: 1 h, 3 h -> median 2 h, p90 (nearest rank 2 of 2) 3 h. Without: 5 m, 30 m, 2 h.
    assert (ttr["investigated"].count, ttr["investigated"].median_s, ttr["investigated"].p90_s) == (
        2, pytest.approx(7200, abs=1), pytest.approx(10800, abs=1))
    assert (ttr["not_investigated"].count, ttr["not_investigated"].median_s, ttr["not_investigated"].p90_s) == (
        3, pytest.approx(1800, abs=1), pytest.approx(7200, abs=1))
    # All five: 5 m, 30 m, 1 h, 2 h, 3 h; P1: 30 m and 3 h (median 1 h 45, p90 3 h).
    assert (ttr["all"].median_s, ttr["all"].p90_s) == (pytest.approx(3600, abs=1), pytest.approx(10800, abs=1))
    assert (ttr["P1"].median_s, ttr["P1"].p90_s) == (pytest.approx(6300, abs=1), pytest.approx(10800, abs=1))
    text = fit(metrics_lines(m))
    parse_html(text)
    assert "Time to resolution: median 60m, p90 3.0h (5 resolved)" in text
    assert "by priority (median/p90): P0 60m/60m, P1 105m/3.0h" in text
    assert "with an investigation: 2.0h/3.0h (2); without: 30m/2.0h (3)" in text
    assert m.as_dict()["time_to_resolution"]["investigated"] == {"count": 2, "median_s": pytest.approx(7200, abs=1),
                                                                 "p90_s": pytest.approx(10800, abs=1)}


async def test_claude_calls_and_cost_are_counted_in_the_window_only(db: Database) -> None:
    now = utcnow()
    usage = LlmUsageRepository(db)
    common = {"model": "claude-x", "incident_id": None}
    await usage.record(purpose="triage", input_tokens=1000, output_tokens=200, cost_usd=0.004, ok=True,
                       at=now - timedelta(hours=2), **common)
    await usage.record(purpose="triage", input_tokens=0, output_tokens=0, cost_usd=0.0, ok=False,
                       error="rate limited (429)", at=now - timedelta(hours=1), **common)
    await usage.record(purpose="investigate", input_tokens=9000, output_tokens=1500, cost_usd=0.05, ok=True,
                       at=now - timedelta(days=2), **common)
    await usage.record(purpose="investigate", input_tokens=1, output_tokens=1, cost_usd=9.0, ok=True,
                       at=now - timedelta(days=10), **common)  # before the window
    await usage.record(purpose="triage", input_tokens=1, output_tokens=1, cost_usd=7.0, ok=True,
                       at=now + timedelta(hours=1), **common)  # after it
    m = await compute_metrics(db, STAGE_2, until=now + timedelta(minutes=1), days=7, claude_on=True)
    c = m.volume.claude
    assert (c.calls, c.failed_calls, c.input_tokens, c.output_tokens) == (3, 1, 10000, 1700)
    assert c.cost_usd == pytest.approx(0.054)
    assert c.by_purpose == {"investigate": (1, pytest.approx(0.05)), "triage": (2, pytest.approx(0.004))}
    text = fit(metrics_lines(m))
    assert "• Claude: 3 calls, 1 failed, $0.05 (investigate 1, triage 2)" in text
    claude = m.as_dict()["volume"]["claude"]
    assert claude["calls"] == 3 and claude["cost_usd"] == pytest.approx(0.054) and claude["configured"] is True
    assert claude["by_purpose"]["triage"] == {"calls": 2, "cost_usd": pytest.approx(0.004)}
    json.dumps(m.as_dict())
    # A day with none: why, when the reason is known.
    quiet = await compute_metrics(db, STAGE_2, until=now - timedelta(days=3), days=1, claude_on=False)
    assert "Claude: no calls (no ANTHROPIC_API_KEY" in plain_text("\n".join(metrics_lines(quiet)))
    keyed = await compute_metrics(db, STAGE_2, until=now - timedelta(days=3), days=1, claude_on=True)
    assert "• Claude: no calls" in metrics_lines(keyed) and keyed.volume.claude.calls == 0
