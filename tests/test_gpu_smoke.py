"""benchmarks/gpu_smoke.py, the one prepared GPU run, rehearsed on the CPU (`--tiny --device cpu`, bf16 on).

The GPU machine gives the run one command, so what can be checked without it is checked here: every file
of the record is written and parses, every stage's forward passes ran on the requested device under bf16
(the placement record of each stage), the metrics table holds K-A and A-K for every algorithm, and a budget
too small for the run skips the later stages while still writing env.json first and summary.json last.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_smoke.py"
RECORD = ("env.json", "throughput.csv", "throughput.json", "metrics.csv", "trajectories.csv", "summary.json")
PIPELINE_KINDS = ("references", "K-A", "A-K", "evaluation")


def rehearse(out: Path, budget: float, tokenizer: Path | None = None, pythonpath: str | None = None) -> dict:
    """Run the rehearsal in its own process (it arms SIGALRM, and its imports are part of its budget);
    `pythonpath` goes in front of the venv's packages (another transformers)."""
    options = ["--tokenizer", str(tokenizer)] if tokenizer else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--budget", str(budget),
                             "--device", "cpu", "--tiny", *options], capture_output=True, text=True,
                            env=env, timeout=budget + 120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The rehearsal as the GPU run is made: the SmolLM2 tokenizer extracted beforehand (the bundle's), when the
    GGUF is installed here; else p* speaks the synthetic language's tokenizer."""
    from alignkd.lm.groundtruth import smollm2_gguf_path

    tokenizer = None
    try:
        gguf = smollm2_gguf_path()
    except FileNotFoundError:
        gguf = None
    if gguf is not None and importlib.util.find_spec("gguf"):
        from alignkd.lm.gguf import extract_tokenizer

        tokenizer = extract_tokenizer(gguf, tmp_path_factory.mktemp("tokenizer"))
    out = tmp_path_factory.mktemp("gpu_smoke")
    return out, rehearse(out, 100, tokenizer)


def test_the_rehearsal_writes_every_file_of_the_record(rehearsal):
    out, summary = rehearsal
    for name in RECORD:
        assert (out / name).exists(), name
        if name.endswith(".json"):
            json.loads((out / name).read_text())
        else:
            assert len(pd.read_csv(out / name)) > 0, name
    assert summary["finished"] is True
    env = json.loads((out / "env.json").read_text())
    for key in ("python", "torch", "transformers", "accelerate", "device_name", "memory_gib", "bf16_autocast",
                "commit", "machine"):
        assert key in env, key
    assert env["bf16_autocast"] is True
    assert summary["commit"] == env["commit"] and summary["machine"] == env["machine"]


def test_every_stage_ran_on_the_cpu_under_bf16(rehearsal):
    _, summary = rehearsal
    stages = summary["stages"]
    assert [s for s in stages if s["status"] != "done"] == []
    assert summary["placement_problems"] == {}
    for stage in stages:
        assert stage["problems"] == [], stage["stage"]
        for use in stage["placement"]:
            assert (use["device"], use["dtype"]) == ("cpu", "bfloat16"), (stage["stage"], use)
    kinds = {s["kind"] for s in stages}
    assert {"ceiling", "train", "sample", "p*", *PIPELINE_KINDS} <= kinds
    # the record saw the forward passes it vouches for: every model-running stage tallied some
    for stage in stages:
        if stage["kind"] in ("train", "sample", *PIPELINE_KINDS):
            assert sum(u["forwards"] for u in stage["placement"] if u["owner"] == "LlamaForCausalLM") > 0, stage


def test_the_metrics_table_has_k_a_and_a_k_for_every_algorithm(rehearsal):
    out, summary = rehearsal
    metrics = pd.read_csv(out / "metrics.csv")
    algorithms = summary["params"]["algorithms"]
    assert sorted(metrics["algorithm"].unique()) == sorted(algorithms)
    for algorithm in algorithms:
        rows = metrics[metrics["algorithm"] == algorithm]
        assert set(rows["pipeline"]) == {"reference", "K-A", "A-K"}, algorithm
        assert set(rows.loc[rows["pipeline"] == "A-K", "model"]) == {"p'_AK", "p''_AK"}
        assert rows[["overall_precision", "overall_recall", "target_precision", "reward"]].notna().all().all()
    # p* is a random Llama on the 49 152-token SmolLM2 vocabulary: near-uniform, ≈ −log 49 152 per token
    assert summary["p_star"]["ground_truth"].startswith("hf:")
    if summary["p_star"]["tokenizer"] != "markov_tokenizer(64)":
        p_star = metrics[metrics["model"] == "p*"].iloc[0]
        assert -11.5 < p_star["overall_recall"] < -10.0


def test_throughput_rows_measure_against_the_measured_ceiling(rehearsal):
    out, _ = rehearsal
    rows = pd.read_csv(out / "throughput.csv")
    assert list(rows["kind"]) == ["matmul", "train", "sample"]
    assert json.loads((out / "throughput.json").read_text())[0]["kind"] == "matmul"
    ceiling = rows.loc[rows["kind"] == "matmul", "tflops"].iloc[0]
    assert ceiling > 0
    for _, row in rows[rows["kind"] != "matmul"].iterrows():
        assert row["tokens_per_s"] > 0 and row["params"] > 0
        assert row["mfu"] == pytest.approx(row["tflops"] / ceiling)
        assert (row["device"], row["dtype"]) == ("cpu", "bf16")


def test_a_tiny_budget_skips_the_later_stages_and_still_writes_its_record(tmp_path):
    summary = rehearse(tmp_path, 5)  # the imports alone take longer
    assert summary["finished"] is True
    statuses = {s["stage"]: s for s in summary["stages"]}
    assert statuses, "every stage is listed, run or not"
    evaluations = [s for s in summary["stages"] if s["kind"] == "evaluation"]
    assert evaluations == [] or all(s["status"] == "skipped" for s in evaluations)
    assert summary["stages"][-1]["status"] == "skipped"
    assert all(s["status"] in ("done", "skipped", "cut off") for s in summary["stages"])
    assert any("budget" in s.get("reason", "") for s in summary["stages"])
    written = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()}
    assert {"env.json", "summary.json", "throughput.csv", "throughput.json"} <= set(written)
    assert written["env.json"] == min(written.values())  # env.json is the first thing written
    assert written["summary.json"] == max(written.values())


