"""The `gpu` profile: ~30 M / ~10 M students on the SmolLM2 tokenizer; without a GPU it fails before any compute."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignkd.lm.students import count_parameters, make_student

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size, millions", [("30m", 29.5), ("10m", 10.0)])
def test_gpu_students_have_their_named_size_on_the_smollm2_vocabulary(size, millions):
    with torch.device("meta"):  # no memory, no init: only the shapes
        model = make_student(size, 49152, bos_id=1, eos_id=2, pad_id=2)
    assert count_parameters(model) / 1e6 == pytest.approx(millions, abs=0.05)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_the_gpu_profile_fails_before_its_first_chapter_without_a_gpu(tmp_path):
    env = {**os.environ, "ALIGNKD_RESULTS": str(tmp_path / "results"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "alignkd", "run", "06_llm", "--profile", "gpu", "-o",
                           str(tmp_path / "out.ipynb")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "device = 'cuda' needs a CUDA GPU" in done.stderr and "bf16 = True needs a CUDA GPU" in done.stderr
    assert not (tmp_path / "out.ipynb").exists() and not (tmp_path / "results").exists()
