"""Pipelines K-A and A-K on a language ground truth (paper §4.2, App. C–D), every step cached.

    refs = cached_references(store, config)                       # References: p*, p', p'', p_target, oracle
    run = cached_align(store, refs, "p'", ppo_config, seed=0)     # Alignment: selected model and trajectory
    result = cached_run_pipelines(store, refs, ppo_config, [0, 1, 2], jobs=2)   # PipelineResult: metrics, trajectories
    both = cached_pipelines(store, refs, {"ppo": ppo_config, "dpo": dpo_config}, [0, 1, 2], jobs=2)  # side by side

    p*        ground truth (`markov_mixture`, `hf:<id or path>`, `gguf:smollm2`)
    p'        high-recall student: KD from p* at τ = 1.0 (paper: SmolLM2-360M from scratch)
    p''       low-recall student: KD from p' at τ = 0.95 (+ τ_topic on the synthetic language; 135M)
    p_target  the reward oracle's model: under markov_mixture the rare topic's exact chain; otherwise
              KD from p' at τ = 0.8 (paper: 135M)
    K-A       align p'' against the fixed reference p''                      -> p''_KA
    A-K       align p' against the fixed reference p' -> p'_AK, then KD it with p'''s settings -> p''_AK
              (the final KD temperature can be swept: App. D)

Reference models are trained once; the seeds are those of alignment and of A-K's final KD, as three
alignment seeds are what the paper averages (App. C.1).

Caching. Every model is named by its *recipe*: a frozen dataclass of the configs that made it, nesting
the recipe of the model it came from (`Student(KDData(GroundTruth(...), data), train)`), stored under
`config_hash(recipe)`. Two chapters that build the same model name the same folder, a re-run is free,
and a changed parameter recomputes only the models downstream of it. After an interruption KD data
generation resumes from the shards already saved (`resumable=True`); student training and alignment
cannot resume mid-run, so the store hands them an empty folder and they start again.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..cache import ResultStore, config_hash, crash_point
from .algorithms import algorithm_of
from .config import LLMConfig, StageConfig
from .generation import Samples
from .groundtruth import MarkovMixture, MarkovMixtureConfig, load_ground_truth
from .kd import KDDataConfig, TrainConfig, generate_dataset, load_dataset, train_student
from .metrics import COLUMNS_VERSION, evaluate
from .models import HFLanguageModel, LanguageModel
from .parallel import in_turn, in_workers, resolve_jobs
from .reward import RewardOracle

# --------------------------------------------------------------------------- recipes: what names a model


@dataclass(frozen=True)
class GroundTruth:
    """p*: the ground truth every lineage starts from."""

    ground_truth: str
    markov: MarkovMixtureConfig | None = None
    prompt: str | None = None

    @staticmethod
    def of(config: LLMConfig) -> "GroundTruth":
        if config.exact:
            return GroundTruth(config.ground_truth, markov=config.markov)
        return GroundTruth(config.ground_truth, prompt=config.prompt)


@dataclass(frozen=True)
class ExactTopic:
    """p_target under markov_mixture: one topic's exact chain."""

    ground_truth: GroundTruth
    topic: int


@dataclass(frozen=True)
class KDData:
    """A KD dataset: samples of `teacher` (a recipe)."""

    teacher: Any
    data: KDDataConfig


@dataclass(frozen=True)
class Student:
    """A student trained from scratch on a KD dataset."""

    data: KDData
    train: TrainConfig


@dataclass(frozen=True)
class Oracle:
    """The folded reward under `target`, its threshold τ_f set by that many of the target's samples."""

    target: Any
    n_fold_samples: int
    max_new_tokens: int
    seed: int


@dataclass(frozen=True)
class Aligned:
    """A copy of `reference` aligned against itself to `oracle`, at the App. C.4-selected checkpoint."""

    reference: Any
    algorithm: str
    config: Any
    seed: int
    oracle: Oracle


def distilled(teacher: Any, stage: StageConfig) -> Student:
    return Student(KDData(teacher, stage.data), stage.train)


