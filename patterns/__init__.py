"""Allow-listed safe fixes: match an error to a pre-written argv, run it after approval.

Public API (the integrator relies on exactly these names)::

    pset = load_patterns(path=None)            # None: packaged default.toml
    problems = PatternSet.check_file(path)     # [] when valid
    m = pset.match(alert, category=None)       # runnable PatternMatch or None
    m = pset.evaluate(alert, category=None)    # same, or a refused match explaining why
    result = await PatternRunner(output_limit=3000).run(m)
"""

from patterns.engine import (
    ACTIONABLE_CATEGORIES,
    Pattern,
    PatternError,
    PatternMatch,
    PatternSet,
    Placeholder,
    default_patterns_path,
    load_patterns,
)
from patterns.runner import PatternRunner, RunResult, StepResult

__all__ = [
    "ACTIONABLE_CATEGORIES",
    "Pattern",
    "PatternError",
    "PatternMatch",
    "PatternRunner",
    "PatternSet",
    "Placeholder",
    "RunResult",
    "StepResult",
    "default_patterns_path",
    "load_patterns",
]
