"""The rollout policy: one object, built once from ROLLOUT_STAGE, answers every stage question.

Teams move up a stage only when the figures of the stage before say the bot is right:

    1 monitor      triage and the priority row only
    2 triage       + Approve/Reject of "acknowledge: I own this", Mute, Resolve
    3 investigate  + Investigate
    4 auto-fix     + allow-listed safe fixes as the proposal (patterns are loaded)

No other module compares stage numbers: cards ask which buttons to draw, the decision service
which presses to accept, the proposer which kinds to propose, the executor which kinds may start.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from bot.callback_data import APPROVE, FILE_ISSUE, HELPFUL, INVESTIGATE, MUTE, PRIORITY, REJECT, RESOLVE
from bot.proposals import ProposalKind


class Stage(IntEnum):
    MONITOR = 1
    TRIAGE = 2
    INVESTIGATE = 3
    AUTO_FIX = 4


STAGE_NAMES = {
    Stage.MONITOR: "monitor",
    Stage.TRIAGE: "triage + decisions",
    Stage.INVESTIGATE: "investigate",
    Stage.AUTO_FIX: "auto-fix",
}

# The stage a card button first appears at.
_BUTTON_STAGE = {
    PRIORITY: Stage.MONITOR, APPROVE: Stage.TRIAGE, REJECT: Stage.TRIAGE, MUTE: Stage.TRIAGE,
    RESOLVE: Stage.TRIAGE, INVESTIGATE: Stage.INVESTIGATE, HELPFUL: Stage.INVESTIGATE,
    FILE_ISSUE: Stage.INVESTIGATE,  # under an investigation report, whatever the card proposes
}
# The stage a kind of proposal may be made, approved and started at.
_KIND_STAGE = {ProposalKind.ACKNOWLEDGE: Stage.TRIAGE, ProposalKind.PATTERN: Stage.AUTO_FIX,
               ProposalKind.GITHUB_ISSUE: Stage.TRIAGE}


@dataclass(frozen=True)
class RolloutPolicy:
    stage: Stage

    @classmethod
    def from_setting(cls, value: int) -> RolloutPolicy:
        return cls(Stage(value))

    @property
    def name(self) -> str:
        return STAGE_NAMES[self.stage]

    def __str__(self) -> str:
        return f"{int(self.stage)} ({self.name})"

    # -- buttons ---------------------------------------------------------------------------

    def draws(self, button: str) -> bool:
        """Whether a card draws this button (and accepts a press on it)."""
        return self.stage >= _BUTTON_STAGE[button]

    def press_refusal(self, button: str) -> str | None:
        """Why a press is refused at this stage, or None when it is allowed."""
        return None if self.draws(button) else f"Not available at rollout stage {int(self.stage)}."

    # -- proposals -------------------------------------------------------------------------

    @property
    def proposes(self) -> bool:
        """Stage 1 only measures triage: cards propose nothing."""
        return self.allows(ProposalKind.ACKNOWLEDGE)

    @property
    def proposes_fixes(self) -> bool:
        """Whether allow-listed fixes are proposed, so whether the patterns file is loaded at all."""
        return self.allows(ProposalKind.PATTERN)

    def allows(self, kind: ProposalKind | str) -> bool:
        stage = _KIND_STAGE.get(ProposalKind(kind))
        return stage is not None and self.stage >= stage

    def kind_refusal(self, kind: ProposalKind | str) -> str | None:
        """Why a proposal of this kind may not be approved or started now, or None."""
        if self.allows(kind):
            return None
        needed = _KIND_STAGE.get(ProposalKind(kind))
        what = "fixes" if ProposalKind(kind) is ProposalKind.PATTERN else f"{kind} proposals"
        return f"{what} need rollout stage {int(needed) if needed else '?'} (now {int(self.stage)})"

    # -- moving up (the digest's hint, bot/metrics.py) ---------------------------------------

    @property
    def next_stage(self) -> RolloutPolicy | None:
        """The stage after this one, or None at the last."""
        return RolloutPolicy(Stage(self.stage + 1)) if self.stage < max(Stage) else None

    @property
    def judged_by(self) -> tuple[str, ...]:
        """The figures (bot/metrics.py target names) that must meet their targets at this stage
        before moving on; at the last stage, the ones that must keep meeting them to stay."""
        return _JUDGED_BY[self.stage]


# What each stage's figures must show: triage alone is judged by accuracy; once humans decide,
# by how often they step in; investigations by their votes; fixes by how often they were wrong.
_JUDGED_BY = {
    Stage.MONITOR: ("triage_accuracy",),
    Stage.TRIAGE: ("triage_accuracy", "intervention"),
    Stage.INVESTIGATE: ("triage_accuracy", "intervention", "helpfulness"),
    Stage.AUTO_FIX: ("false_fixes", "intervention"),
}
