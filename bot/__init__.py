"""remediator: production errors in, triage cards out, humans decide."""

__version__ = "0.1.0"
