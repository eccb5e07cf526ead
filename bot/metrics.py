"""The figures that say whether to trust the bot, over a window of days (issue 13).

`compute_metrics` reads SQLite (storage/metrics.py) once and hands the rows to pure functions;
`metrics_lines` renders them as Telegram HTML lines (the digest, /stats) and `plain_text` for the
terminal. Each quality figure sits beside the seed's target and is marked where it misses; the
rollout hint asks `RolloutPolicy` which figures judge the current stage.
"""

from __future__ import annotations

import html
import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.card_render import esc, units
from bot.models import Priority
from bot.rollout import RolloutPolicy
from storage.db import Executor
from storage.investigations import InvestigationRepository
from storage.llm import LlmUsageRepository, UsageSummary
from storage.metrics import FixRun, MetricsRepository, Resolution, TriagedIncident

# Below this many cases a share says little: the hint waits for more data instead of judging.
MIN_SAMPLE = 20
MAX_DAYS = 365
NO_RULE = "(no rule)"  # the rule of incidents no rule matched, in `corrections`


@dataclass(frozen=True)
class Ratio:
    """hits / total, with the count it rests on; no value when there is nothing to divide by."""

    hits: int
    total: int

    @property
    def value(self) -> float | None:
        return self.hits / self.total if self.total else None

    def as_dict(self) -> dict[str, Any]:
        return {"hits": self.hits, "total": self.total, "value": self.value}


@dataclass(frozen=True)
class Target:
    label: str
    threshold: float
    above: bool  # the figure must be above the threshold (else below)

    def met(self, ratio: Ratio) -> bool | None:
        """Whether the figure meets the target; None when there is no figure."""
        value = ratio.value
        if value is None:
            return None
        return value > self.threshold if self.above else value < self.threshold

    @property
    def text(self) -> str:
        return f"{'>' if self.above else '<'} {self.threshold:.0%}"


TARGETS = {
    "triage_accuracy": Target("Triage accuracy", 0.90, above=True),
    "helpfulness": Target("Investigation helpfulness", 0.70, above=True),
    "false_fixes": Target("Auto-fix false positives", 0.01, above=False),
    "intervention": Target("Human intervention", 0.20, above=False),
}


@dataclass(frozen=True)
class Durations:
    count: int
    median_s: float | None
    p90_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "median_s": self.median_s, "p90_s": self.p90_s}


@dataclass(frozen=True)
class Correction:
    """How humans corrected the incidents one rule (or rule + project) triaged."""

    rule_id: str
    project: str | None
    to: str  # the priority they corrected it to most often
    times: int  # how many were corrected to it
    corrected: int  # how many were corrected at all
    of: int  # how many the rule triaged

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule_id, "project": self.project, "to": self.to, "times": self.times,
                "corrected": self.corrected, "of": self.of}


@dataclass(frozen=True)
class Volume:
    new: int
    regressed: int
    resolved: int
    open_by_priority: dict[str, int]
    noisiest: list[tuple[str, int]]
    actions_run: int
    actions_failed: int
    refused: dict[str, int]  # why an approved action did not start
    webhook_rejected: dict[str, int]  # by outcome (http status), as audited
    claude: UsageSummary = field(default_factory=UsageSummary)  # Claude's calls in the window
    claude_on: bool | None = None  # ANTHROPIC_API_KEY set; None: not known to the caller

    @property
    def quiet(self) -> bool:
        """Nothing happened: no incident came, none was resolved, nothing ran or was refused."""
        return not (self.new or self.regressed or self.resolved or self.actions_run or self.refused
                    or self.webhook_rejected)

    def as_dict(self) -> dict[str, Any]:
        return {"new": self.new, "regressed": self.regressed, "resolved": self.resolved,
                "open_by_priority": self.open_by_priority,
                "noisiest": [{"title": t, "events": n} for t, n in self.noisiest],
                "actions": {"run": self.actions_run, "failed": self.actions_failed, "refused": self.refused},
                "webhook_rejected": self.webhook_rejected,
                "claude": {"configured": self.claude_on, "calls": self.claude.calls,
                           "failed_calls": self.claude.failed_calls, "input_tokens": self.claude.input_tokens,
                           "output_tokens": self.claude.output_tokens, "cost_usd": round(self.claude.cost_usd, 6),
                           "by_purpose": {purpose: {"calls": calls, "cost_usd": round(cost, 6)}
                                          for purpose, (calls, cost) in self.claude.by_purpose.items()}}}


