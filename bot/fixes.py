"""Stage 4: running allow-listed fixes, their rate limits, and the recurrence check after them.

The argv that runs is re-derived from the stored incident and the allow-list at the moment of
the run (never from stored text), and must equal what the card showed when it was approved.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from bot.executor import ActionResult
from bot.models import Proposal, utcnow
from bot.redact import Redactor
from bot.settings import Settings
from patterns import PatternRunner, PatternSet
from storage.db import Database, Executor
from storage.incidents import IncidentRepository
from storage.proposals import ProposalRepository


class FixRunner:
    def __init__(self, db: Database, patterns: PatternSet, redactor: Redactor, settings: Settings) -> None:
        self.db = db
        self.patterns = patterns
        self.redactor = redactor
        self.rate_limit_per_hour = settings.fix_rate_limit_per_hour
        self.runner = PatternRunner(output_limit=3000)

    async def start_check(self, tx: Executor, proposal: Proposal) -> str | None:
        """Cooldown, max runs per window and the global hourly limit, read at the moment of start."""
        if proposal.kind != "pattern":
            return None
        pattern = self.patterns.get(proposal.pattern_id or "")
        if pattern is None:
            return f"pattern {proposal.pattern_id} is no longer in the allow-list"
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
        match = self.patterns.match(incident.as_alert(), incident.category)
        shown = (proposal.action or {}).get("argv")
        if match is None or match.pattern.id != proposal.pattern_id or match.argv != shown:
            return ActionResult(False, "not run: the allow-list no longer gives the command that was approved")
        result = await self.runner.run(match)
        steps: list[dict[str, Any]] = [
            {"argv": s.argv, "exit_code": s.exit_code, "duration_s": round(s.duration_s, 3), "timed_out": s.timed_out}
            for s in result.steps
        ]
        output = "\n".join(f"$ {' '.join(s.argv)}\n{s.output.strip()}" for s in result.steps)
        if result.verify is not None:
            output += f"\n$ {' '.join(result.verify.argv)}  (verify)\n{result.verify.output.strip()}"
            steps.append({"verify": result.verify.argv, "exit_code": result.verify.exit_code})
        return ActionResult(
            result.ok, self.redactor.redact(result.summary), self.redactor.redact(output.strip())[-3000:],
            detail=self.redactor.redact_obj({"steps": steps, "verify_ok": result.verify_ok,
                                             "duration_s": round(result.duration_s, 3),
                                             "approved_by": proposal.decided_by}),
            recurrence_window=match.pattern.recurrence_window or None,
        )