def final_stage(config: LLMConfig, tau: float, seed: int) -> StageConfig:
    """A-K's last step: p'''s KD settings at token temperature `tau`, data and training seeded by `seed`."""
    low = config.low_recall
    return StageConfig(dataclasses.replace(low.data, tau=tau, seed=seed), dataclasses.replace(low.train, seed=seed))


# --------------------------------------------------------------------------- typed results


@dataclass(frozen=True)
class References:
    """The ground truth, the reference models, the oracle and the shared recall samples of one experiment.

    `models` and `recipes` are keyed "p*", "p'", "p''", "p_target"."""

    config: LLMConfig
    models: dict[str, LanguageModel]
    recipes: dict[str, Any]
    oracle: RewardOracle
    oracle_recipe: Oracle
    recall_samples: Samples
    target_topic: int | None

    @property
    def p_star(self) -> LanguageModel:
        return self.models["p*"]

    def evaluate(self, q: LanguageModel) -> dict[str, float]:
        """Every metric of `alignkd.lm.metrics` for model `q`."""
        return evaluate(q, p_star=self.p_star, p_target=self.models["p_target"], recall_samples=self.recall_samples,
                        config=self.config.metrics, oracle=self.oracle, target_topic=self.target_topic)


@dataclass(frozen=True)
class Alignment:
    """One cached alignment run: the selected model, where it is stored, and the run's trajectory
    (columns of `alignkd.lm.training`, plus `selected_step`)."""

    recipe: Aligned
    path: Path
    model: HFLanguageModel
    trajectory: pd.DataFrame

    @property
    def selected_step(self) -> int:
        return int(self.trajectory["selected_step"].iloc[0])


@dataclass(frozen=True)
class PipelineResult:
    """K-A and A-K for one algorithm and several seeds.

    metrics: one row per model — algorithm (the label), seed (−1 for the shared reference models),
        pipeline (K-A, A-K, or `reference` for p*, p', p'', p_target), model (p*, p', p'', p_target,
        p''_KA, p'_AK, p''_AK), final_tau (A-K's last KD), and the metrics of `alignkd.lm.metrics`.
    trajectories: every alignment's trajectory with algorithm, seed and pipeline columns.
    """

    metrics: pd.DataFrame
    trajectories: pd.DataFrame


@dataclass(frozen=True)
class Pipelines:
    """What a `PipelineResult` is cached under."""

    config: LLMConfig
    algorithm: str
    label: str
    alignment: Any
    seeds: tuple[int, ...]


# --------------------------------------------------------------------------- building blocks


def ground_truth(config: LLMConfig) -> LanguageModel:
    """p* of an experiment on the experiment's device and precision (not cached: the synthetic language is
    drawn in milliseconds, real LMs load from disk)."""
    if config.exact:
        return MarkovMixture.from_config(config.markov).to(config.placement)
    return load_ground_truth(config.ground_truth, prompt=config.prompt, placement=config.placement)


