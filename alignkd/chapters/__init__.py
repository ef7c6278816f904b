"""The chapters layer: the only code that knows a chapter's parameter names.

One module per chapter (`ch05_mog_coverage`, `ch06_llm`, ...). Each maps the chapter's parameters to the
testbeds' configs through functions with explicit keyword-only arguments, named as in the notebook's
`parameters` cell (`tests/test_chapters_layer.py` holds the names equal), and writes that chapter's tables,
sentences and claim rows. The testbeds (`alignkd.mog`, `alignkd.lm`, `alignkd.pad`) never import this package,
the notebook grammar (`alignkd.parameters`) or `params/`.

A chapter that builds on another's results (chapter 07 on 05's and 06's) asks for the other chapter's
configuration here, so both name the same cached models whatever the profile says:

    setup, study = profile_call(ch05_mog_coverage.configs, "05_mog_coverage", profile)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ..parameters import find_chapter, resolve


def keyword_names(function: Callable) -> tuple[str, ...]:
    """The keyword-only parameters of a chapter function (what it reads of a chapter's parameters)."""
    return tuple(name for name, p in inspect.signature(function).parameters.items() if p.kind is p.KEYWORD_ONLY)


def profile_values(chapter: str, profile: str) -> dict[str, Any]:
    """A chapter's parameter values under `profile`: the notebook's defaults, then the profile file's, checked."""
    found = find_chapter(chapter)
    return {name: p.default for name, p in found.parameters.items()} | resolve(found, profile)


def named(function: Callable, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a chapter's `values` that `function` names (its keyword-only parameters)."""
    return {name: values[name] for name in keyword_names(function)}


def call_with(function: Callable, values: Mapping[str, Any], **overrides: Any) -> Any:
    """`function` called with the values it names of a chapter's `values` (then `overrides`)."""
    return function(**named(function, {**values, **overrides}))


def profile_call(function: Callable, chapter: str, profile: str, **overrides: Any) -> Any:
    """`call_with(function, ...)` on `chapter`'s parameter values under `profile` (then `overrides`)."""
    return call_with(function, profile_values(chapter, profile), **overrides)


__all__ = ["keyword_names", "named", "profile_values", "call_with", "profile_call"]
