"""What Claude's tokens cost, from a TOML file (LLM_PRICES_FILE, else the shipped bot/llm/prices.toml).

Prices change more often than code does, so they live in a file an operator can edit:

    [default]                      # any model not listed
    input = 15.0                   # USD per million input tokens
    output = 75.0                  # USD per million output tokens

    [models."claude-haiku-4-5"]
    input = 1.0
    output = 5.0
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

_PER = 1_000_000


class PricesError(Exception):
    """The prices file cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Price:
    input: float  # USD per million tokens
    output: float


@dataclass(frozen=True)
class Prices:
    default: Price
    models: dict[str, Price]

    def price(self, model: str) -> Price:
        return self.models.get(model, self.default)

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        price = self.price(model)
        return (input_tokens * price.input + output_tokens * price.output) / _PER


def load_prices(path: Path | None = None) -> Prices:
    """The prices in `path`, or the shipped defaults. Raises PricesError naming what is wrong."""
    if path is None:
        text = resources.files("bot.llm").joinpath("prices.toml").read_text(encoding="utf-8")
        where = "bot/llm/prices.toml"
    else:
        where = f"LLM_PRICES_FILE {path}"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PricesError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PricesError(f"{where}: not valid TOML ({exc})") from None
    return parse_prices(data, where)


def parse_prices(data: dict[str, Any], where: str = "prices") -> Prices:
    if "default" not in data:
        raise PricesError(f"{where}: needs a [default] table (the price of a model not listed)")
    default = _price(data["default"], f"{where}: [default]")
    models_table = data.get("models", {})
    if not isinstance(models_table, dict):
        raise PricesError(f"{where}: [models] must be a table of models")
    models = {name: _price(value, f'{where}: [models."{name}"]') for name, value in models_table.items()}
    return Prices(default=default, models=models)


def _price(value: object, where: str) -> Price:
    if not isinstance(value, dict):
        raise PricesError(f"{where} must be a table with input and output")
    numbers = []
    for key in ("input", "output"):
        number = value.get(key)
        if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
            raise PricesError(f"{where}: {key} must be a number of USD per million tokens, 0 or more")
        numbers.append(float(number))
    return Price(input=numbers[0], output=numbers[1])