@dataclass(frozen=True)
class Metrics:
    since: datetime
    until: datetime
    days: int
    stage: str
    triage_accuracy: Ratio
    accuracy_by_category: dict[str, Ratio]
    accuracy_by_source: dict[str, Ratio]
    helpfulness: Ratio
    time_to_resolution: dict[str, Durations]  # "all", each priority, "investigated", "not_investigated"
    false_fixes: Ratio
    intervention: Ratio
    volume: Volume
    corrected_rules: list[Correction]
    corrected_rule_projects: list[Correction]
    hint: str
    figures: dict[str, Ratio] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(), "until": self.until.isoformat(), "days": self.days,
            "rollout_stage": self.stage,
            "figures": {name: {**ratio.as_dict(), "target": TARGETS[name].text, "met": TARGETS[name].met(ratio)}
                        for name, ratio in self.figures.items()},
            "triage_accuracy_by_category": {k: v.as_dict() for k, v in self.accuracy_by_category.items()},
            "triage_accuracy_by_source": {k: v.as_dict() for k, v in self.accuracy_by_source.items()},
            "time_to_resolution": {k: v.as_dict() for k, v in self.time_to_resolution.items()},
            "volume": self.volume.as_dict(),
            "corrected_rules": [c.as_dict() for c in self.corrected_rules],
            "corrected_rule_projects": [c.as_dict() for c in self.corrected_rule_projects],
            "rollout_hint": self.hint,
        }


# -- computing (pure) ---------------------------------------------------------------------------


def accuracy(incidents: list[TriagedIncident]) -> Ratio:
    """Share of triaged incidents whose priority no human corrected (a priority put back to the
    triage's own, e.g. an override set aside, is no correction: the triage was right)."""
    return Ratio(sum(1 for i in incidents if i.corrected_to is None), len(incidents))


def accuracy_by(incidents: list[TriagedIncident], key: str) -> dict[str, Ratio]:
    groups: dict[str, list[TriagedIncident]] = {}
    for incident in incidents:
        groups.setdefault(str(getattr(incident, key)), []).append(incident)
    return {name: accuracy(group) for name, group in sorted(groups.items())}


def intervention(incidents: list[TriagedIncident]) -> Ratio:
    """Incidents whose priority a human set (even back to the triage's own, setting an override
    aside) or whose proposal was rejected, over those triaged."""
    return Ratio(sum(1 for i in incidents if i.reprioritized or i.rejected), len(incidents))


def false_fixes(runs: list[FixRun]) -> Ratio:
    """Fixes failed by their verify step or by the error coming back, over fixes run."""
    return Ratio(sum(1 for r in runs if r.verify_failed or r.recurred), len(runs))


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile: the smallest value at least `share` of the values are <= to."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def durations(values: list[float]) -> Durations:
    return Durations(len(values), statistics.median(values) if values else None, percentile(values, 0.9))


def time_to_resolution(resolved: list[Resolution]) -> dict[str, Durations]:
    """Durations overall, by priority, and with / without an investigation report before the resolve."""
    found = {"all": durations([r.seconds for r in resolved])}
    for priority in Priority:
        found[priority.value] = durations([r.seconds for r in resolved if r.priority == priority.value])
    found["investigated"] = durations([r.seconds for r in resolved if r.investigated])
    found["not_investigated"] = durations([r.seconds for r in resolved if not r.investigated])
    return found