def test_a_record_reads_back_as_the_book_shows_it(rehearsal, tmp_path):
    """`alignkd.lm.gpu_record` reads the folder the run wrote, as committed under runs/gpu/<date>_<device>/."""
    import shutil

    from alignkd.lm.gpu_record import describe, no_record_note, records

    out, summary = rehearsal
    assert records(tmp_path) == []
    assert "No GPU run has been recorded" in no_record_note(tmp_path)
    shutil.copytree(out, tmp_path / "2026-12-03_cpu", ignore=shutil.ignore_patterns("work"))
    (record,) = records(tmp_path)
    assert record.commit == summary["commit"] and record.machine == summary["machine"]
    assert set(record.stages["status"]) == {"done"} and record.stages["problems"].sum() == 0
    text = describe(record)
    assert f"commit {summary['commit'][:12]}" in text and "cpu bf16" in text and "shrunk for a CPU rehearsal" in text
    assert "forward passes off the requested device or precision: 0" in text
    assert text.count("tokens/s") == len(record.throughput[record.throughput["kind"] != "matmul"])
    assert set(record.metrics["pipeline"]) >= {"K-A", "A-K"}


def test_the_committed_h200_record_reads_back_with_every_forward_pass_where_it_was_asked():
    from alignkd.lm.gpu_record import describe, records

    (record,) = records()
    assert record.summary["device"] == "cuda" and record.summary["precision"] == "bf16" and not record.summary["tiny"]
    assert "NVIDIA H200" in record.machine and len(record.commit) == 40
    assert record.summary["placement_problems"] == {} and record.stages["problems"].sum() == 0
    assert set(record.stages["status"]) <= {"done", "skipped"}  # nothing failed or was cut off
    text = describe(record)
    assert "forward passes off the requested device or precision: 0" in text and "Not done" in text
    assert "2026-12-04_h200" in (REPO / "book" / "reproduce.md").read_text()
    assert "gpu_record.describe" in (REPO / "notebooks" / "06_llm.md").read_text()
    assert sum(f.stat().st_size for f in record.path.iterdir()) < 1_000_000  # runs/gpu/README.md: at most 1 MB


@pytest.mark.skipif(not os.environ.get("ALIGNKD_TRANSFORMERS_5_17"),
                    reason="set ALIGNKD_TRANSFORMERS_5_17 to a folder with transformers 5.17 (.ci/run makes one)")
def test_the_rehearsal_runs_under_the_gpu_machines_transformers_5_17(rehearsal, tmp_path):
    """The GPU machine has transformers 5.17, the lock 5.23: the whole run, on the bundle's tokenizer, under 5.17."""
    out, _ = rehearsal
    tokenizer = json.loads((out / "summary.json").read_text())["p_star"]["tokenizer"]
    summary = rehearse(tmp_path / "r517", 150, Path(tokenizer) if Path(tokenizer).is_dir() else None,
                       pythonpath=os.environ["ALIGNKD_TRANSFORMERS_5_17"])
    assert json.loads((tmp_path / "r517" / "env.json").read_text())["transformers"] == "5.17.0"
    assert summary["stages_by_status"]["done"] == len(summary["stages"]) and summary["placement_problems"] == {}
