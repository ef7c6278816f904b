"""Chapter 06's cost model: hand-counted FLOPs and tokens, the knobs that drive them, the GPU profiles' budgets,
the `check` command's table, and the predictions the book and the profile files state."""

import json
import re
from pathlib import Path

import pytest
import torch

from alignkd.cli import main
from alignkd.chapters import ch06_cost as cost
from alignkd.chapters import profile_values
from alignkd.lm.students import count_parameters, make_student

ROOT = Path(__file__).resolve().parents[1]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
TOY = cost.ModelShape("toy", n_params=1000, n_layers=2, hidden=8, intermediate=16, heads=2, vocab=10)


def _params(profile, **overrides):
    return {**profile_values("06_llm", profile), **overrides}


def _stage(table, section, stage, column):
    return float(table.loc[(table["section"] == section) & (table["stage"] == stage), column].sum())


def _works(params, **where):
    return [w for w in cost.chapter_work(params) if all(getattr(w, k) == v for k, v in where.items())]


@pytest.fixture(scope="module")
def summary():
    return cost.profiles_summary()


# --------------------------------------------------------------------------- hand counts


def test_a_training_pass_costs_six_n_per_trained_position_and_its_calls_are_its_optimiser_steps():
    work = cost.Work("s", "KD training", TOY, "train", sequences=10, length=5, batch=4, epochs=2.0)
    assert work.tokens == 10 * 5 * 2
    assert work.flops == 6 * 1000 * 100
    assert work.calls == 3 * 2  # ceil(10 / 4) batches per epoch
    sample = cost.Work("s", "KD data", TOY, "sample", sequences=10, length=5, batch=4)
    assert (sample.tokens, sample.flops, sample.calls) == (50, 2 * 1000 * 50, 3 * 5)


def test_a_machine_that_only_does_matmuls_takes_flops_over_its_rate():
    seconds = dict.fromkeys(cost.FEATURES, 0.0) | {"matmul_flops": 1 / 1e9}
    machine = cost.Machine("flops only", seconds, overlap=False)
    work = cost.Work("s", "KD training", TOY, "train", sequences=10, length=5, batch=10, epochs=2.0)
    assert machine.work_seconds(work) == pytest.approx(work.flops / 1e9)
    assert cost.Machine("8 devices", seconds, overlap=False, kd_devices=8).work_seconds(work) == pytest.approx(
        work.flops / 1e9 / 8)


def test_latency_and_compute_add_on_a_cpu_and_overlap_on_a_gpu():
    seconds = dict.fromkeys(cost.FEATURES, 0.0) | {"decode_flops": 1e-9, "layer_passes": 1e-3, "calls": 2e-3}
    features = cost.call_features(TOY, "sample", rows=4, length=5)
    compute, latency = features["decode_flops"] * 1e-9, 2 * 1e-3 + 2e-3
    cpu, gpu = cost.Machine("cpu", seconds, overlap=False), cost.Machine("gpu", seconds, overlap=True)
    assert cpu.call_seconds(TOY, "sample", 4, 5) == pytest.approx(compute + latency)
    assert gpu.call_seconds(TOY, "sample", 4, 5) == pytest.approx(latency)


def test_model_shapes_are_the_students_and_the_released_smollm2_configs():
    with torch.device("meta"):
        ten = count_parameters(make_student("10m", 49152, bos_id=1, eos_id=2, pad_id=2))
    assert cost.student_shape("10m", 49152).n_params == ten
    big = cost.ground_truth_shape("hf:HuggingFaceTB/SmolLM2-1.7B", 0, 0)
    assert (big.n_layers, big.hidden, big.vocab) == (24, 2048, 49152)
    assert 1.70e9 < big.n_params < 1.72e9  # the model card's 1.7B: 24 × 67.1 M layers + 100.7 M tied embedding
    gguf = cost.ground_truth_shape("gguf:smollm2", 0, 0)
    assert gguf.n_params == cost.student_shape("smollm2-135m", 49152).n_params
    with pytest.raises(ValueError, match="cost model knows"):
        cost.ground_truth_shape("hf:someone/unknown", 0, 0)