def usage_between(since_start: UsageSummary, since_end: UsageSummary) -> UsageSummary:
    """Claude's calls in [start, end): those since the start less those since the end (the usage
    repository counts from a moment on; a window in the past must not count what came after it)."""
    purposes = set(since_start.by_purpose) | set(since_end.by_purpose)
    by_purpose = {}
    for purpose in sorted(purposes):
        calls = since_start.by_purpose.get(purpose, (0, 0.0))[0] - since_end.by_purpose.get(purpose, (0, 0.0))[0]
        cost = since_start.by_purpose.get(purpose, (0, 0.0))[1] - since_end.by_purpose.get(purpose, (0, 0.0))[1]
        if calls:
            by_purpose[purpose] = (calls, max(0.0, cost))
    return UsageSummary(
        calls=since_start.calls - since_end.calls, failed_calls=since_start.failed_calls - since_end.failed_calls,
        input_tokens=since_start.input_tokens - since_end.input_tokens,
        output_tokens=since_start.output_tokens - since_end.output_tokens,
        cost_usd=max(0.0, since_start.cost_usd - since_end.cost_usd), by_purpose=by_purpose,
    )


def corrections(incidents: list[TriagedIncident], *, with_project: bool, limit: int = 5) -> list[Correction]:
    """The rules (or rule + project pairs) whose priority humans corrected most, with the direction."""
    groups: dict[tuple[str, str | None], list[TriagedIncident]] = {}
    for incident in incidents:
        key = (incident.rule_id or NO_RULE, incident.project if with_project else None)
        groups.setdefault(key, []).append(incident)
    found: list[Correction] = []
    for (rule_id, project), group in groups.items():
        directions = Counter(i.corrected_to for i in group if i.corrected_to is not None)
        if not directions:
            continue
        # Most common direction; ties go to the more urgent priority (P0 sorts first).
        to, times = min(directions.items(), key=lambda kv: (-kv[1], kv[0]))
        found.append(Correction(rule_id, project, to, times, sum(directions.values()), len(group)))
    found.sort(key=lambda c: (-c.corrected, -c.times, c.rule_id, c.project or ""))
    return found[:limit]


def action_counts(started: list[tuple[str, dict[str, Any]]], finished: list[tuple[str, dict[str, Any]]],
                  interrupted: int) -> tuple[int, int, dict[str, int]]:
    """(run, failed, refused by reason) from the `action.start` / `action.finish` audit rows."""
    run = sum(1 for outcome, _ in started if outcome == "running")
    failed = sum(1 for outcome, _ in finished if outcome == "failed") + interrupted
    refused = Counter(outcome.removeprefix("refused: ") for outcome, _ in started if outcome.startswith("refused"))
    return run, failed, dict(refused.most_common())


