"""Offline rules triage and ownership: see ``rules.toml`` for the rules and their format."""

from bot.triage.owners import OwnerEntry, OwnerMap, OwnersError
from bot.triage.rules import Rule, RulesError, RuleSet

__all__ = ["OwnerEntry", "OwnerMap", "OwnersError", "Rule", "RuleSet", "RulesError"]