def test_the_first_student_trains_six_n_on_its_data_exactly_without_early_stopping():
    params = _params("quick", kd_patience=0)  # quick: tiny p', 1000 sequences of 10 tokens, 200 held out, 6 epochs
    first = _works(params, stage="KD training", kind="train")[0]
    n = cost.student_shape("tiny", params["vocab_size"]).n_params
    assert first.tokens == (1000 - 200) * (10 + 1) * 6
    assert first.flops == 6 * n * first.tokens


def test_every_alignment_iteration_samples_one_batch_and_the_last_only_evaluates():
    params = profile_values("06_llm", "gpu-smoke")
    table = cost.chapter_cost(params)
    runs = len(params["algorithms"]) * len(params["seeds"]) * 2  # K-A and A-K
    expected = runs * (params["iterations"] + 1) * params["batch_size"] * params["max_new_tokens"]
    assert _stage(table, "pipelines", "alignment", "sampled_tokens") == expected


# --------------------------------------------------------------------------- the knobs


def test_doubling_the_kd_data_doubles_the_sampling_of_the_references():
    params = profile_values("06_llm", "gpu")  # a real LM: no topic pruning, so sampled = n × max_new_tokens
    base = cost.chapter_cost(params)
    doubled = cost.chapter_cost({**params, "n_high": 2 * params["n_high"]})
    p_star = params["n_high"] * params["max_new_tokens"]
    assert (_stage(doubled, "references", "KD data", "sampled_tokens")
            - _stage(base, "references", "KD data", "sampled_tokens")) == p_star
    both = cost.chapter_cost({**params, "n_high": 2 * params["n_high"], "n_low": 2 * params["n_low"]})
    assert _stage(both, "references", "KD data", "sampled_tokens") == 2 * _stage(base, "references", "KD data",
                                                                                 "sampled_tokens")


def test_more_seeds_temperatures_and_iterations_cost_more_and_shared_models_are_counted_once():
    params = profile_values("06_llm", "gpu-smoke")
    base = cost.chapter_cost(params)
    seeds = cost.chapter_cost({**params, "seeds": params["seeds"] + [7]})
    n = len(params["seeds"])
    assert _stage(seeds, "pipelines", "alignment", "flops") == pytest.approx(
        (n + 1) / n * _stage(base, "pipelines", "alignment", "flops"))
    assert _stage(seeds, "references", "KD training", "flops") == _stage(base, "references", "KD training", "flops")
    taus = cost.chapter_cost({**params, "final_taus": [0.95, 0.925], "tau_sweep_algorithms": ["ppo"]})
    finals = len(params["algorithms"]) * len(params["seeds"])
    assert _stage(taus, "pipelines", "KD data", "sampled_tokens") == pytest.approx(
        (finals + len(params["seeds"])) / finals * _stage(base, "pipelines", "KD data", "sampled_tokens"))
    longer = cost.chapter_cost({**params, "iterations": 2 * params["iterations"]})
    assert _stage(longer, "pipelines", "alignment", "h200_minutes") > 1.9 * _stage(base, "pipelines", "alignment",
                                                                                     "h200_minutes")


