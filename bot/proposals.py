"""The proposal domain: what a card can propose, and how a proposal may move. Pure: no I/O.

A proposal is the one thing a card asks a human to decide. Every move between states is listed
in `TRANSITIONS`; the repository persists a move only after `check_transition` allowed it, and
a move that is not in the table is a programming error (`IllegalTransition`), never data.

    pending ──approve──▶ approved ──start──▶ running ──▶ succeeded ──did not hold──▶ failed
       │                   │  └─vetoed at start (kill switch, rate limit…)─▶ pending     ▲
       │                   └──────────────── interrupted (process died) ─────────────────┤
       │                                     running ── failed / interrupted ────────────┘
       ├──reject──▶ rejected
       ├──timeout─▶ expired
       └──incident resolved / replaced──▶ superseded
"""

from __future__ import annotations

from enum import StrEnum

from bot.models import ProposalState

S = ProposalState


class ProposalKind(StrEnum):
    """What Approve does. Each kind has one runner (see bot/execution.py)."""

    ACKNOWLEDGE = "acknowledge"  # "I own this incident": records who took it
    PATTERN = "pattern"  # an allow-listed safe fix (patterns/), stage 4
    GITHUB_ISSUE = "github_issue"  # file a GitHub issue in GITHUB_REPO (bot/github/), when no fix applies


TRANSITIONS: dict[ProposalState, frozenset[ProposalState]] = {
    S.PENDING: frozenset({S.APPROVED, S.REJECTED, S.EXPIRED, S.SUPERSEDED}),
    S.APPROVED: frozenset({S.RUNNING, S.PENDING, S.FAILED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED}),
    S.SUCCEEDED: frozenset({S.FAILED}),
    S.FAILED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
    S.SUPERSEDED: frozenset(),
}

#: states in which a proposal still waits for, or acts on, a decision
LIVE = frozenset({S.PENDING, S.APPROVED, S.RUNNING})


class IllegalTransition(Exception):
    """A move the lifecycle does not allow: a bug in the caller, not a race (races lose the CAS)."""


def check_transition(from_state: ProposalState, to_state: ProposalState) -> None:
    if to_state not in TRANSITIONS[from_state]:
        raise IllegalTransition(f"a proposal cannot move from {from_state.value} to {to_state.value}")


def is_kind(value: str) -> bool:
    return value in ProposalKind._value2member_map_