def load_model(folder: Path, like: LanguageModel) -> HFLanguageModel:
    """A saved student or aligned model, with `like`'s tokenizer, prompt, ids and placement."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(folder)
    model.eval()
    return like.wrap(model)


def save_model(model, folder: Path) -> None:
    """`save_pretrained` from a CPU copy of the weights: the only place a model of the testbed meets the CPU.
    Tied tensors (embedding and LM head) stay one tensor in the copy, so they are saved once, as on CPU."""
    copies: dict[int, torch.Tensor] = {}
    state = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        if key not in copies:
            copies[key] = tensor.detach().to("cpu")
        state[name] = copies[key]
    model.save_pretrained(folder, state_dict=state)


def cached_kd_data(store: ResultStore, recipe: KDData, teacher: LanguageModel, p_star: LanguageModel, *,
            progress: bool = True) -> Path:
    """The folder of a KD dataset (cached): `teacher` sampled into shards, resumable after a kill."""
    classify = None
    if recipe.data.tau_topic < 1:
        if not isinstance(p_star, MarkovMixture):
            raise ValueError("tau_topic < 1 needs the markov_mixture ground truth")
        classify = lambda s: p_star.topic_posterior(s).argmax(1).cpu()  # noqa: E731
    return store.directory("lm_kd_data", recipe, resumable=True,
                           build=lambda tmp: generate_dataset(teacher, recipe.data, tmp, classify=classify,
                                                              progress=progress))


def cached_student(store: ResultStore, recipe: Student, teacher: LanguageModel, p_star: LanguageModel, *,
            progress: bool = True) -> HFLanguageModel:
    """KD (cached): sample `teacher` into shards (resumable), train a student from scratch on them."""
    data_config = recipe.data.data
    folder = cached_kd_data(store, recipe.data, teacher, p_star, progress=progress)

    def build(tmp: Path) -> None:
        data = load_dataset(folder, p_star.pad_id, limit=data_config.n_samples)
        model, log = train_student(data, recipe.train, vocab_size=p_star.vocab_size, bos_id=p_star.bos_id,
                                   eos_id=p_star.eos_id, pad_id=p_star.pad_id, progress=progress)
        _save_student(tmp, model, log)

    return load_model(store.directory("lm_student", recipe, build) / "model", p_star)


def _save_student(folder: Path, model, log: pd.DataFrame) -> None:
    save_model(model, folder / "model")  # not at the top: the store writes its own config.json there
    log.to_parquet(folder / "train_log.parquet")


def cached_students_together(store: ResultStore, recipes: Sequence[Student], teachers: Sequence[LanguageModel],
                             p_star: LanguageModel) -> None:
    """Build the `cached_student` entries of `recipes` not yet in the store: each one's KD data from its teacher,
    then their training as one computation (`kd_batched.train_students`) when their training configs differ only
    in seed and can batch (CPU, one process, float32); otherwise nothing (`cached_student` trains each alone).
    Each student is saved under its own recipe, equal to its training alone to float32 rounding."""
    from .kd_batched import check_batchable, train_students

    missing = [(recipe, teacher) for recipe, teacher in zip(recipes, teachers) if not store.has("lm_student", recipe)]
    if len(missing) < 2:
        return
    datas = [load_dataset(cached_kd_data(store, recipe.data, teacher, p_star, progress=False), p_star.pad_id,
                          limit=recipe.data.data.n_samples) for recipe, teacher in missing]
    configs = [recipe.train for recipe, _ in missing]
    try:
        check_batchable(datas, configs)
    except ValueError:
        return  # e.g. bf16 or a GPU launch: each trains alone, through accelerate
    with store.charged("lm_student"):
        trained = train_students(datas, configs, vocab_size=p_star.vocab_size, bos_id=p_star.bos_id,
                                 eos_id=p_star.eos_id, pad_id=p_star.pad_id)
    for (recipe, _), (model, log) in zip(missing, trained):
        store.directory("lm_student", recipe, lambda tmp, m=model, l=log: _save_student(tmp, m, l))


def cached_references(store: ResultStore, config: LLMConfig, *, progress: bool = True) -> References:
    """Ground truth, p', p'', p_target (cached), the oracle and the recall samples."""
    p_star = ground_truth(config)
    source = GroundTruth.of(config)
    high_recipe = distilled(source, config.high_recall)
    high = cached_student(store, high_recipe, p_star, p_star, progress=progress)
    low_recipe = distilled(high_recipe, config.low_recall)
    low = cached_student(store, low_recipe, high, p_star, progress=progress)
    target_topic = None
    oracle_recipe = oracle_of(config)
    target_recipe = oracle_recipe.target
    if config.exact:
        target_topic = target_recipe.topic
        p_target = p_star.restrict([target_topic])
    else:
        p_target = cached_student(store, target_recipe, high, p_star, progress=progress)
    cap = config.metrics.max_new_tokens
    fold_samples = p_target.sample(config.n_fold_samples, cap, 1.0, seed=oracle_recipe.seed)
    oracle = RewardOracle.from_language_model(p_target, fold_samples)
    recall_samples = p_star.sample(config.n_recall_samples, cap, 1.0, seed=config.metrics.seed + 2)
    return References(config, {"p*": p_star, "p'": high, "p''": low, "p_target": p_target},
                      {"p*": source, "p'": high_recipe, "p''": low_recipe, "p_target": target_recipe},
                      oracle, oracle_recipe, recall_samples, target_topic)