def webhook_rejections(rows: list[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    """Audited refusals by status; a summary row ("N more refused") carries its own counts."""
    found: Counter[str] = Counter()
    for outcome, detail in rows:
        counts = detail.get("counts")
        if isinstance(counts, dict):
            found.update({str(k): int(v) for k, v in counts.items()})
        else:
            found[outcome] += 1
    return dict(found.most_common())


def rollout_hint(policy: RolloutPolicy, figures: dict[str, Ratio]) -> str:
    """One line: whether the figures that judge this stage justify the next one."""
    judged = policy.judged_by
    thin = [name for name in judged if figures[name].total < MIN_SAMPLE]
    missing = [name for name in judged if name not in thin and not TARGETS[name].met(figures[name])]
    labels = ", ".join(TARGETS[name].label.lower() for name in judged)
    nxt = policy.next_stage
    if nxt is None:
        if missing:
            return (f"Stage {policy} is the last: {_names(missing)} misses its target — consider going back "
                    "a stage until it is fixed.")
        if thin:
            return f"Stage {policy} is the last; too little data yet to judge {_names(thin)}."
        return f"Stage {policy} is the last, and {labels} meet their targets."
    if thin:
        return (f"Next stage {nxt}: not yet judged — {_names(thin)} rests on fewer than {MIN_SAMPLE} cases "
                "(or has no votes yet).")
    if missing:
        return f"Next stage {nxt}: not yet justified — {_names(missing)} misses its target."
    return f"Next stage {nxt}: justified — {labels} meet their targets."


def _names(names: list[str]) -> str:
    return ", ".join(TARGETS[name].label.lower() for name in names)


def window(until: datetime, days: int) -> tuple[datetime, datetime]:
    return until - timedelta(days=days), until


async def compute_metrics(db: Executor, policy: RolloutPolicy, *, until: datetime, days: int,
                          claude_on: bool | None = None) -> Metrics:
    """Every figure over the `days` days before `until` (open counts are as of now). `claude_on`:
    whether ANTHROPIC_API_KEY is set, so "no Claude calls" can say why."""
    since, until = window(until, days)
    repo = MetricsRepository(db)
    triaged = await repo.triaged(since, until)
    runs = await repo.fix_runs(since, until)
    started = await repo.audit_outcomes("action.start", since, until)
    finished = await repo.audit_outcomes("action.finish", since, until)
    interrupted = await repo.audit_outcomes("action.interrupted", since, until)
    run, failed, refused = action_counts(started, finished, len(interrupted))
    resolved = await repo.resolutions(since, until)
    volume = Volume(
        new=sum(1 for i in triaged if not i.regression), regressed=sum(1 for i in triaged if i.regression),
        resolved=len(resolved), open_by_priority=await repo.open_by_priority(),
        noisiest=await repo.noisiest(since, until), actions_run=run, actions_failed=failed, refused=refused,
        webhook_rejected=webhook_rejections(await repo.audit_outcomes("webhook.rejected", since, until)),
        claude=usage_between(await LlmUsageRepository(db).summary(since), await LlmUsageRepository(db).summary(until)),
        claude_on=claude_on,
    )
    up, down = await InvestigationRepository(db).helpfulness(since)
    figures = {
        "triage_accuracy": accuracy(triaged),
        "helpfulness": Ratio(up, up + down),  # 👍 over votes on investigation reports
        "false_fixes": false_fixes(runs),
        "intervention": intervention(triaged),
    }
    return Metrics(
        since=since, until=until, days=days, stage=str(policy),
        triage_accuracy=figures["triage_accuracy"], accuracy_by_category=accuracy_by(triaged, "category"),
        accuracy_by_source=accuracy_by(triaged, "source"), helpfulness=figures["helpfulness"],
        time_to_resolution=time_to_resolution(resolved), false_fixes=figures["false_fixes"],
        intervention=figures["intervention"], volume=volume,
        corrected_rules=corrections(triaged, with_project=False),
        corrected_rule_projects=corrections(triaged, with_project=True),
        hint=rollout_hint(policy, figures), figures=figures,
    )


# -- rendering (Telegram HTML lines; the terminal strips the tags) -----------------------------


def pct(ratio: Ratio) -> str:
    value = ratio.value
    return "—" if value is None else f"{value:.0%}"


def figure_line(name: str, ratio: Ratio) -> str:
    target = TARGETS[name]
    if name == "helpfulness" and not ratio.total:
        return f"• {target.label}: no votes yet (target {esc(target.text)})"
    met = target.met(ratio)
    mark = "" if met is None else (" ✅" if met else " ❌ <b>misses</b>")
    count = f"{ratio.hits}/{ratio.total}"
    return f"• {target.label}: <b>{pct(ratio)}</b> ({count}; target {esc(target.text)}){mark}"


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes = round(seconds) / 60  # whole seconds: julianday arithmetic makes 2 h 7199.9999 s
    if minutes < 120:
        return f"{minutes:.0f}m"
    hours = minutes / 60
    return f"{hours:.1f}h" if hours < 48 else f"{hours / 24:.1f}d"


def correction_line(c: Correction) -> str:
    where = f" in <code>{esc(c.project, 60)}</code>" if c.project else ""
    return (f"• <code>{esc(c.rule_id, 60)}</code>{where}: corrected to {esc(c.to, 4)} in {c.times} of {c.of}"
            + (f" ({c.corrected} corrected)" if c.corrected != c.times else ""))


def quality_lines(m: Metrics) -> list[str]:
    lines = [figure_line(name, ratio) for name, ratio in m.figures.items()]
    if len(m.accuracy_by_category) > 1:
        lines.append("  by category: " + ", ".join(f"{esc(k, 30)} {pct(v)} ({v.hits}/{v.total})"
                                                   for k, v in m.accuracy_by_category.items()))
    if m.accuracy_by_source:
        lines.append("  by triage source: " + ", ".join(f"{esc(k, 30)} {pct(v)} ({v.hits}/{v.total})"
                                                        for k, v in m.accuracy_by_source.items()))
    lines += resolution_lines(m.time_to_resolution)
    return lines


def _median_p90(d: Durations) -> str:
    return f"{duration_text(d.median_s)}/{duration_text(d.p90_s)}"


def resolution_lines(ttr: dict[str, Durations]) -> list[str]:
    """Median and p90 overall, by priority, and with / without an investigation."""
    if not ttr["all"].count:
        return ["• Time to resolution: nothing resolved"]
    by_priority = ", ".join(f"{p.value} {_median_p90(ttr[p.value])}" for p in Priority if ttr[p.value].count)
    lines = [f"• Time to resolution: median {duration_text(ttr['all'].median_s)}, "
             f"p90 {duration_text(ttr['all'].p90_s)} ({ttr['all'].count} resolved)",
             f"  by priority (median/p90): {by_priority}"]
    with_report, without = ttr["investigated"], ttr["not_investigated"]
    lines.append(f"  with an investigation: {_median_p90(with_report)} ({with_report.count}); "
                 f"without: {_median_p90(without)} ({without.count})")
    return lines


def volume_lines(v: Volume) -> list[str]:
    open_text = " · ".join(f"{p.value} {v.open_by_priority.get(p.value, 0)}" for p in Priority)
    lines = [f"• New {v.new} · regressed {v.regressed} · resolved {v.resolved} · open now: {open_text}"]
    if v.noisiest:
        lines.append("• Noisiest: " + "; ".join(f"{esc(title, 60)} ×{n}" for title, n in v.noisiest))
    actions = f"• Actions: {v.actions_run} run, {v.actions_failed} failed"
    if v.refused:
        actions += ", refused: " + ", ".join(f"{esc(why, 60)} {n}" for why, n in list(v.refused.items())[:5])
    lines.append(actions)
    lines.append(claude_line(v))
    if v.webhook_rejected:
        total = sum(v.webhook_rejected.values())
        lines.append(f"• Webhook alerts rejected: {total} ("
                     + ", ".join(f"{esc(k, 30)} {n}" for k, n in list(v.webhook_rejected.items())[:5]) + ")")
    return lines


def claude_line(v: Volume) -> str:
    """Claude's calls and their estimated cost; without any, why not when the reason is known."""
    c = v.claude
    if not c.calls:
        if v.claude_on is False:
            return "• Claude: no calls (no ANTHROPIC_API_KEY: rules triage, offline investigations)"
        return "• Claude: no calls"
    failed = f", {c.failed_calls} failed" if c.failed_calls else ""
    purposes = ", ".join(f"{esc(purpose, 30)} {calls}" for purpose, (calls, _cost) in c.by_purpose.items())
    return f"• Claude: {c.calls} call{'s' if c.calls != 1 else ''}{failed}, ${c.cost_usd:.2f} ({purposes})"


def correction_lines(m: Metrics) -> list[str]:
    if not m.corrected_rule_projects:
        return []
    lines = ["<b>Most corrected</b>"]
    lines += [correction_line(c) for c in m.corrected_rules[:3]]
    lines += [correction_line(c) for c in m.corrected_rule_projects[:3] if c.project]
    return lines


def metrics_lines(m: Metrics, offers: Sequence[str] = ()) -> list[str]:
    """/stats: the whole picture for the window; `offers`: the overrides it offers to apply
    (bot/overrides.py), under the corrections they come from."""
    head = f"📈 <b>Metrics</b>, last {m.days} day{'s' if m.days != 1 else ''} (stage {esc(m.stage)})"
    return [head, "<b>Quality</b>", *quality_lines(m), "<b>Volume</b>", *volume_lines(m.volume),
            *correction_lines(m), *offers, f"➡️ {esc(m.hint, 400)}"]


def fit(lines: list[str], limit: int = 4000) -> str:
    """Join whole lines up to Telegram's limit (4096, with room to spare): each line is complete HTML,
    so dropping lines from the end keeps the message valid. Counted in UTF-16 units, as Telegram
    counts (an emoji is two), on the HTML, which is never shorter than the text a user sees."""
    kept: list[str] = []
    size = 0
    for line in lines:
        length = units(line)
        if size + length + 1 > limit - 2:
            kept.append("…")
            break
        kept.append(line)
        size += length + 1
    return "\n".join(kept)


def plain_text(html_text: str) -> str:
    """The same text for a terminal: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"</?(?:b|i|code|pre)>", "", html_text))