def test_the_synthetic_language_counts_its_2x2_its_budget_dose_and_its_coverage_sweep():
    params = profile_values("06_llm", "default")
    table = cost.chapter_cost(params)
    assert {"budget dose", "capacity 2 × 2", "coverage sweep", "SmolLM2 section"} <= set(table["section"])
    off = cost.chapter_cost({**params, "capacity_algorithms": [], "coverage_section": False, "smollm2_section": False,
                             "budget_section": False})
    assert set(off["section"]) == {"references", "pipelines", "total"}
    # the dose aligns once per seed and pipeline for the largest budget: its sampled tokens scale with it
    longer = cost.chapter_cost({**params, "budgets": [*params["budgets"][:-1], 2 * params["budgets"][-1]]})
    sampled = lambda t: _stage(t, "budget dose", "alignment", "sampled_tokens")  # noqa: E731
    runs = len(params["budget_algorithms"]) * len(params["seeds"]) * 2  # the dose runs its own algorithms
    assert set(params["budget_algorithms"]) < set(params["algorithms"])
    assert sampled(table) == runs * (params["budgets"][-1] + 1) * params["batch_size"] * params["max_new_tokens"]
    assert sampled(longer) == runs * (2 * params["budgets"][-1] + 1) * params["batch_size"] * params["max_new_tokens"]
    # a real LM has no topics: neither study runs, whatever the profile asks (the notebook skips them too)
    assert set(cost.chapter_cost(profile_values("06_llm", "gpu"))["section"]) == {"references", "pipelines", "total"}


# --------------------------------------------------------------------------- machines


def test_the_cpu_model_reproduces_its_measurements_as_the_book_says():
    machine = cost.cpu_machine()
    ratios = torch.tensor([cost.measurement_seconds(machine, m) / m.seconds_per_call
                           for m in cost.CPU_MEASUREMENTS if m.model != "markov_mixture"], dtype=torch.float64)
    error = float(ratios.log().abs().mean().exp()) - 1  # mean relative error, symmetric in over- and under-shoot
    assert error < 0.3 and float(ratios.min()) > 0.5 and float(ratios.max()) < 2.0  # the machine was shared: noisy
    page = (ROOT / "book" / "reproduce.md").read_text()
    assert f"reproduces its {len(ratios)} measurements within {error:.0%} on average" in page.replace(" %", "%")


def test_a_small_model_decodes_at_the_gpus_launch_latency_and_a_big_one_at_its_flop_rate():
    h200 = cost.machines(records=[])["h200"]
    small = cost.student_shape("10m", 49152)
    latency = small.n_layers * cost.ASSUMED_LAYER_SECONDS + cost.ASSUMED_CALL_SECONDS
    assert h200.call_seconds(small, "sample", 64, 64) == pytest.approx(latency)
    big = cost.ground_truth_shape("hf:HuggingFaceTB/SmolLM2-1.7B", 0, 0)
    flop_time = 2 * big.n_params * 4096 / (cost.ASSUMED_DECODE_EFFICIENCY * cost.H200_MATMUL_MEASURED)
    assert h200.call_seconds(big, "sample", 4096, 64) >= flop_time > big.n_layers * cost.ASSUMED_LAYER_SECONDS


def test_a_recorded_gpu_run_replaces_the_assumptions_of_its_gpu(tmp_path):
    record = {"device": "NVIDIA H200", "date": "2027-01-05", "commit": "abc1234",
              "throughput": {"10m": {"sample_tokens_per_s": 6400.0, "sample_batch": 64, "mfu": 0.2}}}
    (tmp_path / "h200.json").write_text(json.dumps(record))
    found = cost.machines(records=cost.gpu_records(tmp_path))
    # an H200's record stands for the H100s too (same die, same host-bound software) until they have their own
    assert "h200.json" in found["h200"].source and "h200.json" in found["h100x8"].source
    small = cost.student_shape("10m", 49152)
    assert found["h200"].call_seconds(small, "sample", 64, 8) == pytest.approx(64 / 6400.0)
    assert found["h200"].matmul_rate["10m"] == pytest.approx(0.2 * cost.H100_BF16_PEAK_SPEC)
    bad = {"device": "H200", "throughput": {"10m": {"sample_tokens_per_s": 1}}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="together or neither"):
        cost.gpu_records(tmp_path)