def oracle_of(config: LLMConfig) -> Oracle:
    """The recipe of `config`'s reward oracle (what `cached_references` builds it from), without building it."""
    source = GroundTruth.of(config)
    if config.exact:
        target = ExactTopic(source, config.markov.target_topic % config.markov.n_topics)
    else:
        target = distilled(distilled(source, config.high_recall), config.target)
    return Oracle(target, config.n_fold_samples, config.metrics.max_new_tokens, config.metrics.seed + 1)


def cached_evaluated(store: ResultStore, refs: References, recipe: Any, model: LanguageModel) -> dict[str, float]:
    """`refs.evaluate(model)` cached under the model's recipe: a model that several tables show (the
    references in every algorithm's table, p'' and its K-A runs in the 2 × 2 and the coverage sweep) is
    sampled and scored once. Sampling is seeded by the metric config, so a cached row is the computed one."""
    key = {"model": recipe, "p*": refs.recipes["p*"], "p_target": refs.recipes["p_target"],
           "oracle": refs.oracle_recipe, "metrics": refs.config.metrics, "n_recall": refs.config.n_recall_samples,
           "columns": COLUMNS_VERSION}
    row = store.frame("lm_evaluation", key, lambda: pd.DataFrame([refs.evaluate(model)]))
    return {name: float(value) for name, value in row.iloc[0].items()}


def cached_align(store: ResultStore, refs: References, reference_name: str, alignment, seed: int, *,
          progress: bool = True) -> Alignment:
    """Align a copy of `refs.models[reference_name]` against the frozen original and keep the
    App. C.4-selected checkpoint (cached). `alignment` is the config of an `ALGORITHMS` entry."""
    entry = algorithm_of(alignment)
    reference = refs.models[reference_name]
    recipe = Aligned(refs.recipes[reference_name], entry.name, alignment, seed, refs.oracle_recipe)

    def build(tmp: Path) -> None:
        checkpoints = tmp / "checkpoints"
        checkpoints.mkdir()
        policy = reference.with_model(copy.deepcopy(reference.model))
        frozen = reference.with_model(copy.deepcopy(reference.model))
        run = entry.train(policy, frozen, refs.oracle, alignment, seed=seed, progress=progress,
                          on_eval=lambda step, model: _save_checkpoint(checkpoints / f"step_{step:06d}.pt", model))
        _save_selected(tmp, policy.model, run)
        shutil.rmtree(checkpoints)  # only the selected model is kept

    folder = store.directory("lm_aligned", recipe, build)
    return Alignment(recipe, folder, load_model(folder / "selected", refs.p_star),
                     pd.read_parquet(folder / "trajectory.parquet"))


def _save_checkpoint(path: Path, model) -> Path:
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    crash_point("align:checkpoint")
    return path


def _save_selected(folder: Path, model, run) -> None:
    """What `cached_align` keeps of a run: the selected checkpoint's model and the trajectory."""
    model.load_state_dict(torch.load(run.selected, weights_only=True))
    save_model(model, folder / "selected")
    run.trajectory.assign(selected_step=run.selected_step).to_parquet(folder / "trajectory.parquet")


