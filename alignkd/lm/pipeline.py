"""Pipelines K-A and A-K on a language ground truth (paper §4.2, App. C–D), one code path at every scale.

    p*        ground truth (`markov_mixture`, `hf:<id or path>`, `gguf:smollm2`)
    p'        high-recall student: KD from p* at τ = 1.0 (paper: SmolLM2-360M from scratch)
    p''       low-recall student: KD from p' at τ = 0.95 (+ τ_topic on the synthetic language; 135M)
    p_target  the reward oracle's model: under markov_mixture the rare topic's exact chain; otherwise
              KD from p' at τ = 0.8 (paper: 135M)
    K-A       align p'' against the fixed reference p''                      -> p''_KA
    A-K       align p' against the fixed reference p' -> p'_AK, then KD it with p'''s settings -> p''_AK
              (the final KD temperature can be swept: App. D)

Reference models (p', p'', p_target) are trained once; the seeds are those of alignment and of
A-K's final KD, as three alignment seeds are what the paper averages (App. C.1). Every model,
dataset and table is cached in a `ResultStore` under a hash of everything that produced it, so a
re-run is free and a changed parameter recomputes only what depends on it; KD data generation
resumes from its shards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..cache import ResultStore, crash_point
from .algorithms import find_algorithm
from .generation import Samples
from .groundtruth import LanguageModel, MarkovMixture, MarkovMixtureConfig, load_ground_truth
from .kd import KDDataConfig, TrainConfig, generate_dataset, load_dataset, train_student
from .metrics import MetricConfig, evaluate



@dataclass(frozen=True)
class StageConfig:
    """One KD stage: how the teacher is sampled and how the student is trained."""

    data: KDDataConfig = KDDataConfig()
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class LLMConfig:
    """Everything that defines the reference models, the oracle and the metrics of one experiment."""

    ground_truth: str = "markov_mixture"
    """`markov_mixture`, `hf:<model id or local path>` or `gguf:smollm2`."""
    markov: MarkovMixtureConfig = MarkovMixtureConfig()
    """The synthetic language (ignored for other ground truths)."""
    prompt: str = "The"
    """Prompt of every sample for real LMs (paper: "The"); the synthetic language starts from <bos>."""
    high_recall: StageConfig = StageConfig(KDDataConfig(tau=1.0), TrainConfig(size="small"))
    """p' from p* (App. C.2: τ = 1.0, SmolLM2-360M)."""
    low_recall: StageConfig = StageConfig(KDDataConfig(tau=0.95, tau_topic=0.7), TrainConfig(size="tiny"))
    """p'' from p' (τ = 0.95, SmolLM2-135M); also the settings of A-K's final KD."""
    target: StageConfig = StageConfig(KDDataConfig(tau=0.8), TrainConfig(size="tiny"))
    """p_target from p' (τ = 0.8) for real LMs; unused under markov_mixture (the exact rare topic)."""
    final_taus: tuple[float, ...] = (0.95,)
    """Token temperatures of A-K's final KD (App. D sweeps 0.925 / 0.975); the first is the main one."""
    n_fold_samples: int = 2000
    """p_target samples that set the folding threshold τ_f (90th percentile of R_base, App. C.3)."""
    n_recall_samples: int = 2000
    """p* samples on which every model's recall is measured."""
    metrics: MetricConfig = MetricConfig()
    device: str = "cpu"
    """Where ground-truth sampling and scoring run (`cpu`, `cuda`)."""

    def __post_init__(self):
        if not (self.ground_truth == "markov_mixture" or self.ground_truth.startswith("hf:")
                or self.ground_truth == "gguf:smollm2"):
            raise ValueError(f"LLMConfig.ground_truth = '{self.ground_truth}' (allowed: markov_mixture, "
                             f"hf:<model id or path>, gguf:smollm2)")
        if not self.final_taus or any(t <= 0 for t in self.final_taus):
            raise ValueError(f"LLMConfig.final_taus = {self.final_taus}: a non-empty list of temperatures > 0")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"LLMConfig.device = '{self.device}' (allowed: cpu, cuda)")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("LLMConfig.device = 'cuda' but no GPU is visible (use the quick/default profiles on CPU)")
        if self.ground_truth != "markov_mixture":
            for stage in (self.high_recall, self.low_recall):
                if stage.data.tau_topic != 1.0:
                    raise ValueError(f"tau_topic = {stage.data.tau_topic}: topic sharpening needs the markov_mixture "
                                     f"ground truth (real LMs have no topic labels); set tau_topic = 1")

    @property
    def exact(self) -> bool:
        return self.ground_truth == "markov_mixture"