def test_a_gpu_smoke_run_folder_is_a_record_with_a_step_time_per_batch(tmp_path):
    import pandas as pd

    run = tmp_path / "2027-01-05_h200"
    run.mkdir()
    env = {"requested_device": "cuda", "tiny": False, "device_name": "NVIDIA H200",
           "started": "2027-01-05T10:00:00+00:00", "commit": "abc1234"}
    (run / "env.json").write_text(json.dumps(env))
    (run / "summary.json").write_text(json.dumps({"stages": []}))
    rows = [("matmul", "8192x8192x8192", 1, 0, float("nan"), 700.0), ("train", "30m", 16, 512, 819200.0, 150.0),
            ("sample", "30m", 64, 128, 32000.0, 2.0), ("sample", "30m", 512, 128, 128000.0, 8.0)]
    pd.DataFrame(rows, columns=["kind", "size", "batch", "tokens_per_row", "tokens_per_s", "tflops"]).to_csv(
        run / "throughput.csv", index=False)
    h200 = cost.machines(records=cost.gpu_records(tmp_path))["h200"]
    shape = cost.student_shape("30m", 49152)
    assert h200.call_seconds(shape, "sample", 64, 32) == pytest.approx(64 / 32000)  # a decode step at batch 64
    assert h200.call_seconds(shape, "sample", 1024, 32) >= 512 / 128000  # never faster than the measured 512
    assert h200.call_seconds(shape, "sample", 8, 32) == pytest.approx(64 / 32000)  # a launch-bound step keeps its floor
    step = 16 * 512 / 819200
    assert h200.call_seconds(shape, "train", 4, 512) >= step / 4 - 1e-12  # a smaller training step: ∝ its positions
    assert h200.call_seconds(shape, "train", 4, 512) < step
    assert h200.call_seconds(shape, "train", 16, 512) >= 16 * 512 / 819200
    assert h200.matmul_rate["30m"] == pytest.approx(150e12)
    assert h200.seconds["decode_flops"] == pytest.approx(1 / (cost.ASSUMED_DECODE_EFFICIENCY * 700e12))
    (run / "env.json").write_text(json.dumps({**env, "requested_device": "cpu", "tiny": True}))  # a rehearsal
    assert cost.gpu_records(tmp_path) == []


# --------------------------------------------------------------------------- the profiles' budgets


def test_the_model_predicts_the_recorded_h200_runs_own_stages_within_2x():
    from alignkd.lm.gpu_record import records

    (record,) = [r for r in records() if "H200" in r.machine]
    table = cost.against_record(record)
    assert {"references", "ppo", "dpo_online"} <= set(table["group"])
    assert table["ratio"].between(0.5, 2.0).all(), table
    page = (ROOT / "book" / "reproduce.md").read_text()
    assert cost.markdown_against_record(table) in page, (
        "book/reproduce.md's table of the model against the record is stale: "
        "run `python -m alignkd.chapters.ch06_cost`")


def test_gpu_smoke_fits_its_prepared_runs_budget_by_the_recorded_stage_times():
    """The prepared run (runs/gpu/README.md: `--budget 540`) must reach every algorithm of `gpu-smoke`, estimated
    from the recorded run's own stage seconds per seed: an algorithm that finished costs what it took; one that
    finished only K-A, its K-A times the largest (whole pipeline / K-A) of those that finished; one never reached,
    the slowest finished one. The stages before p* (throughput, imports) cost what they took then."""
    from alignkd.lm.gpu_record import records

    budget = 540
    assert f"--budget {budget} " in (ROOT / "runs" / "gpu" / "README.md").read_text()
    (record,) = [r for r in records() if "H200" in r.machine]
    stages = record.stages.set_index("stage")
    recorded = record.summary["params"]
    n_recorded = len(recorded["seeds"])

    def seconds(label, parts=("K-A", "A-K", "evaluation")):
        rows = stages.loc[[f"{label}: {part}" for part in parts]]
        return rows["seconds"].sum() / n_recorded if (rows["status"] == "done").all() else None

    whole = {label: seconds(label) for label in recorded["algorithms"] if seconds(label) is not None}
    per_ka = max(whole[label] / seconds(label, ("K-A",)) for label in whole)
    per_seed = {label: whole.get(label) or (seconds(label, ("K-A",)) or max(whole.values()) / per_ka) * per_ka
                for label in recorded["algorithms"]}
    params = profile_values("06_llm", "gpu-smoke")
    before = stages.loc[:"p*", "seconds"].sum() + 16  # the imports: 16 s before `env` in the record's log
    estimate = before + stages.loc["references", "seconds"] + sum(
        per_seed[label] * len(params["seeds"]) for label in params["algorithms"])
    assert estimate <= 0.95 * budget, estimate


