"""The memory model refuses what would not fit before any compute, naming the parameters that drive it."""

import subprocess
import sys

import pytest

from alignkd.chapters import memory, profile_values, validate_chapter
from alignkd.cli import main
from alignkd.parameters import ParameterError, chapters

MEASURE = """
import resource, sys, torch
torch.set_num_threads(1)
from alignkd.mog.metrics import evaluate
from alignkd.mog.mixture import Mixture, generators
rows, n = 20, int(sys.argv[1])
evaluate(Mixture.random_init(8, generators(0, "probe", range(rows))), (7,), 0, range(rows), n)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _peak(n: int) -> float:
    return float(subprocess.run([sys.executable, "-c", MEASURE, str(n)], capture_output=True, text=True,
                                check=True).stdout)


def test_the_mog_constant_covers_what_evaluation_allocates():
    """The slope of a process's peak memory in the samples scored: what imports and set-up take cancels out.

    The slope depends on the machine's allocator and torch build (168 bytes here, 97 on CI's machine), so the test
    holds the constant to what matters: it is not below the measurement (a refusal never lets through what would not
    fit) and not more than 5 × above it (a refusal never turns away what fits easily).
    """
    measured = (_peak(150_000) - _peak(50_000)) / (20 * 100_000)
    assert memory.MOG_BYTES_PER_ROW_SAMPLE / 5 < measured <= memory.MOG_BYTES_PER_ROW_SAMPLE, measured


def test_every_profile_that_ran_fits_this_model_on_a_24_gb_machine():
    for profile in ("quick", "default"):
        values = {name: profile_values(name, profile) for name in chapters()}
        memory.check_memory(values, {}, available=24 * memory.GB)


def test_a_chapter_too_large_is_refused_with_its_drivers():
    values = profile_values("05_mog_coverage", "default")
    with pytest.raises(ParameterError, match=r"05_mog_coverage needs about 2.5\d* GB \(n_trials = 150 × "
                                             r"eval_samples = 10000 × 6 settings.*has 1 GB: lower them about 2.5"):
        memory.check_memory({"05_mog_coverage": values}, {}, available=memory.GB)


def test_the_cli_refuses_a_billion_trials_in_one_line(tmp_path, monkeypatch, capsys):
    """Before: n_trials = 1000000000 raised MemoryError after 76 s (about 36 GB asked of a 24 GiB machine)."""
    monkeypatch.setenv("ALIGNKD_RESULTS", str(tmp_path))
    assert main(["run", "02", "--profile", "quick", "-p", "n_trials=1000000000"]) == 2
    assert "parameter 'n_trials' = 1000000000: must be <= 2000" in capsys.readouterr().err
    assert main(["run", "02", "--profile", "quick", "-p", "n_trials=2000", "-p", "eval_samples=1000000"]) == 2
    err = capsys.readouterr().err
    assert "02_mog_setup needs about" in err and "n_trials = 2000 × eval_samples = 1000000" in err
    assert not list(tmp_path.rglob("*.parquet"))


def test_the_first_cell_checks_memory_too(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKD_RESULTS", str(tmp_path))
    namespace = chapters()["02_mog_setup"].defaults | {"profile": "quick", "n_trials": 2000, "eval_samples": 1000000}
    with pytest.raises(ParameterError, match="02_mog_setup needs about"):
        validate_chapter("02_mog_setup", namespace)


def test_the_refusal_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALIGNKD_RESULTS", str(tmp_path))
    assert main(["run", "05", "--profile", "quick", "-p", "n_trials=2000", "-p", "eval_samples=1000000"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
