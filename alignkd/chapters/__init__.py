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

from ..cache import results_root
from ..parameters import (ParameterError, PreflightError, check_profile_name, check_writable, find_chapter,
                          machine_problems, resolve)
from . import memory


# What an IPython kernel defines before a chapter's first cell: anything else in `globals()` then is a parameter.
_KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


def validate_chapter(chapter_name: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """A chapter's own first check, whichever way it was started (plain papermill, `alignkd run`, the book): the
    parameters in the notebook's `namespace` (its `globals()` right after the parameters cell) against the
    chapter's spec, the profile, this machine and the results folder: the same checks as `preflight` and the CLI.
    A name papermill injected that the chapter does not have is refused (papermill only warns). Returns the
    checked values; raises `ParameterError` naming the parameter and what it allows, before any compute."""
    chapter = find_chapter(chapter_name)
    given = {name for name, value in namespace.items() if not name.startswith("_") and name not in _KERNEL_NAMES
             and isinstance(value, (int, float, str, list, tuple, dict, type(None)))}  # papermill injects literals
    unknown = sorted(given - set(chapter.parameters))
    if unknown:
        raise ParameterError(f"chapter '{chapter.name}' has no parameter{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(repr(u) for u in unknown)} (its parameters: {', '.join(chapter.parameters)})")
    values = {name: namespace[name] for name in chapter.parameters if name in namespace}
    if "profile" in values:
        check_profile_name(values["profile"])
    checked = chapter.check(values)
    problems = machine_problems(chapter, checked)
    if problems:
        raise PreflightError(f"chapter '{chapter.name}' cannot run on this machine; nothing was run:\n  "
                             + "\n  ".join(problems))
    memory.check_memory({chapter.name: checked}, {chapter.name: chapter.defaults})
    if "profile" in checked:
        check_writable(results_root() / checked["profile"])
    return checked


def keyword_names(function: Callable) -> tuple[str, ...]:
    """The keyword-only parameters of a chapter function (what it reads of a chapter's parameters)."""
    return tuple(name for name, p in inspect.signature(function).parameters.items() if p.kind is p.KEYWORD_ONLY)


def profile_values(chapter: str, profile: str) -> dict[str, Any]:
    """A chapter's parameter values under `profile`: the notebook's defaults, then the profile file's, checked."""
    found = find_chapter(chapter)
    return found.defaults | resolve(found, profile)


def named(function: Callable, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a chapter's `values` that `function` names (its keyword-only parameters)."""
    return {name: values[name] for name in keyword_names(function)}


def call_with(function: Callable, values: Mapping[str, Any], **overrides: Any) -> Any:
    """`function` called with the values it names of a chapter's `values` (then `overrides`)."""
    return function(**named(function, {**values, **overrides}))


def profile_call(function: Callable, chapter: str, profile: str, **overrides: Any) -> Any:
    """`call_with(function, ...)` on `chapter`'s parameter values under `profile` (then `overrides`)."""
    return call_with(function, profile_values(chapter, profile), **overrides)


def predicted_seconds(chapter_name: str, values: Mapping[str, Any]) -> float | None:
    """A chapter's predicted time on this machine's CPU cores under `values` (its parameter values; the notebook's
    defaults fill the rest), where the chapter has a cost model (chapter 06: `ch06_cost`), else None. The book
    starts the longest lane first."""
    if chapter_name != "06_llm":
        return None
    from .ch06_cost import chapter_cost, machines, total_minutes

    full = find_chapter(chapter_name).defaults | dict(values)
    try:
        return 60 * total_minutes(chapter_cost(full, machines(workers=full["workers"])), "cpu")
    except (ValueError, KeyError):  # a ground truth the model cannot size, or values it cannot read
        return None


__all__ = ["validate_chapter", "keyword_names", "named", "profile_values", "call_with", "profile_call",
           "predicted_seconds"]

