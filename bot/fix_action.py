"""The runner of `pattern` proposals (stage 4): allow-listed fixes and their rate limits.

The argv that runs is re-derived from the stored incident and the allow-list at the moment of
the run (never from stored text), and must equal what the card showed when it was approved.
Where it runs is checked again too: the error must still come from a host in ``FIX_HOSTS``
(or name no server), so a changed ``FIX_HOSTS`` refuses a fix approved under the old one.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from bot.execution import ActionResult
from bot.models import Proposal, utcnow
from bot.redact import Redactor
from bot.settings import Settings
from patterns import PatternRunner, PatternSet, RunResult, StepResult
from patterns.engine import host_keys
from storage.db import Database, Executor
from storage.incidents import IncidentRepository
from storage.proposals import ProposalRepository


class FixAction:
    """The `KindRunner` for allow-listed fixes (bot/execution.py); the commands run in PatternRunner."""

    def __init__(self, db: Database, patterns: PatternSet, redactor: Redactor, settings: Settings) -> None:
        self.db = db
        self.patterns = patterns
        self.redactor = redactor
        self.rate_limit_per_hour = settings.fix_rate_limit_per_hour
        self.fix_hosts = tuple(settings.fix_hosts)
        self.fix_host_keys = host_keys(self.fix_hosts)
        self.runner = PatternRunner(output_limit=3000)

    async def start_check(self, tx: Executor, proposal: Proposal) -> str | None:
        """Where it runs, cooldown, max runs per window and the global hourly limit, read at the moment of start."""
        pattern = self.patterns.get(proposal.pattern_id or "")
        if pattern is None:
            return f"pattern {proposal.pattern_id} is no longer in the allow-list"
        incident = await IncidentRepository(tx).get(proposal.incident_id)
        elsewhere = pattern.host_refusal(incident.server if incident else None, self.fix_host_keys)
        if elsewhere:
            return f"{elsewhere}, which is not in FIX_HOSTS ({', '.join(self.fix_hosts)})"
        hour_ago = utcnow() - timedelta(hours=1)
        proposals = ProposalRepository(tx)
        runs = await proposals.runs_since(hour_ago)
        if runs >= self.rate_limit_per_hour:
            return f"global limit reached: {runs} fixes in the last hour (FIX_RATE_LIMIT_PER_HOUR={self.rate_limit_per_hour})"
        horizon = max(pattern.window or 0, pattern.cooldown or 0, 1)
        since = utcnow() - timedelta(seconds=horizon)
        times = [t.timestamp() for t in await proposals.run_start_times(pattern.id, since, exclude_id=proposal.id)]
        return pattern.rate_limit_reason(times, time.time())

    async def run(self, proposal: Proposal) -> ActionResult:
        incident = await IncidentRepository(self.db).get(proposal.incident_id)
        if incident is None:
            return ActionResult(False, "incident not found")
        match = self.patterns.evaluate(incident.as_alert(), incident.category, hosts=self.fix_host_keys)
        shown = (proposal.action or {}).get("argv")
        if match is not None and match.elsewhere and match.pattern.id == proposal.pattern_id:
            return ActionResult(False, f"not run: {match.refused} (not in FIX_HOSTS)")
        if match is None or not match.runnable or match.pattern.id != proposal.pattern_id or match.argv != shown:
            return ActionResult(False, "not run: the allow-list no longer gives the command that was approved")
        result = await self.runner.run(match)
        return ActionResult(
            result.ok, self.redactor.redact(result.summary), self.redactor.redact(_transcript(result))[-3000:],
            detail=self.redactor.redact_obj({**_audit_detail(result), "approved_by": proposal.decided_by}),
            recurrence_window=match.pattern.recurrence_window or None,
        )


def _step_record(step: StepResult) -> dict[str, Any]:
    return {"argv": step.argv, "exit_code": step.exit_code, "duration_s": round(step.duration_s, 3),
            "timed_out": step.timed_out}


def _audit_detail(result: RunResult) -> dict[str, Any]:
    """Argv, exit codes and durations for the audit row; a refusing precheck says nothing ran."""
    steps: list[dict[str, Any]] = [_step_record(s) for s in result.steps]
    if result.verify is not None:
        steps.append({"verify": result.verify.argv, "exit_code": result.verify.exit_code})
    detail: dict[str, Any] = {"steps": steps, "verify_ok": result.verify_ok, "duration_s": round(result.duration_s, 3)}
    if result.precheck is not None:
        detail["precheck"] = _step_record(result.precheck)
        detail["action_ran"] = not result.precheck_refused
    return detail


def _transcript(result: RunResult) -> str:
    """What each command printed, in order, for the reply under the card."""
    parts: list[str] = []
    if result.precheck is not None:
        parts.append(f"$ {' '.join(result.precheck.argv)}  (precheck)\n{result.precheck.output.strip()}")
    parts += [f"$ {' '.join(s.argv)}\n{s.output.strip()}" for s in result.steps]
    if result.verify is not None:
        parts.append(f"$ {' '.join(result.verify.argv)}  (verify)\n{result.verify.output.strip()}")
    return "\n".join(parts).strip()