def train_together(references: Sequence[HFLanguageModel], oracle, alignment, seeds: Sequence[int], on_eval) -> list:
    """One batched computation (`Algorithm.train_runs`): run r a copy of `references[r]` aligned against a frozen
    copy of it with `seeds[r]`; `on_eval(r, step, model)` at each run's evaluations. Runs of one reference share
    one frozen copy (scored once for all of them); runs of several references of one shape are each anchored to
    their own. Returns [(policy, AlignmentRun)] in the order of `seeds`."""
    entry = algorithm_of(alignment)
    policies = [reference.with_model(copy.deepcopy(reference.model)) for reference in references]
    frozen: dict[int, HFLanguageModel] = {}
    anchors = [frozen.setdefault(id(reference), reference.with_model(copy.deepcopy(reference.model)))
               for reference in references]
    owner = {id(policy.model): r for r, policy in enumerate(policies)}
    runs = entry.train_runs(policies, anchors, oracle, alignment, seeds=list(seeds), progress=False,
                            on_eval=lambda step, model: on_eval(owner[id(model)], step, model))
    return list(zip(policies, runs))


def batched(alignment, runs: Sequence) -> bool:
    """Whether `runs` (seeds, or members of a `RunGroup`) of `alignment` train as one computation: its algorithm
    has `train_runs` and there are at least two of them."""
    return algorithm_of(alignment).train_runs is not None and len(runs) > 1


def cached_align_runs(store: ResultStore, alignment, members: Sequence[tuple[References, str, int]]) -> None:
    """Build the `cached_align` entries of `members` ((references, reference name, seed)) not yet in the store as
    one computation (`train_together`) when there are two or more and the algorithm trains runs together;
    otherwise nothing (`cached_align` builds each alone). Each run is saved under its own recipe, as `cached_align`
    would save it: run r equals its one-at-a-time run to float32 rounding. The members share an oracle."""
    entry = algorithm_of(alignment)
    missing = [(refs, name, seed, Aligned(refs.recipes[name], entry.name, alignment, seed, refs.oracle_recipe))
               for refs, name, seed in members]
    missing = [member for member in missing if not store.has("lm_aligned", member[3])]
    if not batched(alignment, missing):
        return
    if len({config_hash(member[3].oracle) for member in missing}) > 1:
        raise ValueError("cached_align_runs: the runs of one computation must share their reward oracle")
    with tempfile.TemporaryDirectory() as scratch, store.charged("lm_aligned"):
        runs = train_together([refs.models[name] for refs, name, _, _ in missing], missing[0][0].oracle, alignment,
                              [seed for _, _, seed, _ in missing],
                              lambda r, step, model: _save_checkpoint(Path(scratch) / f"{r}_{step:06d}.pt", model))
        for (_, _, _, recipe), (policy, run) in zip(missing, runs):
            store.directory("lm_aligned", recipe, lambda tmp, p=policy, r=run: _save_selected(tmp, p.model, r))


def cached_a_k_final(store: ResultStore, refs: References, ak: Alignment, tau: float, seed: int, *,
              progress: bool = True) -> tuple[Student, HFLanguageModel]:
    """A-K's last step (cached): the aligned p' `ak` distilled with p'''s KD settings at token temperature
    `tau`, seeded by `seed`; returns the recipe and the model."""
    recipe = distilled(ak.recipe, final_stage(refs.config, tau, seed))
    return recipe, cached_student(store, recipe, ak.model, refs.p_star, progress=progress)


PIPELINES = (("K-A", "p''"), ("A-K", "p'"))  # (pipeline, the reference model it aligns)


@dataclass(frozen=True)
class PipelineCell:
    """One seed of one alignment on one experiment: K-A, A-K and A-K's final KD at each of `final_taus`
    (`ka_only`: K-A alone, e.g. a cell of the 2 × 2 of K-A references). Cells share nothing but cached inputs
    (the references, and A-K's alignment across τ_topic), so they build side by side (`cached_cells`)."""

    config: LLMConfig
    alignment: Any
    seed: int
    final_taus: tuple[float, ...]
    ka_only: bool = False


