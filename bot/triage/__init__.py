"""Offline rules triage and ownership: see ``rules.toml`` for the rules and their format."""

from bot.triage.owners import OwnerEntry, OwnerMap
from bot.triage.rules import Rule, RulesError, RuleSet

__all__ = ["OwnerEntry", "OwnerMap", "Rule", "RuleSet", "RulesError"]
