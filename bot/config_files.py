"""Reading the operator's TOML files (triage rules, owners, fix allow-list) one way.

Why: each file is declared as pydantic models, so what a key may hold is written once, next
to the key. This module is what the three loaders share: the strict base model, the regex and
number types, reading the file, and turning a `ValidationError` into one line per problem,
"file: where: what", with every problem of the file reported at once.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, StringConstraints, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

from bot.regex_safety import BoundedRegex, compile_regex

__all__ = ["ConfigFileError", "Loc", "NonEmptyStr", "Number", "StrictModel", "between", "matching", "parse_model",
           "parse_toml", "problem_lines", "raise_problems", "read_text", "read_toml", "regex"]

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound="ConfigFileError")

#: A TOML integer or float (never a bool or a string), as a float.
Number = Annotated[float, Field(strict=True)]
#: A string with its surrounding spaces taken off that must not be empty then.
NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class ConfigFileError(ValueError):
    """A file is unreadable or invalid; ``problems`` lists each problem as "file: where: what"."""

    what = "the file"

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problem(s) in {self.what}:" + "".join(f"\n  - {p}" for p in self.problems)
        super().__init__(message)


class StrictModel(BaseModel):
    """One table of a file: an unknown key is an error; the runtime objects are built from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def regex(flags: int) -> PlainValidator:
    """Annotate ``BoundedRegex`` with this: compiled with ``flags``, refused when unsafe."""

    def check(value: object) -> BoundedRegex:
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty regex string")
        return compile_regex(value, flags)

    return PlainValidator(check)


def between(low: float, high: float) -> AfterValidator:
    """Annotate a `Number` or `StrictInt` with this: it must be from ``low`` to ``high``."""

    def check(value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value

    return AfterValidator(check)


def matching(rx: re.Pattern[str], what: str) -> AfterValidator:
    """Annotate a ``str`` with this: it must fully match ``rx``, else "``what`` (got 'value')"."""

    def check(value: str) -> str:
        if not rx.fullmatch(value):
            raise ValueError(f"{what} (got {value!r})")
        return value

    return AfterValidator(check)


def raise_problems(problems: Iterable[tuple[Loc, str]]) -> None:
    """Report several problems from one validator, each at its own place under the validated value."""
    details = [
        InitErrorDetails(type=PydanticCustomError("problem", "{problem}", {"problem": message}), loc=loc, input=None)
        for loc, message in problems
    ]
    if details:
        raise ValidationError.from_exception_data("problems", details)


def read_toml(path: Path, error: type[E], what: str) -> dict[str, Any]:
    """The parsed file; ``error`` saying so when it cannot be read or is not TOML."""
    return parse_toml(read_text(path, error, what), path, error)


def read_text(path: Path, error: type[E], what: str) -> str:
    """The file's text; ``error`` saying so when it cannot be read."""
    try:
        return Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error([f"{path}: cannot read {what}: {exc}"]) from exc


def parse_toml(text: str, path: Path | str, error: type[E]) -> dict[str, Any]:
    """``text`` (read from ``path``) parsed; ``error`` saying so when it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error([f"{path}: invalid TOML: {exc}"]) from exc


def parse_model(model: type[M], data: Mapping[str, Any], source: str, error: type[E], **context: Any) -> M:
    """``model`` validated from ``data``; ``error`` listing every problem when it is not valid."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise error(problem_lines(exc, model, data, source)) from None


def problem_lines(exc: ValidationError, model: type[BaseModel], data: Any, source: str) -> list[str]:
    """One "file: where: what" line per error, e.g. ``p.toml: patterns.x.match.any[2]: invalid regex …``."""
    return [f"{source}: {_where(err['loc'], data)}: {_what(err, model)}" for err in exc.errors()]


def _where(loc: Loc, data: Any) -> str:
    """A location as a reader finds it in the file: ``rule #3 ('infra.redis').match[0]``."""
    text, node = "", data
    for part in (p for p in loc if p != "[key]"):  # "[key]": the key itself is wrong, and named already
        if isinstance(part, str):
            text = f"{text}.{part}" if text else part
            node = node.get(part) if isinstance(node, dict) else None
            continue
        node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
        if not isinstance(node, dict):
            text += f"[{part}]"
            continue
        label = node.get("id", node.get("name"))  # an [[array]] table: counted from 1, named when it can be
        text += f" #{part + 1}" + (f" ({label.strip()!r})" if isinstance(label, str) and label.strip() else "")
    return text or "(top level)"


_PLAIN = {"bool_type": "must be true or false", "int_type": "must be an integer", "float_type": "must be a number",
          "string_type": "must be a string", "list_type": "must be a list", "tuple_type": "must be a list",
          "dict_type": "must be a table", "model_type": "must be a table"}


def _what(err: Any, model: type[BaseModel]) -> str:
    """The message of one error in the file's words (a key's name, what it must be)."""
    kind, ctx, loc = err["type"], err.get("ctx") or {}, err["loc"]
    if kind == "extra_forbidden":
        known = list(_fields(_type_at(model, loc[:-1])))
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        return "unknown key" + (f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})")
    if kind == "missing":
        field = _fields(_type_at(model, loc[:-1])).get(str(loc[-1]))
        return "required" + (f": {field.description}" if field and field.description else "")
    if kind in ("enum", "literal_error"):
        return f"{err['input']!r} is not one of {ctx.get('expected')}"
    if kind in ("too_short", "string_too_short") and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items"
    if kind == "greater_than_equal":
        return f"must be {ctx['ge']} or more"
    return _PLAIN.get(kind) or str(err["msg"]).removeprefix("Value error, ")


def _fields(tp: Any) -> dict[str, FieldInfo]:
    """A model's fields by their key in the file; {} for anything else."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return {f.alias or name: f for name, f in tp.model_fields.items()}
    return {}


def _type_at(tp: Any, loc: Loc) -> Any:
    """The declared type at ``loc`` under ``tp``: a model's field, a list's item, a dict's value."""
    for part in loc:
        while get_origin(tp) in (Annotated, Union, types.UnionType):
            tp = next(a for a in get_args(tp) if a is not type(None))
        field = _fields(tp).get(str(part))
        args = get_args(tp)
        if field is not None:
            tp = field.annotation
        elif get_origin(tp) in (list, tuple) and args:
            tp = args[0]
        elif get_origin(tp) is dict and args:
            tp = args[1]
        else:
            return None
    return tp