def cached_cell_rows(store: ResultStore, refs: References, cell: PipelineCell, *, progress: bool = True,
                     align=None) -> list[dict[str, Any]]:
    """The `PipelineResult.metrics` rows of one cell, every model built or read from the store: K-A's final
    model, then A-K's aligned model and its final KD at each of `cell.final_taus`. `align(reference_name)`:
    how the cell's alignments are obtained (default `cached_align`). This is the one list of what a cell
    builds: workers build it, `cached_run_pipelines` reads it back."""
    align = align or (lambda name: cached_align(store, refs, name, cell.alignment, cell.seed, progress=progress))
    nan, seed = float("nan"), cell.seed
    ka = align("p''")
    rows = [{"seed": seed, "pipeline": "K-A", "model": "p''_KA", "final_tau": nan,
             **cached_evaluated(store, refs, ka.recipe, ka.model)}]
    if cell.ka_only:
        return rows
    ak = align("p'")
    rows.append({"seed": seed, "pipeline": "A-K", "model": "p'_AK", "final_tau": nan,
                 **cached_evaluated(store, refs, ak.recipe, ak.model)})
    for tau in cell.final_taus:
        recipe, final = cached_a_k_final(store, refs, ak, tau, seed, progress=progress)
        rows.append({"seed": seed, "pipeline": "A-K", "model": "p''_AK", "final_tau": tau,
                     **cached_evaluated(store, refs, recipe, final)})
    return rows


_references_by_config: dict[str, References] = {}  # per worker process: each config's models are loaded once


def cached_references_in_worker(store: ResultStore, config: LLMConfig) -> References:
    """`cached_references` loaded once per process and config: a worker builds many cells of few configs."""
    key = f"{store.root}:{config_hash(config)}"
    if key not in _references_by_config:
        _references_by_config[key] = cached_references(store, config, progress=False)
    return _references_by_config[key]


def _build_in_worker(profile: str, root: str, cell: PipelineCell) -> None:
    store = ResultStore(profile, root=root)
    cached_cell_rows(store, cached_references_in_worker(store, cell.config), cell, progress=False)


def reference_recipe(config: LLMConfig, name: str):
    """The recipe `cached_references` gives p' (`name` "p'") or p'' ("p''") of `config`."""
    high = distilled(GroundTruth.of(config), config.high_recall)
    return high if name == "p'" else distilled(high, config.low_recall)


@dataclass(frozen=True)
class RunGroup:
    """Alignment runs that train as one computation: `alignment` of each member's reference, `members` being
    (config, reference name, seed) whose references share a shape and whose configs share an oracle: the seeds of
    one reference, and across references the K-A references of the τ_topic sweep or of the 2 × 2's cells."""

    alignment: Any
    members: tuple[tuple[LLMConfig, str, int], ...]


def run_groups(cells: Sequence[PipelineCell]) -> list[RunGroup]:
    """The alignments of `cells` that train together (`batched`): one group per alignment, oracle, pipeline
    (p' or p'') and reference shape (ground truth and student size), each run once (A-K's p' is the same model
    under every τ_topic). K-A's references across τ_topic or the 2 × 2's cells group; K-A and A-K do not, so a
    single seed trains alone."""
    groups: dict[str, list] = {}
    alignments: dict[str, Any] = {}
    seen: set[str] = set()
    for cell in cells:
        if algorithm_of(cell.alignment).train_runs is None:  # refuses a non-config by name
            continue
        for pipeline, name in PIPELINES:
            run = config_hash((reference_recipe(cell.config, name), cell.alignment, cell.seed, oracle_of(cell.config)))
            if (cell.ka_only and pipeline == "A-K") or run in seen:
                continue
            seen.add(run)
            stage = cell.config.high_recall if name == "p'" else cell.config.low_recall
            key = config_hash((cell.alignment, oracle_of(cell.config), name, GroundTruth.of(cell.config),
                               stage.train.size, stage.train.max_positions))
            alignments[key] = cell.alignment
            groups.setdefault(key, []).append((cell.config, name, cell.seed))
    return [RunGroup(alignments[key], tuple(members)) for key, members in groups.items()
            if batched(alignments[key], members)]


