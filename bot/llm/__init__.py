"""Claude: one gate for every call (spend cap, usage, plain errors), and the prices it counts with.

Never imports aiogram: chat messages go through an `Announcer` (CardPublisher.say)."""

from bot.llm.gate import Announcer, BudgetSpent, ClaudeGate, ClaudeModels, ClaudeUnavailable
from bot.llm.prices import Prices, PricesError, load_prices

__all__ = ["Announcer", "BudgetSpent", "ClaudeGate", "ClaudeModels", "ClaudeUnavailable", "Prices", "PricesError",
           "load_prices"]
