"""Chapter 06's SmolLM2 section: what students trained from scratch on a CPU's worth of real p* samples learn.

    table = cached_recall_study(store, config)   # one row per model (config: `chapters.ch06_llm.smollm2_config`)
    collect = cached_recall_study_in_background(store, config, jobs=2)  # begun now in a process of its own,
    table = collect()                                                    # collected later: the same table

p* is the offline SmolLM2-135M-Instruct (`gguf:smollm2`); p' is distilled from it and p'' from p' exactly
as in the chapter's other ground truths (`experiments.cached_student`, cached under the same recipes). Recall is
measured on p*'s own samples beside two baselines that need no network: a uniform guess over the
49 152 tokens, and the unigram of p''s KD data (`metrics.UnigramModel`: token frequencies, add-α with α
chosen by leave-one-out on those data alone). A student that does not beat the unigram has learnt
token frequencies and nothing a reference model of the paper's pipelines needs, so the table splits recall
into the first response token (the distribution after the prompt "The", which a unigram cannot condition
on) and the tokens after it (context); chapter 06 words the verdict (`alignkd.chapters.ch06_report`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ..cache import ResultStore
from .config import LLMConfig
from .experiments import GroundTruth, cached_kd_data, cached_student, distilled, ground_truth
from .generation import Samples
from .kd import load_dataset
from .metrics import COLUMNS_VERSION, UnigramModel, uniform_recall
from .models import LanguageModel
from .parallel import resolve_jobs, started

COLUMNS = ["model", "trained_on", "overall_recall", "first_token", "later_tokens", "sample"]


@dataclass(frozen=True)
class RecallStudy:
    """What a `cached_recall_study` table is cached under (the models themselves are cached by their recipes)."""

    config: LLMConfig
    sample_seed: int = 1
    columns: int = COLUMNS_VERSION


def first_tokens(samples: Samples) -> Samples:
    """Each sequence cut after its first response token (`prompt + y_1`)."""
    width = samples.prompt_length + 1
    return Samples(samples.tokens[:, :width], samples.mask[:, :width], samples.prompt_length)


def recall_split(model: LanguageModel, samples: Samples) -> dict[str, float]:
    """Per-token recall of `samples` under `model`: over all response tokens (`recall`, the chapter's metric),
    on the first one alone (`first_token`) and on the ones after it (`later_tokens`, sequences of >= 2 tokens)."""
    whole = model.log_prob(samples)
    first = model.log_prob(first_tokens(samples)).total.double()
    later = whole.n_tokens >= 2
    rest = (whole.total.double() - first)[later] / (whole.n_tokens[later] - 1)
    return {"overall_recall": float(whole.per_token.double().mean()), "first_token": float(first.mean()),
            "later_tokens": float(rest.mean()) if later.any() else float("nan")}


def cached_recall_study(store: ResultStore, config: LLMConfig, *, progress: bool = False) -> pd.DataFrame:
    """p*, p', p'', the unigram of p''s KD data and a uniform guess, each scoring the same
    `config.n_recall_samples` samples of p* (columns `COLUMNS`; `sample`: one response of the model). Cached."""

    def build() -> pd.DataFrame:
        p_star = ground_truth(config)
        high_recipe = distilled(GroundTruth.of(config), config.high_recall)
        high = cached_student(store, high_recipe, p_star, p_star, progress=progress)
        low = cached_student(store, distilled(high_recipe, config.low_recall), high, p_star, progress=progress)
        data = load_dataset(cached_kd_data(store, high_recipe.data, p_star, p_star, progress=progress),
                            p_star.pad_id, limit=config.high_recall.data.n_samples)
        unigram = UnigramModel.fit(data, p_star)
        length = config.metrics.max_new_tokens
        # the seed of `experiments.cached_references`' recall set: the same samples as the chapter's other tables
        recall_samples = p_star.sample(config.n_recall_samples, length, 1.0, seed=config.metrics.seed + 2)
        n_data = f"{len(data)} × {length} tokens"
        trained_on = {"p*": "(the ground truth)", "p'": f"p* samples, {n_data}",
                      "p''": f"p' samples, {config.low_recall.data.n_samples} × {length} tokens",
                      "unigram": f"p''s data: token counts, add-α = {unigram.alpha:.3g}"}
        rows = []
        for name, model in (("p*", p_star), ("p'", high), ("p''", low), ("unigram", unigram)):
            sample = "" if name == "unigram" else model.sample(1, length, seed=RecallStudy.sample_seed).texts(
                p_star.tokenizer)[0]
            rows.append({"model": name, "trained_on": trained_on[name], **recall_split(model, recall_samples),
                         "sample": sample})
        uniform = uniform_recall(p_star)
        rows.append({"model": "uniform", "trained_on": f"nothing: 1 / {p_star.vocab_size} per token",
                     "overall_recall": uniform, "first_token": uniform, "later_tokens": uniform, "sample": ""})
        return pd.DataFrame(rows, columns=COLUMNS)

    return store.frame("lm_smollm2_recall", RecallStudy(config), build)


def _recall_study_in_worker(profile: str, root: str, config: LLMConfig) -> pd.DataFrame:
    return cached_recall_study(ResultStore(profile, root=root), config)


def cached_recall_study_in_background(store: ResultStore, config: LLMConfig, *,
                                      jobs: int | None) -> Callable[[], pd.DataFrame]:
    """`cached_recall_study`, begun now in a spawned process when `jobs` allows more than one (None: one per core;
    1 on a GPU, `parallel.resolve_jobs`), so that it shares nothing with the chapter's other cells and runs beside
    them; returns the call that collects its table (raising its failure). The study depends on nothing else the
    chapter builds, and chapter 06 starts it first so that its ~150 CPU s on one core are not left to the end of
    the book, where the other core idles."""
    jobs = resolve_jobs(jobs, [config.device])
    return started(_recall_study_in_worker, (store.profile, str(store.root), config), jobs=jobs)
