"""The `gpu` and `gpu-smoke` profiles: ~30 M / ~10 M students on the SmolLM2 tokenizer, one process per GPU; without a
GPU they fail before any compute."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignkd.chapters import profile_values
from alignkd.lm.students import count_parameters, make_student

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size, millions", [("30m", 29.5), ("10m", 10.0)])
def test_gpu_students_have_their_named_size_on_the_smollm2_vocabulary(size, millions):
    with torch.device("meta"):  # no memory, no init: only the shapes
        model = make_student(size, 49152, bos_id=1, eos_id=2, pad_id=2)
    assert count_parameters(model) / 1e6 == pytest.approx(millions, abs=0.05)


@pytest.mark.parametrize("profile", ["gpu", "gpu-smoke"])
def test_gpu_profiles_run_one_process_per_gpu_on_the_smollm2_tokenizer(profile):
    params = profile_values("06_llm", profile)
    assert (params["device"], params["bf16"], params["workers"]) == ("cuda", True, 1)
    assert params["ground_truth"] == "gguf:smollm2" and {params["high_size"], params["low_size"]} == {"30m", "10m"}


def test_gpu_smoke_runs_every_alignment_and_a_final_kd():
    params = profile_values("06_llm", "gpu-smoke")
    from alignkd.lm.algorithms import ALGORITHMS

    assert set(params["algorithms"]) == set(ALGORITHMS)  # every GPU code path: every algorithm of the registry
    assert params["final_taus"] and params["kd_patience"] > 0  # early stopping: the held-out pass runs too


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize("profile", ["gpu", "gpu-smoke"])
def test_a_gpu_profile_fails_before_its_first_chapter_without_a_gpu(tmp_path, profile):
    env = {**os.environ, "ALIGNKD_RESULTS": str(tmp_path / "results"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "alignkd", "run", "06_llm", "--profile", profile, "-o",
                           str(tmp_path / "out.ipynb")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "device = 'cuda' needs a CUDA GPU" in done.stderr
    assert not (tmp_path / "out.ipynb").exists() and not (tmp_path / "results").exists()
