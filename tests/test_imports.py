"""The library imports without the notebook stack (SPEC §7): a GPU machine has torch, transformers and
accelerate, but no jupytext, papermill, nbformat, jupyter-book, trl, datasets, gguf or deepspeed.

Each check runs in a fresh interpreter in which those packages are made absent, then imports every module
of a package. Absent means what an uninstalled package looks like to code that probes for it:
`import jupytext` raises ModuleNotFoundError, `importlib.util.find_spec("jupytext")` is None and "jupytext" is
not in `sys.modules`. So every meta-path finder is wrapped to not see them. Two simpler blockers fail where the
real machine does not: a front finder that raises breaks transformers, which probes optional packages with
`find_spec`, and `sys.modules[name] = None` breaks scipy, which imports sphinx when "sphinx" is in `sys.modules`.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import alignkd

# top-level names of what the GPU machine lacks; a library module may import them only inside a function
ABSENT = ("jupytext", "papermill", "nbformat", "nbclient", "jupyter_book", "myst_nb", "sphinx",
          "trl", "datasets", "gguf", "deepspeed")

# Makes ABSENT uninstalled, walks `package` (at `root`) and imports each module; prints one JSON object:
# {"blocked": {name: what `import name` raised}, "hidden": {name: find_spec is None and not in sys.modules},
#  "loaded": absent modules loaded all the same, "modules": {module: its import error or None}}.
_SCRIPT = textwrap.dedent("""
    import importlib, importlib.util, json, pkgutil, sys, traceback

    absent, package, root = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]

    def is_absent(name):
        return name.partition(".")[0] in absent

    class Hiding:
        \"\"\"A meta-path finder that does not see the absent packages; anything else goes to the one it wraps.\"\"\"
        def __init__(self, finder):
            self.finder = finder
        def find_spec(self, name, path=None, target=None):
            if is_absent(name) or not hasattr(self.finder, "find_spec"):
                return None
            return self.finder.find_spec(name, path, target)
        def __getattr__(self, attribute):  # find_distributions, invalidate_caches
            return getattr(self.finder, attribute)

    for name in [name for name in sys.modules if is_absent(name)]:  # a .pth file could have loaded one
        del sys.modules[name]
    sys.meta_path[:] = [Hiding(finder) for finder in sys.meta_path]
    sys.path.insert(0, root)

    blocked, hidden = {}, {}
    for name in absent:
        try:
            importlib.import_module(name)
            blocked[name] = None
        except ImportError as error:
            blocked[name] = type(error).__name__
        hidden[name] = importlib.util.find_spec(name) is None and name not in sys.modules

    modules = {}
    def failed(name):  # walk_packages could not import a package to look inside it
        modules[name] = traceback.format_exc(limit=-3)
    top = importlib.import_module(package)
    for info in pkgutil.walk_packages(top.__path__, package + ".", onerror=failed):
        try:
            importlib.import_module(info.name)
            modules.setdefault(info.name, None)
        except Exception:
            modules[info.name] = traceback.format_exc(limit=-3)
    # a finder added after ours (by some package) would not hide them: then they were loaded
    loaded = sorted(name for name in sys.modules if is_absent(name))
    print(json.dumps({"blocked": blocked, "hidden": hidden, "loaded": loaded, "modules": modules}))
""")


def _import_all(package: str, root: Path) -> dict:
    """Run the script in a fresh interpreter (one thread: it imports torch) and read its report."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(ABSENT), package, str(root)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _failures(report: dict) -> dict[str, str]:
    return {name: error for name, error in report["modules"].items() if error}


def test_every_module_imports_without_the_notebook_stack():
    report = _import_all("alignkd", Path(alignkd.__file__).parent.parent)
    # the blocker really blocks: each absent package fails to import, is not found, and nothing loaded one
    assert report["blocked"] == {name: "ModuleNotFoundError" for name in ABSENT}
    assert report["hidden"] == {name: True for name in ABSENT}
    assert report["loaded"] == []
    failures = _failures(report)
    assert failures == {}, "\n".join(f"{name}:\n{error}" for name, error in failures.items())
    # the walk saw the whole library, its subpackages and the entry points included
    modules = set(report["modules"])
    for expected in ("alignkd.parameters", "alignkd.chapters", "alignkd.book", "alignkd.cli", "alignkd.__main__", "alignkd.provenance",
                     "alignkd.claims", "alignkd.lm.config", "alignkd.lm.experiments", "alignkd.lm.grpo",
                     "alignkd.lm.gguf", "alignkd.pad.lm", "alignkd.pad.mog", "alignkd.mog.experiments"):
        assert expected in modules
    files = list(Path(alignkd.__file__).parent.rglob("*.py"))
    assert len(modules) == len(files) - 1  # every file but alignkd/__init__.py, the package walked


def test_a_top_level_import_of_an_absent_package_is_caught(tmp_path):
    """The check above fails for a module that imports jupytext at the top, not for one that imports it inside a
    function, and probes see the absent packages as a machine without them would."""
    package = tmp_path / "sample"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "lazy.py").write_text("def read(path):\n    import jupytext\n    return jupytext.read(path)\n")
    (package / "sub" / "eager.py").write_text("import jupytext\n")
    (package / "sub" / "probe.py").write_text(
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('trl') is None  # how transformers asks\n"
        "assert 'sphinx' not in sys.modules  # how scipy asks\n"
        "import json  # anything else imports as usual\n")
    report = _import_all("sample", tmp_path)
    assert sorted(report["modules"]) == ["sample.lazy", "sample.sub", "sample.sub.eager", "sample.sub.probe"]
    assert list(_failures(report)) == ["sample.sub.eager"]
    assert "ModuleNotFoundError: No module named 'jupytext'" in report["modules"]["sample.sub.eager"]