def _with_seeds(keyed) -> list:
    """Groups from (key, the group without seeds, seed) triples: one group per key, its seeds in first-seen order."""
    groups: dict[str, Any] = {}
    for key, empty, seed in keyed:
        group = groups.setdefault(config_hash(key), empty)
        if seed not in group.seeds:
            groups[config_hash(key)] = dataclasses.replace(group, seeds=(*group.seeds, seed))
    return list(groups.values())


def _references_in_worker(profile: str, root: str, config: LLMConfig) -> None:
    store = ResultStore(profile, root=root)
    cached_references_in_worker(store, config)


def _align_group_in_worker(profile: str, root: str, group: RunGroup) -> None:
    store = ResultStore(profile, root=root)
    cached_align_runs(store, group.alignment, [(cached_references_in_worker(store, config), name, seed)
                                               for config, name, seed in group.members])


@dataclass(frozen=True)
class FinalGroup:
    """A-K's final KDs of several seeds at one temperature: students of one shape, trained as one computation."""

    config: LLMConfig
    alignment: Any
    tau: float
    seeds: tuple[int, ...]


def final_groups(cells: Sequence[PipelineCell]) -> list[FinalGroup]:
    """The final KDs of `cells`, one group per config, alignment and temperature (at least two seeds)."""
    keyed = [((cell.config, cell.alignment, tau), FinalGroup(cell.config, cell.alignment, tau, ()), cell.seed)
             for cell in cells if not cell.ka_only for tau in cell.final_taus]
    return [group for group in _with_seeds(keyed) if len(group.seeds) > 1]


def _finals_group_in_worker(profile: str, root: str, group: FinalGroup) -> None:
    store = ResultStore(profile, root=root)
    refs = cached_references_in_worker(store, group.config)
    aligned = [cached_align(store, refs, "p'", group.alignment, seed, progress=False) for seed in group.seeds]
    recipes = [distilled(ak.recipe, final_stage(refs.config, group.tau, seed))
               for ak, seed in zip(aligned, group.seeds)]
    cached_students_together(store, recipes, [ak.model for ak in aligned], refs.p_star)


def cached_cells(store: ResultStore, cells: list[PipelineCell], *, jobs: int | None = 1) -> None:
    """Build every cell's models and evaluations into `store` (those already there are found), up to `jobs`
    cells at a time in spawned processes (`parallel.in_workers`; None: one per core, but 1 on a GPU; 1: the cells
    are left to the caller, which builds as it reads). First the references of every config, side by side; then
    the alignments that train as one computation (`run_groups`: the seeds of a reference, and references of one
    shape), then A-K's final KDs of several seeds (`final_groups`, `cached_students_together`), a group per
    process. Cells whose references are not built yet should come first
    in an order that spreads different configs over the first `jobs` cells (`parallel.interleaved`): two
    cells that need the same missing model wait for each other on its lock."""
    jobs = resolve_jobs(jobs, [cell.config.device for cell in cells])
    where = (store.profile, str(store.root))
    configs = {config_hash(cell.config): cell.config for cell in cells}
    if jobs > 1 and len(configs) > 1:  # a group spans configs: their references first, side by side
        in_workers(_references_in_worker, [(*where, config) for config in configs.values()], jobs=jobs)
    in_turn(_align_group_in_worker, [(*where, group) for group in run_groups(cells)], jobs)
    in_turn(_finals_group_in_worker, [(*where, group) for group in final_groups(cells)], jobs)
    if jobs > 1 and len(cells) > 1:
        in_workers(_build_in_worker, [(store.profile, str(store.root), cell) for cell in cells], jobs=jobs)


def _pipelines_of(refs: References, alignment, seeds: Sequence[int], label: str | None,
                  final_taus: Sequence[float] | None) -> tuple[str, Pipelines, list[PipelineCell]]:
    """The label, the cache key of the pipelines' tables and the cells of one alignment config."""
    name = algorithm_of(alignment).name
    config = refs.config
    if final_taus is not None:  # replace() re-runs LLMConfig's checks on the override
        config = dataclasses.replace(config, final_taus=tuple(final_taus))
    label = label or name
    cells = [PipelineCell(refs.config, alignment, seed, config.final_taus) for seed in seeds]
    return label, Pipelines(config, name, label, alignment, tuple(seeds)), cells