def test_the_paper_profile_is_gpu_days(summary):
    minutes = summary.set_index("profile")["h200_minutes"]
    assert minutes["paper"] > 100 * 60


def test_each_gpu_profile_file_starts_with_its_prediction():
    for profile in ("gpu-smoke", "gpu", "paper"):
        first = (ROOT / "params" / f"{profile}.yaml").read_text().splitlines()[0]
        assert first == cost.prediction_comment(profile), (
            f"params/{profile}.yaml's first line is stale: run `python -m alignkd.chapters.ch06_cost` and paste its comment")


def test_the_reproduce_page_shows_the_models_table(summary):
    page = (ROOT / "book" / "reproduce.md").read_text()
    assert cost.markdown_summary(summary) in page, (
        "book/reproduce.md's cost table is stale: run `python -m alignkd.chapters.ch06_cost` and paste its table")
    assert "2026-12-04_h200" in page and "python -m alignkd check --profile" in page


# --------------------------------------------------------------------------- the check command


def test_check_prints_the_cost_table_for_a_profile_this_machine_runs(capsys):
    assert main(["check", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert "can run on this machine" in out and "predicted cost" in out
    total = re.search(r"^total\s.*$", out, re.MULTILINE).group(0)
    assert cost._si(cost.profile_cost("quick").iloc[-1]["flops"]) in total


@NO_GPU
def test_check_prints_the_gpu_profiles_cost_and_refuses_it_here(capsys):
    assert main(["check", "--profile", "gpu"]) == 2
    captured = capsys.readouterr()
    assert "profile 'gpu': predicted cost" in captured.out and "1 × H200" in captured.out
    assert "device = 'cuda' needs a CUDA GPU" in captured.err


def test_every_lm_algorithm_has_a_cost_row_and_each_adds_alignment_work():
    from alignkd.lm.algorithms import ALGORITHMS
    from alignkd.chapters import profile_values

    base = {**profile_values("06_llm", "quick"), "capacity_algorithms": [], "coverage_section": False,
            "tau_sweep_algorithms": []}

    def alignment_flops(names):
        table = cost.chapter_cost({**base, "algorithms": list(names)})
        return float(table[(table["stage"] == "alignment") & (table["section"] == "pipelines")]["flops"].sum())

    alone = {name: alignment_flops([name]) for name in ALGORITHMS}
    assert all(value > 0 for value in alone.values())
    assert alignment_flops(list(ALGORITHMS)) == pytest.approx(sum(alone.values()))


def test_every_algorithm_says_what_its_update_computes():
    """The cost model has no per-algorithm table: each registered config's `update_passes` says it, and a config
    that does not is refused by name (a new algorithm is not silently costed as another)."""
    import dataclasses

    from alignkd.lm.algorithms import ALGORITHMS
    from alignkd.lm.training import RunConfig

    for name, entry in ALGORITHMS.items():
        passes = entry.config(n_iterations=10, batch_size=32, eval_every=5, device="cpu").update_passes()
        assert passes and all(p.kind in ("score", "train") and p.sequences > 0 for p in passes), name
    bare = dataclasses.make_dataclass("BareConfig", [("n_iterations", int, 1)], bases=(RunConfig,))
    with pytest.raises(NotImplementedError, match="BareConfig"):
        bare(device="cpu").update_passes()
