"""Chapter 07 (`notebooks/07_pad.md`): Align → PAD, a reference-free student, against K-A and A-K.

`configs` turns the chapter's parameters into the MoG testbed's `Setup` and `Comparison`; `lm_comparison` runs the
language-model section on chapter 06's configuration (the same cached models, seeds and budgets). Chapter 05's
results are read through chapter 05's own functions (`ch05_mog_coverage.configs`, `coverage_study.study_key`), so
both chapters name the same cache entries. The rest writes the chapter's tables, sentences and claim rows:
`mog_*` for the MoG comparison, `simpo_*` for SimPO on chapter 05's lost-target trials, `lm_*` for the
language models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..cache import ResultStore
from ..claims import verdict_from_interval
from ..mog.coverage_study import cached_reference_coverage, lost_counts, lost_setup, trap_beta_kd
from ..mog.experiments import cached_low_recall, models_coverage
from ..mog.pipelines import Setup
from ..mog.successors import Escape, cached_coverage_results, simpo_escape
from ..pad import losses
from ..pad.mog import Comparison, PADConfig, cached_comparison, final_models, paired_gaps
from ..pad.mog.report import METRIC_COLUMNS
from ..stats import format_interval, paired_on_index
from . import ch05_mog_coverage, ch06_llm, named, profile_call, profile_values
from .ch02_mog_setup import coverage_sentence

PARAMETER_FUNCTIONS = ("configs", "lm_comparison")  # take this chapter's parameters by name (tests/test_chapters_layer.py)
CHAPTER = "07_pad"
PAIRED_COLUMNS = ["pipeline", "metric", "n", "diff", "ci_low", "ci_high", "mean_verdict"]
CLAIM_COLUMNS = ["claim_id", "ours", "low", "high", "verdict", "reason"]


def pad_variant(variant: str) -> tuple[str, str]:
    """("loss", "student_init") of a variant written "loss/student_init" (e.g. "ppd/fresh")."""
    parts = variant.split("/") if isinstance(variant, str) else []
    if len(parts) != 2:
        raise ValueError(f"pad variant {variant!r}: must be written loss/student_init, e.g. 'ppd/fresh'")
    return parts[0], parts[1]


def configs(*, n_trials: int, seed: int, algorithm: str, align_beta: float, align_iterations: int,
            pad_variants: list[str], n_responses: int, group_size: int, pad_beta: float, temperature: float,
            pad_iterations: int, pad_checkpoints: list[int], n_low_recall: int, beta_kd: float, sft_iterations: int,
            kd_iterations: int, eval_samples: int) -> tuple[Setup, Comparison]:
    """The MoG Setup and the K-A / A-K / Align → PAD Comparison, every parameter validated before any compute.

    `group_size` 0 means no preference decomposition; PAD checkpoints at or past `pad_iterations` are dropped
    (the last iteration is always scored).
    """
    setup = Setup(n_trials=n_trials, seed=seed, n_low_recall=n_low_recall, beta_kd=beta_kd,
                  sft_iterations=sft_iterations, kd_iterations=kd_iterations, eval_samples=eval_samples)
    pad = tuple(PADConfig(loss=loss, student_init=init, n_responses=n_responses, group_size=group_size or None,
                          beta=pad_beta, tau=temperature, n_iterations=pad_iterations)
                for loss, init in map(pad_variant, pad_variants))
    comparison = Comparison(algorithm=algorithm, beta=align_beta, align_iterations=align_iterations, pad=pad,
                            pad_checkpoints=tuple(c for c in pad_checkpoints if c < pad_iterations))
    return setup, comparison


# --------------------------------------------------------------------------- Plackett–Luce and its cost


def plackett_luce_table(rewards: Sequence[float] = (2.0, 1.0, 0.5), betas: Sequence[float] = (0.25, 1.0, 4.0)
                        ) -> pd.DataFrame:
    """P(ranking) for every ranking of `rewards` (responses a, b, c, ...; best first), one column per β."""
    rewards = torch.tensor(rewards, dtype=torch.float64)
    names = ["".join("abcdefgh"[i] for i in r) for r in losses.ranking_table(len(rewards)).tolist()]
    return pd.DataFrame({f"β = {b:g}": losses.plackett_luce_log_probs(rewards, b).exp().numpy() for b in betas},
                        index=pd.Index(names, name="ranking (best first)"))


def plackett_luce_sentence(table: pd.DataFrame) -> str:
    """P(a > b > c) at β = 1 against the hand computation, and the top ranking's mass at the smallest and largest β
    (`plackett_luce_table` of the rewards 2, 1, 0.5 at β = 0.25, 1, 4)."""
    by_hand = math.exp(2) / (math.exp(2) + math.e + math.exp(.5)) * math.e / (math.e + math.exp(.5))
    return (f"P(a > b > c) = {table.iloc[0, 1]:.4f} at β = 1 (by hand: e²/(e²+e+e^½) · e/(e+e^½) = {by_hand:.4f}); "
            f"the most likely ranking carries {table.iloc[0, 0]:.0%} of the mass at β = 0.25 and "
            f"{table.iloc[0, 2]:.0%} at β = 4.")


def ranking_cost_table(largest_n: int = 8) -> pd.DataFrame:
    """Per n: the n! rankings, float32 memory per group of the subset route and of a dense [n!, n] table, and
    n = 8 ranked as two groups of 4 (preference decomposition)."""
    ns = range(2, largest_n + 1)
    cost = pd.DataFrame({"n": ns})
    cost["rankings n!"] = [math.factorial(n) for n in ns]
    cost["float32 per group, O(n!)"] = [f"{4 * math.factorial(n) / 1024:.1f} KiB" for n in ns]
    cost["dense [n!, n] route"] = [f"{4 * n * math.factorial(n) / 1024:.1f} KiB" for n in ns]
    cost["n = 8 as 2 groups of 4"] = [f"{2 * 4 * math.factorial(4) / 1024:.2f} KiB" if n == 8 else "" for n in ns]
    return cost.set_index("n")


# --------------------------------------------------------------------------- the MoG comparison


@dataclass(frozen=True)
class Trials:
    """The MoG comparison on one set of trials, with K-A's reference's coverage of the target."""

    setup: Setup
    results: pd.DataFrame
    """`pad.mog.cached_comparison`: one line per (pipeline, iterations, trial)."""
    reference_coverage: pd.DataFrame
    """p'''s per-trial coverage of the target (`mog.experiments.models_coverage`)."""


def mog_trials(store: ResultStore, setup: Setup, comparison: Comparison) -> Trials:
    """The cached comparison on `setup`'s trials and its K-A reference's coverage."""
    results = cached_comparison(store, setup, comparison)
    return Trials(setup, results, models_coverage(setup, {"p''": cached_low_recall(store, setup, progress=False)}))


def mog_note(trials: Trials) -> str:
    """How many models were scored, their compute time, and what K-A's reference p'' covers."""
    results = trials.results
    return (f"{results.pipeline.nunique()} models × {trials.setup.n_trials} trials scored; compute time when first "
            f"made: {results.seconds.iloc[0]:.0f} s (p' and p'' come from the shared cache of chapters 02-04)\n"
            + coverage_sentence(trials.reference_coverage, "K-A's reference p''"))


def mog_title(comparison: Comparison) -> str:
    """The comparison figure's title: the alignment and the (first) PAD variant's settings."""
    pad = comparison.pad[0]
    return (f"{comparison.algorithm.upper()} β = {comparison.beta:g}, {comparison.align_iterations} alignment "
            f"iterations; PAD n = {pad.n_responses}, τ = {pad.tau:g}, {pad.n_iterations} steps")


def mog_paired_gaps_table(frame: pd.DataFrame):
    """Every final model minus K-A, paired by trial (`pad.mog.paired_gaps`), styled for display."""
    return (paired_gaps(frame)[PAIRED_COLUMNS]
            .style.set_caption("every final model minus K-A, paired by trial (95 % bootstrap intervals)")
            .format(precision=3))


@dataclass(frozen=True)
class LostTrials:
    """Chapter 05's trap: its setup and study, its references' coverage, the trap's β_KD and, if any trials lost
    the target there, the MoG comparison on exactly those trials."""

    setup05: Setup
    study05: Any
    coverage05: pd.DataFrame
    trap: float | None
    trials: Trials | None

    @property
    def n_low_recall(self) -> int:
        """Chapter 05's main n_low_recall (the p'' whose coverage defines the trap)."""
        return self.study05.n_low_recalls[0]

    @property
    def label(self) -> str:
        """The trap in words, e.g. "β_KD 10, p''_4" ("none" without a trap)."""
        return f"β_KD {self.trap:g}, p''_{self.n_low_recall}" if self.trap is not None else "none"

    @property
    def results(self) -> pd.DataFrame | None:
        return self.trials.results if self.trials is not None else None


def lost_trials(store: ResultStore, profile: str, comparison: Comparison) -> LostTrials:
    """The comparison on the trials whose p'' lost the target at chapter 05's trap β_KD, with chapter 05's
    configuration under `profile` (its cached references; nothing of chapter 05 is recomputed)."""
    setup05, study05 = profile_call(ch05_mog_coverage.configs, ch05_mog_coverage.CHAPTER, profile)
    _, coverage05 = cached_reference_coverage(store, setup05, study05)
    k05 = study05.n_low_recalls[0]
    trap = trap_beta_kd(lost_counts(coverage05), study05.min_lost, k05)
    lost = lost_setup(setup05, coverage05, trap, k05) if trap is not None else None
    trials = mog_trials(store, lost, comparison) if lost is not None else None
    return LostTrials(setup05, study05, coverage05, trap, trials)


def lost_note(lost: LostTrials) -> str:
    """How many of chapter 05's trials lost the target at its trap, their compute time and their p'''s coverage."""
    if lost.trials is None:
        return (f"No β_KD of chapter 05's grid leaves two or more of its {lost.setup05.n_trials} trials without the "
                f"target at this profile's size: the question is not testable here.")
    trials = lost.trials
    return (f"{trials.setup.n_trials} of {lost.setup05.n_trials} trials lost the target at {lost.label}; compute time "
            f"when first made: {trials.results.seconds.iloc[0]:.0f} s\n"
            + coverage_sentence(trials.reference_coverage,
                                f"K-A's reference p''_{lost.n_low_recall} (β_KD {lost.trap:g})"))


def lost_title(lost: LostTrials) -> str:
    return f"lost-target trials only ({lost.label}, {lost.trials.setup.n_trials} trials)"


def simpo_on_lost_trials(store: ResultStore, lost: LostTrials, seed: int) -> Escape:
    """SimPO's A-K − K-A and its recall cost on chapter 05's lost-target trials, from chapter 05's cached results
    (`successors.simpo_escape`; bootstrap seeded by `seed`)."""
    results05, missing05 = cached_coverage_results(store, lost.setup05, lost.study05, ["simpo", "dpo_online"])
    return simpo_escape(results05, lost.coverage05, lost.trap, lost.n_low_recall, missing=missing05, seed=seed)


# --------------------------------------------------------------------------- the language models


@dataclass(frozen=True)
class LMComparison:
    """K-A, A-K (chapter 06's PPO pipelines) and every Align → PAD student on chapter 06's testbed."""

    rows: pd.DataFrame
    """`lm_comparison_rows`: one row per (model, seed), named in `name`."""
    premise: Any
    """Chapter 06's `PremiseCheck` of its references (None when its ground truth has no target topic)."""

    @property
    def premise_note(self) -> str:
        """The premise's verdict paragraph, or why there is none."""
        from .ch06_report import premise_note

        return premise_note(self.premise)


def lm_pad_configs(variants: Sequence[str], *, n_responses: int, group_size: int, beta: float, tau: float,
                   n_iterations: int, batch_size: int, max_new_tokens: int) -> list:
    """One `LMPADConfig` per variant "loss/student_init", with as many responses per step as an alignment
    iteration of `batch_size` (at least one group) and the chapter's response cap."""
    from ..pad.lm import LMPADConfig

    return [LMPADConfig(loss=loss, student_init=init, n_responses=n_responses, group_size=group_size or None,
                        beta=beta, tau=tau, n_iterations=n_iterations, groups_per_step=max(1, batch_size // n_responses),
                        max_new_tokens=max_new_tokens)
            for loss, init in map(pad_variant, variants)]


def lm_comparison(store: ResultStore, profile: str, *, n_responses: int, group_size: int, pad_beta: float,
                  temperature: float, lm_pad_steps: int, lm_pad_variants: list[str]) -> LMComparison:
    """Align → PAD against chapter 06's PPO K-A and A-K, on chapter 06's configuration under `profile` (its
    cached references, pipelines and premise check), and chapter 06's premise check."""
    from ..lm.experiments import cached_references, cached_run_pipelines
    from ..lm.premise import PremiseRule, cached_premise_check
    from ..pad.lm import cached_align_then_pad

    llm = profile_values(ch06_llm.CHAPTER, profile)  # chapter 06's parameters: the same models, seeds and budgets
    pad_configs = lm_pad_configs(lm_pad_variants, n_responses=n_responses, group_size=group_size, beta=pad_beta,
                                 tau=temperature, n_iterations=lm_pad_steps, batch_size=llm["batch_size"],
                                 max_new_tokens=llm["max_new_tokens"])
    ppo = ch06_llm.alignments(**named(ch06_llm.alignments, llm | {"algorithms": ["ppo"]}))["ppo"]
    refs = cached_references(store, ch06_llm.config(**named(ch06_llm.config, llm)))
    pipelines = cached_run_pipelines(store, refs, ppo, llm["seeds"], label="ppo")
    pad = [cached_align_then_pad(store, refs, ppo, llm["seeds"], config, label="ppo") for config in pad_configs]
    rows = lm_comparison_rows(pipelines.metrics, [p.metrics for p in pad], main_tau=llm["final_taus"][0])
    premise = None  # chapter 06's premise (p'' lost the rare topic, p' kept it), from its cache
    if refs.target_topic is not None:
        premise = cached_premise_check(store, refs.models, refs.recipes, refs.p_star, refs.target_topic,
                                       PremiseRule(n_samples=llm["premise_samples"],
                                                   max_new_tokens=llm["max_new_tokens"]))
    return LMComparison(rows, premise)


def lm_premise_pointer(premise) -> str:
    """The line that ties the LM verdicts to chapter 06's premise check printed with the table above."""
    if premise is None:
        return "These verdicts rest on chapter 06's references, which have no premise check (see above)."
    state = "passed" if premise.passed else "FAILED, so K-A is no trap to escape and no verdict below tests it"
    return f"These verdicts rest on chapter 06's references, whose premise check printed above {state}."


def lm_answer(run: LMComparison) -> str:
    """`lm_verdicts` under the pointer to the premise they rest on."""
    return "\n".join([lm_premise_pointer(run.premise), *lm_verdicts(run.rows)])


# --------------------------------------------------------------------------- the words

def mog_summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over trials of the four metrics for every final model."""
    return final_models(frame).groupby("pipeline", observed=True)[list(METRIC_COLUMNS)].agg(["mean", "std"])


def mog_verdict(frame: pd.DataFrame) -> str:
    """The chapter's answer in numbers: did each PAD student reach the target, and what did it cost in recall?"""
    table = final_models(frame).groupby("pipeline", observed=True)[list(METRIC_COLUMNS)].mean()
    spread = final_models(frame).groupby("pipeline", observed=True)["reward"].std()
    lines = []
    ka, ak, teacher = table.loc["K-A"], table.loc["A-K"], table.loc["A (p'_AK)"]
    lines.append(f"K-A reaches a mean reward of {ka.reward:.2f} (target precision {ka.target_precision:.1f}, recall "
                 f"{ka.overall_recall:.2f}); A-K {ak.reward:.2f} ({ak.target_precision:.1f}, {ak.overall_recall:.2f}); "
                 f"the shared teacher p'_AK {teacher.reward:.2f}.")
    for name in (p for p in table.index if p.startswith("A→PAD")):
        row = table.loc[name]
        start = "p''" if "p_low" in name else "a fresh compact model"
        escaped = row.reward > ka.reward
        lines.append(
            f"{name}, starting from {start}: mean reward {row.reward:.2f} ± {spread[name]:.2f} "
            f"({'above' if escaped else 'not above'} K-A's {ka.reward:.2f}; {row.reward - ak.reward:+.2f} against A-K), "
            f"target precision {row.target_precision:.1f} ({row.target_precision - ka.target_precision:+.1f} against K-A), "
            f"recall {row.overall_recall:.2f} ({row.overall_recall - ka.overall_recall:+.2f} against K-A, "
            f"{row.overall_recall - ak.overall_recall:+.2f} against A-K).")
    return "\n".join(lines)


def mog_trajectory_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Trial means of the four metrics of every PAD student at every scored PAD iteration."""
    pad = frame[frame.pipeline.str.startswith("A→PAD")]
    return pad.groupby(["pipeline", "iterations"])[list(METRIC_COLUMNS)].mean()


def mog_answer(frame: pd.DataFrame, lost: pd.DataFrame | None, trap: str) -> str:
    """Does a reference-free PAD student escape the trap? Each PAD variant against K-A and A-K, paired by trial,
    on every trial and (if given) on the trials whose reference lost the target (`trap` says which)."""
    lines = []
    for name, part in (("all trials", frame), (f"the trials whose p'' lost the target ({trap})", lost)):
        if part is None:
            lines.append(f"On {name}: not run (no lost-target trials at this size).")
            continue
        vs_ka, vs_ak = paired_gaps(part, "K-A", ("reward",)), paired_gaps(part, "A-K", ("reward",))
        for pad in [p for p in vs_ka.pipeline if p.startswith("A→PAD")]:
            a = vs_ka[vs_ka.pipeline == pad].iloc[0]
            b = vs_ak[vs_ak.pipeline == pad].iloc[0]
            escaped = {"holds": "escapes it", "does not hold": "does worse than K-A",
                       "partly": "is not distinguishable from K-A"}.get(a.mean_verdict, "cannot be judged")
            lines.append(f"On {name} (n = {int(a.n)}): {pad} minus K-A in reward "
                         f"{format_interval(a['diff'], a.ci_low, a.ci_high)}, minus A-K "
                         f"{format_interval(b['diff'], b.ci_low, b.ci_high)}: the reference-free student {escaped}.")
    return "\n".join(lines)


PAD_PAPER_VALUE = "not in either paper: this book's question (PAD is reference-free, §2 of the PAD paper)"


def mog_claim_rows(frame: pd.DataFrame, lost: pd.DataFrame | None, trap: str, chapter: str = CHAPTER,
                      figure: str = "fig-07-mog-lost") -> pd.DataFrame:
    """Rows for `alignkd.claims.record`: per PAD variant, "the reference-free student ends with a higher reward
    than K-A" on the trials whose K-A reference lost the target (the trap the question is about), paired by trial.
    Without lost-target trials each variant's row says the question is not testable at this size."""
    rows = []
    variants = [p for p in dict.fromkeys(final_models(frame).pipeline.astype(str)) if p.startswith("A→PAD")]
    gaps = paired_gaps(lost, "K-A", ("reward",)) if lost is not None else None
    for number, pad in enumerate(variants):
        claim = (f"{pad}: a reference-free student escapes the low-recall trap, ending with a higher reward than K-A "
                 f"on the trials whose K-A reference lost the target")
        row = dict(chapter=chapter, claim_id=f"mog-escape-{number}", claim=claim, paper_value=PAD_PAPER_VALUE,
                   figure=figure)
        if gaps is None:
            rows.append({**row, "ours": None, "low": None, "high": None, "verdict": "not testable here",
                         "reason": "no β_KD of chapter 05's grid leaves enough trials without the target at this "
                                   "profile's size"})
            continue
        gap = gaps[gaps.pipeline == pad].iloc[0]
        verdict, reason = verdict_from_interval(gap.ci_low, gap.ci_high, "> 0")
        rows.append({**row, "ours": gap["diff"], "low": gap.ci_low, "high": gap.ci_high, "verdict": verdict,
                     "reason": f"{reason}; {int(gap.n)} trials whose p'' lost the target at {trap}"})
    return pd.DataFrame(rows)


SIMPO_PAPER_VALUE = ("not in the paper: §3.4's learning trap needs a reference and SimPO has none; its on-policy "
                      "samples still come from the low-recall model (the sampling trap)")
RECALL_PAPER_VALUE = "not in the paper: the reverse KL to the reference is what keeps the aligned model's recall"


def simpo_sentence(escape: Escape, trap: str) -> str:
    """What the numbers of `simpo_escape` say, in words (`trap` names the β_KD and p'')."""
    if escape.reason:
        return f"SimPO against the trap: not testable here ({escape.reason})."
    g, c = escape.gap, escape.recall_cost
    if not np.isfinite(g.low):
        reading = "no interval, so no reading"
    elif g.low > 0:
        reading = "A-K still leads: SimPO does not escape the trap by dropping the reference"
    elif g.high < 0:
        reading = "K-A overtakes A-K: SimPO escapes the trap and more"
    else:
        reading = ("the interval contains 0: A-K's lead is not established, as an escape would have it, but these "
                   "trials cannot show an escape either")
    if not np.isfinite(c.low):
        cost = "no interval"
    elif c.high < 0:
        cost = "dropping the reference costs recall"
    elif c.low > 0:
        cost = "SimPO's K-A keeps more recall than DPO's"
    else:
        cost = "the interval contains 0: no recall cost is shown"
    return (f"On the {escape.n_trials} trials whose reference lost the target ({trap}): SimPO's A-K − K-A in final "
            f"reward is {format_interval(g.estimate, g.low, g.high)} ({reading}). SimPO's K-A minus on-policy DPO's "
            f"K-A in overall recall is {format_interval(c.estimate, c.low, c.high)} over {escape.n_recall} trials "
            f"({cost}).")


def simpo_claim_rows(escape: Escape, trap: str, chapter: str = CHAPTER, figure: str = "") -> pd.DataFrame:
    """Rows for `alignkd.claims.record`: "the A-K advantage persists under SimPO" (> 0: SimPO does not escape) and
    "dropping the reference costs recall" (< 0), on the trials whose reference lost the target.

    An escape is a gap at or below zero, a claim no interval containing zero can confirm; so the row claims the
    falsifiable side, that A-K's lead persists: "holds" means no escape, "does not hold" means K-A overtook A-K,
    "partly" means these trials cannot tell.
    """
    claims = [
        ("simpo-ak-advantage-persists",
         "SimPO (no reference) does not escape the trap: A-K still ends with a higher final reward than K-A on the "
         "trials whose K-A reference lost the target", SIMPO_PAPER_VALUE, escape.gap, "> 0", escape.n_trials,
         "paired by trial"),
        ("simpo-recall-cost",
         "Dropping the reference costs recall: SimPO's K-A ends with a lower overall recall than on-policy DPO's K-A "
         "on the trials whose reference lost the target", RECALL_PAPER_VALUE, escape.recall_cost, "< 0",
         escape.n_recall, "paired by trial"),
    ]
    rows = []
    for claim_id, claim, paper, interval, claimed, n, how in claims:
        row = dict(chapter=chapter, claim_id=claim_id, claim=claim, paper_value=paper, figure=figure)
        if escape.reason or not (np.isfinite(interval.low) and np.isfinite(interval.high)):
            rows.append({**row, "ours": None, "low": None, "high": None, "verdict": "not testable here",
                         "reason": escape.reason or "the bootstrap gave no finite interval"})
            continue
        verdict, reason = verdict_from_interval(interval.low, interval.high, claimed)
        rows.append({**row, "ours": interval.estimate, "low": interval.low, "high": interval.high, "verdict": verdict,
                     "reason": f"{reason}; {how}, {n} trials whose p'' lost the target at {trap}"})
    return pd.DataFrame(rows)


def lm_comparison_rows(pipelines: pd.DataFrame, pad: list[pd.DataFrame], main_tau: float) -> pd.DataFrame:
    """K-A, A-K and every Align → PAD student in one table, one row per (model, seed), with a `name` column:
    the reference models by their own name (p_target dropped: it is the oracle, not a contender), p'_AK as
    "p'_AK (teacher)", A-K's final model at `main_tau` as "A-K", K-A's as "K-A", PAD students by pipeline."""
    rows = pd.concat([pipelines, *pad], ignore_index=True)
    at_main_tau = (rows.model != "p''_AK") | (rows.final_tau == main_tau)
    rows = rows[(rows.model != "p_target") & at_main_tau]
    rows = rows.assign(name=rows.pipeline.where(rows.pipeline != "reference", rows.model))
    rows.loc[rows.model == "p'_AK", "name"] = "p'_AK (teacher)"
    return rows.reset_index(drop=True)


COMPARED = ["reward", "target_precision", "overall_recall", "overall_precision"]


def lm_comparison_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and seed std of reward, target precision, recall and precision per `name` (`lm_comparison_rows`)."""
    return rows.groupby("name", sort=False)[COMPARED].agg(["mean", "std"])


def lm_verdicts(rows: pd.DataFrame) -> list[str]:
    """One sentence per PAD student: does it escape the low-recall trap (higher reward *and* target
    precision than K-A), and what happened to its recall against A-K, K-A and p''."""
    means = rows.groupby("name")[COMPARED].mean()
    ka, ak, low = means.loc["K-A"], means.loc["A-K"], means.loc["p''"]
    lines = []
    for name in [n for n in means.index if n.startswith("A→PAD")]:
        row = means.loc[name]
        escapes = row.target_precision > ka.target_precision and row.reward > ka.reward
        lines.append(f"{name}: reward {row.reward:.3f} and target precision {row.target_precision:.3f} against K-A's "
                     f"{ka.reward:.3f} / {ka.target_precision:.3f} and A-K's {ak.reward:.3f} / {ak.target_precision:.3f}, "
                     f"so the reference-free student {'escapes' if escapes else 'does not escape'} the low-recall trap "
                     f"here; its recall is {row.overall_recall:.3f} against A-K's {ak.overall_recall:.3f} "
                     f"({row.overall_recall - ak.overall_recall:+.3f}), K-A's {ka.overall_recall:.3f} and p''’s "
                     f"{low.overall_recall:.3f}.")
    return lines


MIN_SEEDS = 3  # the paper's seed count (App. C), and the fewest that give a bootstrap interval a verdict can rest on


def lm_claim_rows(rows: pd.DataFrame, chapter: str = CHAPTER, figure: str = "fig-07-lm",
                      premise=None) -> pd.DataFrame:
    """Rows for `alignkd.claims.record`: per PAD student, "it ends with a higher reward than K-A" on chapter 06's
    language-model testbed, paired by seed (bootstrap 95 % interval; with fewer than `MIN_SEEDS`, not testable).
    `premise`: chapter 06's `PremiseCheck`; when it fails, K-A is no trap to escape and every row is not testable."""
    finals = rows[rows.seed >= 0]
    ka = finals[finals.name == "K-A"].set_index("seed")["reward"]
    out = []
    for number, name in enumerate(n for n in dict.fromkeys(finals.name) if n.startswith("A→PAD")):
        pad = finals[finals.name == name].set_index("seed")["reward"]
        gap, n_pairs = paired_on_index(pad, ka)
        row = dict(chapter=chapter, claim_id=f"lm-escape-{number}", figure=figure,
                   claim=f"{name}: a reference-free student ends with a higher reward than K-A on the language-model "
                         f"testbed (chapter 06's references, paired by seed)",
                   paper_value="not in either paper: this book's question (PAD is reference-free)")
        if premise is not None and not premise.passed:
            out.append({**row, "ours": None, "low": None, "high": None, "verdict": "not testable here",
                        "reason": "the references fail the premise: " + premise.verdict()})
            continue
        if n_pairs < MIN_SEEDS:  # 2 pairs give a bootstrap only 3 distinct means: no interval worth a verdict
            out.append({**row, "ours": gap.estimate if n_pairs else None, "low": None, "high": None,
                        "verdict": "not testable here",
                        "reason": f"{n_pairs} seed(s): a verdict needs an interval over >= {MIN_SEEDS} seeds"})
            continue
        verdict, reason = verdict_from_interval(gap.low, gap.high, "> 0")
        out.append({**row, "ours": gap.estimate, "low": gap.low, "high": gap.high, "verdict": verdict,
                    "reason": f"{reason}; {n_pairs} seeds"})
    return pd.DataFrame(out)


__all__ = ["CHAPTER", "PARAMETER_FUNCTIONS", "pad_variant", "configs", "plackett_luce_table", "plackett_luce_sentence",
           "ranking_cost_table", "Trials", "mog_trials", "mog_note", "mog_title", "mog_paired_gaps_table",
           "LostTrials", "lost_trials", "lost_note", "lost_title", "simpo_on_lost_trials", "LMComparison",
           "lm_pad_configs", "lm_comparison", "lm_premise_pointer", "lm_answer", "mog_summary_table", "mog_verdict",
           "mog_trajectory_table", "mog_answer", "mog_claim_rows", "simpo_sentence", "simpo_claim_rows",
           "lm_comparison_rows", "lm_comparison_table", "lm_verdicts", "lm_claim_rows"]