def cached_pipelines(store: ResultStore, refs: References, alignments: Mapping[str, Any], seeds: list[int], *,
                     final_taus: Mapping[str, Sequence[float]] | None = None, progress: bool = True,
                     jobs: int | None = 1) -> PipelineResult:
    """`cached_run_pipelines` of every label of `alignments` ({label: config}), its tables concatenated in that
    order. `final_taus`: per label (a label it does not name keeps the config's). With `jobs` > 1 the cells of
    *every* label not yet tabled build first, as one `cached_cells` call: one algorithm's seeds make two alignment
    groups and one final-KD group, too few to keep several processes busy, while all algorithms' groups do.
    Which groups exist does not depend on what is built with them, so no number depends on it."""
    taus = dict(final_taus or {})
    every = {label: _pipelines_of(refs, alignment, seeds, label, taus.get(label))
             for label, alignment in alignments.items()}
    missing = [cell for _, key, cells in every.values()
               if not store.has("lm_pipeline_metrics", {"pipelines": key, "columns": COLUMNS_VERSION})
               for cell in cells]
    if missing and resolve_jobs(jobs, [refs.config.device]) > 1:
        cached_cells(store, missing, jobs=jobs)
    results = [cached_run_pipelines(store, refs, alignment, seeds, label=label, final_taus=taus.get(label),
                                    progress=progress) for label, alignment in alignments.items()]  # read back
    return PipelineResult(pd.concat([r.metrics for r in results], ignore_index=True),
                          pd.concat([r.trajectories for r in results], ignore_index=True))


def cached_run_pipelines(store: ResultStore, refs: References, alignment, seeds: list[int], *, label: str | None = None,
                         final_taus: list[float] | None = None, progress: bool = True,
                         jobs: int | None = 1) -> PipelineResult:
    """K-A and A-K for one alignment config and several seeds (cached; columns in `PipelineResult`).

    A-K's final KD runs once per temperature in `final_taus` (default: the config's); App. D sweeps
    it for PPO and DPO only, so a chapter can pass a shorter list for the other algorithms. `jobs` > 1
    (None: one per core, 1 on a GPU) builds the seeds' runs in that many processes first (`cached_cells`);
    no number depends on it. Several algorithms: `cached_pipelines` builds all their runs side by side.
    """
    label, key, cells = _pipelines_of(refs, alignment, seeds, label, final_taus)
    runs: dict[tuple[int, str], Alignment] = {}

    def run(seed: int, reference_name: str) -> Alignment:  # each alignment is built or read once per call
        if (seed, reference_name) not in runs:
            runs[seed, reference_name] = cached_align(store, refs, reference_name, alignment, seed, progress=progress)
        return runs[seed, reference_name]

    def metrics() -> pd.DataFrame:
        cached_cells(store, cells, jobs=jobs)
        nan = float("nan")
        rows = [{"seed": -1, "pipeline": "reference", "model": model_name, "final_tau": nan,
                 **cached_evaluated(store, refs, refs.recipes[model_name], model)}
                for model_name, model in refs.models.items()]  # shared by all seeds: one row each, seed = -1
        for cell in tqdm(cells, desc=f"{label} seeds", disable=not progress):
            rows += cached_cell_rows(store, refs, cell, progress=progress,
                                     align=lambda reference_name, seed=cell.seed: run(seed, reference_name))
        frame = pd.DataFrame(rows)
        frame.insert(0, "algorithm", label)
        return frame

    def trajectories() -> pd.DataFrame:
        return pd.concat([run(seed, reference_name).trajectory.assign(algorithm=label, seed=seed, pipeline=pipeline)
                          for seed in seeds for pipeline, reference_name in PIPELINES], ignore_index=True)

    return PipelineResult(store.frame("lm_pipeline_metrics", {"pipelines": key, "columns": COLUMNS_VERSION}, metrics),
                          store.frame("lm_pipeline_trajectories", key, trajectories))
