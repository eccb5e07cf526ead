"""Import aiogram without building all ~600 of its pydantic validators up front.

`aiogram.types` ends by calling `model_rebuild(_types_namespace=...)` on every one of its ~440
models, so that their forward references resolve, and each of the ~170 Bot API methods builds
its validator as its class is made. Each rebuild builds that model's whole schema, its nested
models inlined again and again: 4-5 s of CPU on this project's 2-core machine, paid by every
`remediator run` and every process that loads the bot (aiogram issues #1876, #1891), for
validators the bot mostly never uses.

pydantic can build a model on its first use instead (`defer_build`, which aiogram's types already
ask for) as long as the names in its annotations can be found then. So, while aiogram is imported:
- the rebuild loop at the end of `aiogram.types` only leaves each model the namespace it was given;
- each `aiogram.types` submodule gets the type names it imports only for type checkers, so a
  model built later, or inlined in another, finds them;
- the methods' base class asks for `defer_build` too.
A model is then built the first time it is used (Update, Message and SendMessage on the first
update, a fraction of a second), and the import drops from about 6 s of CPU to about 1.5 s.

One use builds a model without making it complete: a deferred model met inside another's schema
is built inline, again for every model that contains it. aiogram validates every answer with
`Response[<result type>]`, so `Response[Message]`, `Response[Message | bool]` and
`Response[list[Update]]` would each build all of Message again (0.15-0.2 s of CPU apiece). The
Telegram types in a result type are therefore built on their own before its `Response` is, which
then reuses them (a few ms).

`install()` (called by `bot/__init__.py`, before anything can import aiogram) puts a finder on
`sys.meta_path` that wraps these two imports only, and removes itself once both are done.
pydantic builds deferred models without a lock, which is safe here: the bot uses Telegram types
on its one event-loop thread.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, get_args, get_origin

TYPES_MODULE = "aiogram.types"
METHODS_BASE_MODULE = "aiogram.methods.base"


def install() -> None:
    """Defer the building of aiogram's models, if aiogram is not imported yet (idempotent)."""
    if "aiogram" in sys.modules or any(isinstance(finder, _AiogramFinder) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _AiogramFinder())


def _import_types_deferred(run_module: Callable[[], None], module: ModuleType) -> None:
    from pydantic import BaseModel

    eager = BaseModel.__dict__["model_rebuild"]

    def remember_namespace(cls: type[BaseModel], *args: Any, _types_namespace: Any = None, **kwargs: Any) -> Any:
        if args or kwargs or _types_namespace is None or not cls.__module__.startswith(f"{TYPES_MODULE}."):
            return eager.__func__(cls, *args, _types_namespace=_types_namespace, **kwargs)
        # What model_rebuild would have resolved the annotations with; the class's own names win, as there.
        own = cls.__dict__.get("__pydantic_parent_namespace__") or {}
        cls.__pydantic_parent_namespace__ = {**_types_namespace, **own}
        return None

    BaseModel.model_rebuild = classmethod(remember_namespace)  # type: ignore[method-assign,assignment]
    try:
        run_module()
    finally:
        BaseModel.model_rebuild = eager  # type: ignore[method-assign]
    _give_submodules_the_type_names(module)


def _give_submodules_the_type_names(types_module: ModuleType) -> None:
    """What each submodule imports under TYPE_CHECKING, for the models built after the import."""
    names = {name: getattr(types_module, name) for name in types_module.__all__}
    homes = {getattr(value, "__module__", "") for value in names.values()}
    for home in homes:
        if home.startswith(f"{TYPES_MODULE}.") and home in sys.modules:
            for name, value in names.items():
                sys.modules[home].__dict__.setdefault(name, value)


def _import_methods_base_deferred(run_module: Callable[[], None], module: ModuleType) -> None:
    run_module()
    # Read by every method class made after this one (all of them): build on first use.
    module.TelegramMethod.model_config["defer_build"] = True
    _build_result_types_before_their_response(module.Response)


def _build_result_types_before_their_response(response: type) -> None:
    """`Response[T]` is built as it is parametrized: build T's Telegram types first, so that it
    reuses them instead of building them inline (see the module's docstring)."""
    parametrize = response.__class_getitem__.__func__  # type: ignore[attr-defined]

    def build_types_then_parametrize(cls: type, params: Any) -> Any:
        for model in _telegram_types_in(params):
            if not model.__pydantic_complete__:
                # As on its first use, with the namespace the types module gave it. If it cannot be
                # built, it stays deferred and `Response[T]` builds it inline, as it would have.
                model.model_rebuild(raise_errors=False, _parent_namespace_depth=0)
        return parametrize(cls, params)

    response.__class_getitem__ = classmethod(build_types_then_parametrize)  # type: ignore[attr-defined]


def _telegram_types_in(annotation: Any) -> Iterator[Any]:
    """The `aiogram.types` models named in a result type (`Message`, `Message | bool`, `list[Update]`)."""
    if get_origin(annotation) is None and isinstance(annotation, type):
        if annotation.__module__.startswith(f"{TYPES_MODULE}.") and hasattr(annotation, "__pydantic_complete__"):
            yield annotation
        return
    for arg in annotation if isinstance(annotation, tuple) else get_args(annotation):
        yield from _telegram_types_in(arg)


WRAPPED: dict[str, Callable[[Callable[[], None], ModuleType], None]] = {
    TYPES_MODULE: _import_types_deferred,
    METHODS_BASE_MODULE: _import_methods_base_deferred,
}


class _AiogramFinder(importlib.abc.MetaPathFinder):
    """Finds the wrapped modules as usual, with a loader that runs them through their wrapper."""

    def __init__(self) -> None:
        self.waiting = set(WRAPPED)

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname not in self.waiting:
            return None
        self.waiting.discard(fullname)
        if not self.waiting:
            sys.meta_path.remove(self)  # from here on the usual finders do all the work
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = _WrappingLoader(spec.loader.name, spec.loader.path)
        return spec


class _WrappingLoader(importlib.machinery.SourceFileLoader):
    def exec_module(self, module: ModuleType) -> None:
        WRAPPED[self.name](lambda: super(_WrappingLoader, self).exec_module(module), module)
