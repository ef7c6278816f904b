"""Chapters, their parameters, and checking parameter values before anything runs.

A chapter is a MyST-markdown notebook `notebooks/NN_name.md`. Its single code cell tagged
`parameters` is the only place its knobs live; each line is `name = default  # spec`, where the
default fixes the type and the optional spec fixes the allowed values:

    n_trials = 20          # >= 1; independent seeds per setting
    beta = 1.0             # > 0; KL coefficient (paper §3.1)
    betas = [0.1, 0.5]     # each > 0
    algorithm = "ppo"      # one of: ppo, grpo, dpo_on, dpo_off
    profile = "default"    # one of: quick, default, paper

Conditions before the first `;` are the spec (`>`, `>=`, `<`, `<=` against a number, several
joined by `,`, or `one of:`); what follows is a description. A comment that starts with neither
is all description. For lists, conditions apply to each element.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jupytext
import yaml

from .cache import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = REPO_ROOT / "params"
PROFILES = ("quick", "default", "paper")

_COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_CONDITION = re.compile(r"^\s*(>=|<=|>|<)\s*(-?[\d.eE+-]+)\s*$")


class ParameterError(ValueError):
    """A parameter value that a chapter does not accept; the message names it and what is allowed."""


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    conditions: tuple[tuple[str, float], ...] = ()
    choices: tuple[str, ...] = ()
    description: str = ""

    @property
    def kind(self) -> str:
        if isinstance(self.default, list):
            inner = type(self.default[0]).__name__ if self.default else "any"
            return f"list[{inner}]"
        return type(self.default).__name__

    def allowed(self) -> str:
        parts = [self.kind]
        parts += [f"{op} {bound:g}" for op, bound in self.conditions]
        if self.choices:
            parts.append("one of " + ", ".join(self.choices))
        return ", ".join(parts)

    def check(self, value: Any) -> Any:
        """Return `value` coerced to this parameter's type, or raise ParameterError."""
        if isinstance(self.default, list):
            if not isinstance(value, (list, tuple)):
                raise self._error(value, "expected a list")
            if not value:
                raise self._error(value, "expected a non-empty list")
            template = self.default[0] if self.default else None
            return [self._check_scalar(v, template) for v in value]
        return self._check_scalar(value, self.default)

    def _check_scalar(self, value: Any, template: Any) -> Any:
        if template is not None:
            value = self._coerce(value, type(template))
        for op, bound in self.conditions:
            if not _COMPARISONS[op](value, bound):
                raise self._error(value, f"must be {op} {bound:g}")
        if self.choices and value not in self.choices:
            raise self._error(value, "must be one of " + ", ".join(self.choices))
        return value

    def _coerce(self, value: Any, kind: type) -> Any:
        if kind is bool:
            if isinstance(value, bool):
                return value
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif kind is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif kind is str:
            if isinstance(value, str):
                return value
        else:
            return value
        raise self._error(value, f"expected {kind.__name__}")

    def _error(self, value: Any, why: str) -> ParameterError:
        return ParameterError(f"parameter '{self.name}' = {value!r}: {why} (allowed: {self.allowed()})")


@dataclass(frozen=True)
class Chapter:
    name: str  # the notebook's stem, e.g. "01_theory"
    path: Path
    title: str
    parameters: dict[str, Parameter] = field(default_factory=dict)

    def check(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate a full or partial set of values; unknown names fail with the known ones listed."""
        checked = {}
        for name, value in values.items():
            if name not in self.parameters:
                known = ", ".join(self.parameters) or "none"
                raise ParameterError(f"chapter '{self.name}' has no parameter '{name}' (its parameters: {known})")
            checked[name] = self.parameters[name].check(value)
        return checked


def _parse_spec(comment: str) -> tuple[tuple[tuple[str, float], ...], tuple[str, ...], str]:
    text = comment.strip()
    spec, _, description = text.partition(";")
    spec = spec.strip()
    if spec.startswith("one of:"):
        choices = tuple(c.strip() for c in spec[len("one of:"):].split(",") if c.strip())
        return (), choices, description.strip()
    if spec.startswith("each "):
        spec = spec[len("each "):]
    conditions = []
    for part in spec.split(","):
        match = _CONDITION.match(part)
        if not match:
            return (), (), text  # not a spec: the whole comment is a description
        conditions.append((match.group(1), float(match.group(2))))
    return tuple(conditions), (), description.strip()


def parse_parameters(source: str, where: str = "<cell>") -> dict[str, Parameter]:
    """Parse a parameters cell: `name = literal  # spec; description` per line."""
    parameters: dict[str, Parameter] = {}
    lines = source.splitlines()
    tree = ast.parse(source)
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{where}: line {node.lineno}: a parameters cell holds only `name = value` lines")
        name = node.targets[0].id
        try:
            default = ast.literal_eval(node.value)
        except ValueError as exc:
            raise ValueError(f"{where}: parameter '{name}' must have a literal default") from exc
        line = lines[node.end_lineno - 1]
        comment = line.split("#", 1)[1] if "#" in line else ""
        conditions, choices, description = _parse_spec(comment)
        parameter = Parameter(name, default, conditions, choices, description)
        parameter.check(default)  # a default that breaks its own spec is a bug in the notebook
        parameters[name] = parameter
    return parameters


def load_chapter(path: Path) -> Chapter:
    notebook = jupytext.read(path)
    cells = [c for c in notebook.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    title = next(
        (line.lstrip("# ").strip() for c in notebook.cells if c.cell_type == "markdown"
         for line in c.source.splitlines() if line.startswith("# ")),
        path.stem,
    )
    return Chapter(path.stem, path, title, parse_parameters(cells[0].source, str(path)))


def chapters(directory: Path = NOTEBOOKS_DIR) -> dict[str, Chapter]:
    """Every chapter, in book order (by file name)."""
    return {p.stem: load_chapter(p) for p in sorted(directory.glob("[0-9][0-9]_*.md"))}


def find_chapter(name: str, directory: Path = NOTEBOOKS_DIR) -> Chapter:
    """A chapter by stem (`02_mog_setup`), number (`02`, `2`) or name part (`mog_setup`)."""
    available = chapters(directory)
    for stem, chapter in available.items():
        number, _, rest = stem.partition("_")
        if name in (stem, number, rest) or (name.isdigit() and int(name) == int(number)):
            return chapter
    raise ParameterError(f"no chapter '{name}' (chapters: {', '.join(available)})")


def profile_values(profile: str, directory: Path = PARAMS_DIR) -> dict[str, dict[str, Any]]:
    """The `params/<profile>.yaml` file: chapter stem -> parameter values."""
    path = directory / f"{profile}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.yaml")))
        raise ParameterError(f"unknown profile '{profile}' (profiles: {known})")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ParameterError(f"{path}: expected a mapping of chapter name to parameters")
    return values


def resolve(chapter: Chapter, profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checked parameter values for one chapter: profile file, then overrides."""
    values = dict(profile_values(profile).get(chapter.name) or {})
    values.update(overrides or {})
    if "profile" in chapter.parameters:
        values.setdefault("profile", profile)
    return chapter.check(values)


def check_profile(profile: str) -> dict[str, dict[str, Any]]:
    """Check a whole profile file against every chapter before anything runs."""
    available = chapters()
    values = profile_values(profile)
    unknown = sorted(set(values) - set(available))
    if unknown:
        raise ParameterError(f"params/{profile}.yaml names unknown chapters {unknown} (chapters: {', '.join(available)})")
    return {name: resolve(chapter, profile) for name, chapter in available.items()}
