"""The chapters layer (`alignkd.chapters`) is the only code that knows a chapter's parameter names.

- every keyword of a chapter module's functions is a parameter of its notebook, under the same name, so a rename
  in either fails here and not twenty minutes into a build;
- every notebook parameter is either named by a chapter function or read by the notebook itself (none is dead);
- the testbeds (`mog`, `lm`, `pad`) never import the notebook grammar, a chapter module or `params/`.
"""

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import alignkd
import alignkd.chapters
from alignkd.chapters import keyword_names, profile_call, profile_values
from alignkd.parameters import chapters, read_myst

PACKAGE = Path(alignkd.__file__).parent
CHAPTER_MODULES = sorted(m.name for m in pkgutil.iter_modules(alignkd.chapters.__path__) if m.name.startswith("ch"))


def _module(name):
    return importlib.import_module(f"alignkd.chapters.{name}")


def _chapter_functions(module):
    """The functions a chapter module declares as taking its chapter's parameters (`PARAMETER_FUNCTIONS`)."""
    return {name: getattr(module, name) for name in getattr(module, "PARAMETER_FUNCTIONS", ())}


def _chapters_of(module) -> tuple[str, ...]:
    """The chapters a module serves: `CHAPTERS` (one module for chapters 03 and 04) or its `CHAPTER`."""
    return tuple(getattr(module, "CHAPTERS", None) or [c for c in (getattr(module, "CHAPTER", None),) if c])


def _required_keywords(function) -> set[str]:
    return {name for name, p in inspect.signature(function).parameters.items()
            if p.kind is p.KEYWORD_ONLY and p.default is p.empty}


def _code_outside_parameters(chapter) -> str:
    _, cells = read_myst(chapter.path)
    return "\n".join(source for kind, source, meta in cells
                     if kind == "code" and "parameters" not in (meta.get("tags") or []))


@pytest.mark.parametrize("module_name", [m for m in CHAPTER_MODULES if hasattr(_module(m), "PARAMETER_FUNCTIONS")])
def test_chapter_functions_name_the_notebook_parameters(module_name):
    """A module serving several chapters may give a keyword a default: the chapters without that parameter leave it."""
    module = _module(module_name)
    served = {name: set(chapters()[name].parameters) for name in _chapters_of(module)}
    functions = _chapter_functions(module)
    assert functions, f"{module_name} maps no parameters"
    for name, function in functions.items():
        assert keyword_names(function), f"{module_name}.{name} takes no keyword-only parameters"
        unknown = set(keyword_names(function)) - set().union(*served.values())
        assert not unknown, f"{module_name}.{name} names {sorted(unknown)}, not parameters of {sorted(served)}"
        for chapter, parameters in served.items():
            missing = _required_keywords(function) - parameters
            assert not missing, f"{module_name}.{name} needs {sorted(missing)}, not parameters of {chapter}"


@pytest.mark.parametrize("chapter_name", ["02_mog_setup", "03_mog_alignment", "04_mog_multi_target", "05_mog_coverage",
                                          "06_llm", "07_pad"])
def test_every_parameter_goes_somewhere_visible(chapter_name):
    """A parameter is read by a chapter function the notebook calls with explicit keywords, or by the notebook."""
    chapter = chapters()[chapter_name]
    named = {n for m in CHAPTER_MODULES if chapter_name in _chapters_of(_module(m))
             for f in _chapter_functions(_module(m)).values() for n in keyword_names(f)} & set(chapter.parameters)
    code = _code_outside_parameters(chapter)
    for name in chapter.parameters:
        used = re.search(rf"\b{name}\b", code)
        assert used, f"{chapter_name}: parameter {name} is never read by the notebook"
        if name in named:  # passed by keyword, never through globals()
            assert re.search(rf"\b{name}={name}\b", code), f"{chapter_name}: {name} is not passed as {name}={name}"
    # the first cell hands the whole namespace to the parameter check, and nothing else may
    assert "globals()" not in re.sub(r"validate_chapter\(\"\w+\", globals\(\)\)", "", code)


def test_chapter_05_configs_take_every_study_parameter():
    from alignkd.chapters import ch05_mog_coverage as ch05

    chapter = chapters()[ch05.CHAPTER]
    assert set(keyword_names(ch05.configs)) == set(chapter.parameters) - {"profile"}


def test_chapter_07_reads_chapter_05_and_06_through_their_modules():
    """Chapter 07 builds chapter 05's and 06's configs with their own chapter functions: the same cache keys."""
    from alignkd.chapters import ch05_mog_coverage as ch05, ch06_llm as ch06

    setup, study = profile_call(ch05.configs, ch05.CHAPTER, "quick")
    values = profile_values(ch05.CHAPTER, "quick")
    assert (setup.n_trials, study.beta_kds, study.algorithms) == (
        values["n_trials"], tuple(values["beta_kds"]), tuple(values["algorithms"]))
    config = profile_call(ch06.config, ch06.CHAPTER, "quick")
    assert config.high_recall.data.n_samples == profile_values(ch06.CHAPTER, "quick")["n_high"]
    source = (PACKAGE.parent / "notebooks" / "07_pad.md").read_text()
    assert "ch05_mog_coverage" in source and "ch06_llm" in source


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names |= {f"{module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("testbed", ["mog", "lm", "pad"])
def test_testbeds_never_import_the_chapters_layer(testbed):
    files = sorted((PACKAGE / testbed).rglob("*.py"))
    assert files
    for path in files:
        bad = {n for n in _imports(path) if n.split(".")[:2] in (["alignkd", "parameters"], ["alignkd", "chapters"])}
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {sorted(bad)}"
        text = path.read_text()
        assert "PARAMS_DIR" not in text and '"params/' not in text, f"{path} reads params/"


def test_the_import_check_sees_a_relative_import(tmp_path):
    """The check above can fail: a relative import of the grammar from a testbed module is caught."""
    fake = PACKAGE / "lm" / "_probe_import.py"
    fake.write_text("from ..parameters import find_chapter\nfrom ..chapters import ch06_llm\n")
    try:
        assert {"alignkd.parameters", "alignkd.chapters"} <= _imports(fake)
    finally:
        fake.unlink()