def alignment_config(algorithm: str, **overrides):
    """The config dataclass of an alignment algorithm (`alignkd.lm.algorithms.ALGORITHMS`) with overrides."""
    entry = find_algorithm(algorithm)
    names = {f.name for f in dataclasses.fields(entry.config_class)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{entry.config_class.__name__} has no field(s) {unknown} (fields: {', '.join(sorted(names))})")
    return entry.config(**overrides)


# --------------------------------------------------------------------------- the experiment


@dataclass
class Setup:
    """The ground truth, the oracle and the two reference models, with their cache keys."""

    config: LLMConfig
    store: ResultStore
    p_star: LanguageModel
    p_target: LanguageModel
    oracle: Any
    recall_samples: Samples
    models: dict[str, LanguageModel] = field(default_factory=dict)  # "p'", "p''" (and "p_target")
    keys: dict[str, Any] = field(default_factory=dict)
    target_topic: int | None = None

    def evaluate(self, q: LanguageModel) -> dict[str, float]:
        return evaluate(q, p_star=self.p_star, p_target=self.p_target, recall_samples=self.recall_samples,
                        config=self.config.metrics, oracle=self.oracle, target_topic=self.target_topic)


def _ground_truth(config: LLMConfig) -> LanguageModel:
    if config.ground_truth == "markov_mixture":
        return MarkovMixture.from_config(config.markov)
    options = {"prompt": config.prompt}
    if config.ground_truth.startswith("hf:"):
        options["device"] = config.device
    return load_ground_truth(config.ground_truth, **options)


def _load_student(folder: Path, like: LanguageModel) -> LanguageModel:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(folder)
    model.eval()
    return like.wrap(model)


def distil(store: ResultStore, teacher: LanguageModel, teacher_key: Any, stage: StageConfig, *, p_star: LanguageModel,
           name: str, progress: bool = True) -> tuple[LanguageModel, dict]:
    """KD: sample `teacher` (sharded, resumable, cached), train a student from scratch (cached)."""
    classify = None
    if stage.data.tau_topic < 1:
        if not isinstance(p_star, MarkovMixture):
            raise ValueError("tau_topic < 1 needs the markov_mixture ground truth")
        classify = lambda s: p_star.topic_posterior(s).argmax(1)  # noqa: E731
    data_key = {"teacher": teacher_key, "data": stage.data}
    folder = store.directory("lm_kd_data", data_key,
                             lambda tmp: generate_dataset(teacher, stage.data, tmp, classify=classify, progress=progress),
                             resumable=True)
    student_key = {"data": data_key, "train": stage.train, "vocab": p_star.vocab_size}

    def build(tmp: Path) -> None:
        data = load_dataset(folder, p_star.pad_id, limit=stage.data.n_samples)
        bos = p_star.tokenizer.bos_token_id if p_star.tokenizer.bos_token_id is not None else p_star.prompt_ids[0]
        model, log = train_student(data, stage.train, vocab_size=p_star.vocab_size, bos_id=bos,
                                   eos_id=p_star.eos_id, pad_id=p_star.pad_id, progress=progress)
        model.save_pretrained(tmp / "model")  # not at the top: the store writes its own config.json there
        log.to_parquet(tmp / "train_log.parquet")

    model_dir = store.directory("lm_student", student_key, build)
    return _load_student(model_dir / "model", p_star), {"stage": name, **student_key}


def prepare(config: LLMConfig, store: ResultStore, *, progress: bool = True) -> Setup:
    """Ground truth, p', p'', p_target and the oracle (all cached)."""
    from .reward import RewardOracle

    p_star = _ground_truth(config)
    gt_key = {"ground_truth": config.ground_truth, "markov": config.markov if config.exact else None,
              "prompt": None if config.exact else config.prompt}
    high, high_key = distil(store, p_star, gt_key, config.high_recall, p_star=p_star, name="p'", progress=progress)
    low, low_key = distil(store, high, high_key, config.low_recall, p_star=p_star, name="p''", progress=progress)
    target_topic = None
    if config.exact:
        target_topic = config.markov.target_topic % config.markov.n_topics
        p_target = p_star.restrict([target_topic])
        target_key = {"exact_topic": target_topic, **gt_key}
    else:
        p_target, target_key = distil(store, high, high_key, config.target, p_star=p_star, name="p_target",
                                      progress=progress)
    cap = config.metrics.max_new_tokens
    fold_samples = p_target.sample(config.n_fold_samples, cap, 1.0, seed=config.metrics.seed + 1)
    oracle = RewardOracle.from_language_model(p_target, fold_samples)
    recall_samples = p_star.sample(config.n_recall_samples, cap, 1.0, seed=config.metrics.seed + 2)
    setup = Setup(config, store, p_star, p_target, oracle, recall_samples, {"p'": high, "p''": low},
                  {"p'": high_key, "p''": low_key, "p_target": target_key}, target_topic)
    if not config.exact:
        setup.models["p_target"] = p_target
    return setup


def align(setup: Setup, reference_name: str, algorithm: str, algorithm_config, seed: int, *,
          progress: bool = True) -> tuple[LanguageModel, pd.DataFrame, int, dict]:
    """Align a copy of a reference model (fixed reference) and keep the App. C.4-selected checkpoint (cached)."""
    import copy

    entry = find_algorithm(algorithm)
    entry.check_config(algorithm_config)
    reference = setup.models[reference_name]
    key = {"reference": setup.keys[reference_name], "algorithm": algorithm, "config": algorithm_config,
           "seed": seed, "oracle": {"target": setup.keys["p_target"], "fold_threshold": setup.oracle.fold_threshold}}

    def build(tmp: Path) -> None:
        policy = copy.deepcopy(reference.model)
        frozen = copy.deepcopy(reference.model)
        checkpoints = tmp / "checkpoints"
        checkpoints.mkdir()

        def on_eval(step: int, model) -> Path:
            path = checkpoints / f"step_{step:06d}.pt"
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
            crash_point("align:checkpoint")
            return path

        run = entry.train(policy, frozen, setup.oracle, algorithm_config, prompt_ids=reference.prompt_ids, seed=seed,
                          progress=progress, on_eval=on_eval, tokenizer=reference.tokenizer)
        policy.load_state_dict(torch.load(run.checkpoints[run.selected_step], weights_only=True))
        policy.cpu().float().save_pretrained(tmp / "selected")
        trajectory = run.trajectory.copy()
        trajectory["selected_step"] = run.selected_step
        trajectory.to_parquet(tmp / "trajectory.parquet")
        for path in checkpoints.iterdir():  # only the selected model is kept
            path.unlink()
        checkpoints.rmdir()

    folder = setup.store.directory("lm_aligned", key, build)
    trajectory = pd.read_parquet(folder / "trajectory.parquet")
    return (_load_student(folder / "selected", setup.p_star), trajectory, int(trajectory["selected_step"].iloc[0]),
            key)


def run_pipelines(setup: Setup, algorithm: str, algorithm_config, seeds: list[int], *, label: str | None = None,
                  final_taus: Sequence[float] | None = None, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """K-A and A-K for one algorithm and several seeds: (metrics table, selection trajectories).

    A-K's final KD runs once per temperature in `final_taus` (default: the config's); App. D sweeps
    it for PPO and DPO only, so a chapter can pass a shorter list for the other algorithms.

    Metrics rows: algorithm, seed (−1 for the shared reference models), pipeline (K-A, A-K, or
    `reference` for p*, p', p'', p_target),
    model (p*, p', p'', p_target, p''_KA, p'_AK, p''_AK), final_tau (A-K's last KD), and the metrics.
    """
    config, store = setup.config, setup.store
    if final_taus is not None:  # replace() re-runs LLMConfig's checks on the override
        config = dataclasses.replace(config, final_taus=tuple(final_taus))
    final_taus = config.final_taus
    key = {"setup": setup.keys, "algorithm": algorithm, "label": label, "config": algorithm_config, "seeds": list(seeds),
           "final_taus": list(final_taus), "metrics": config.metrics, "n_recall": config.n_recall_samples,
           "gt": config.ground_truth, "markov": config.markov if config.exact else None}
    trajectories: list[pd.DataFrame] = []

    def compute() -> pd.DataFrame:
        rows = []
        references = {"p*": setup.p_star, "p'": setup.models["p'"], "p''": setup.models["p''"],
                      "p_target": setup.p_target}
        for name, model in references.items():  # shared by all seeds: one row, seed = -1
            rows.append({"seed": -1, "pipeline": "reference", "model": name, "final_tau": float("nan"),
                         **setup.evaluate(model)})
        for seed in tqdm(seeds, desc=f"{algorithm} seeds", disable=not progress):
            ka, traj_ka, _, _ = align(setup, "p''", algorithm, algorithm_config, seed, progress=progress)
            rows.append({"seed": seed, "pipeline": "K-A", "model": "p''_KA", "final_tau": float("nan"), **setup.evaluate(ka)})
            ak, traj_ak, _, ak_key = align(setup, "p'", algorithm, algorithm_config, seed, progress=progress)
            rows.append({"seed": seed, "pipeline": "A-K", "model": "p'_AK", "final_tau": float("nan"), **setup.evaluate(ak)})
            for tau in final_taus:
                stage = StageConfig(dataclasses.replace(config.low_recall.data, tau=tau, seed=seed),
                                    dataclasses.replace(config.low_recall.train, seed=seed))
                final, _ = distil(store, ak, ak_key, stage, p_star=setup.p_star, name="p''_AK", progress=progress)
                rows.append({"seed": seed, "pipeline": "A-K", "model": "p''_AK", "final_tau": tau, **setup.evaluate(final)})
        frame = pd.DataFrame(rows)
        frame.insert(0, "algorithm", label or algorithm)
        return frame

    metrics = store.frame("lm_pipeline_metrics", key, compute)
    for seed in seeds:  # cached: reading them back is free
        for pipeline, reference in (("K-A", "p''"), ("A-K", "p'")):
            _, trajectory, selected, _ = align(setup, reference, algorithm, algorithm_config, seed, progress=False)
            trajectories.append(trajectory.assign(algorithm=label or algorithm, seed=seed, pipeline=pipeline))
    return metrics, pd.concat(trajectories, ignore_index=True)


def summarise(metrics: pd.DataFrame, columns=("reward", "target_precision", "precision", "recall")) -> pd.DataFrame:
    """Mean ± std over seeds per (algorithm, pipeline, model, final_tau)."""
    keys = ["algorithm", "pipeline", "model", "final_tau"]
    present = [c for c in (*columns, "target_mass") if c in metrics.columns]
    grouped = metrics.fillna({"final_tau": -1.0}).groupby(keys, sort=False)[present]
    table = grouped.agg(["mean", "std"]).reset_index()
    table["final_tau"] = table["final_tau"].replace(-1.0, float("nan"))
    return table


def final_tau_effects(metrics: pd.DataFrame, main_tau: float) -> pd.DataFrame:
    """App. D from a `run_pipelines` table: how A-K's final model moves when its last KD runs at another τ.

    One row per (algorithm, final_tau ≠ main_tau): the change in mean precision and recall against
    `main_tau` (means over seeds), the seed std of both at that τ, and `paper_direction`, true where the
    change is the trade App. D reports (a lower τ gains precision and loses recall; a higher τ the reverse).
    """
    finals = metrics[metrics["model"] == "p''_AK"]
    rows = []
    for algorithm, part in finals.groupby("algorithm", sort=False):
        base = part[part["final_tau"] == main_tau]
        for tau, at in part[part["final_tau"] != main_tau].groupby("final_tau", sort=False):
            d_precision = at["precision"].mean() - base["precision"].mean()
            d_recall = at["recall"].mean() - base["recall"].mean()
            lower = tau < main_tau
            rows.append({"algorithm": algorithm, "final_tau": tau, "d_precision": d_precision, "d_recall": d_recall,
                         "precision_std": at["precision"].std(), "recall_std": at["recall"].std(),
                         "paper_direction": bool((d_precision > 0 and d_recall < 0) if lower
                                                 else (d_precision < 0 and d_recall > 0))})
    return pd.DataFrame(rows, columns=["algorithm", "final_tau", "d_precision", "d_recall", "precision_std",
                                       "recall_std", "paper_direction"])
