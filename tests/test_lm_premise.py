"""The premise check: target shares measured on each model's own samples, and the rule's verdict."""

import math

import pytest

from alignkd.lm.groundtruth import markov_mixture
from alignkd.lm.premise import PremiseRule, premise_check, topic_shares, wilson_interval


@pytest.fixture(scope="module")
def language():
    return markov_mixture(topic_markers=2)  # SPEC §4's language, the topic decided at the first token


def test_wilson_interval_closed_forms():
    z2 = 1.959964 ** 2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    low, high = wilson_interval(5, 10)
    assert (low + high) / 2 == pytest.approx(0.5) and high - low == pytest.approx(0.52684, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_premise_passes_when_the_high_recall_model_is_p_star_and_the_low_recall_one_lacks_the_topic(language):
    models = {"p*": language, "p'": language, "p''": language.restrict(list(range(7)))}
    check = premise_check(models, language, 7, PremiseRule(max_new_tokens=12))
    shares = check.shares.set_index("model")
    assert shares.loc["p*", "target_share"] == pytest.approx(float(language.weights[7]), abs=0.006)
    assert shares.loc["p*", "n"] == 10000 and shares.loc["p*", "ratio"] == 1.0
    assert check.ratio("p'") == 1.0  # same model, same seed: the same samples
    assert check.share("p''") < 0.001  # only smoothing can open a sequence with the target's words
    assert check.kept and check.pruned and check.passed
    assert check.verdict().startswith("PREMISE PASSES") and "p' keeps 100% (≥ 75%)" in check.verdict()
    low, high = shares.loc["p*", "low"], shares.loc["p*", "high"]
    assert low < shares.loc["p*", "target_share"] < high and high - low < 2 * 1.96 * math.sqrt(0.04 / 10000) + 1e-3


def test_premise_fails_and_says_why_when_the_low_recall_model_kept_the_topic(language):
    models = {"p*": language, "p'": language, "p''": language}
    check = premise_check(models, language, 7, PremiseRule(max_new_tokens=12))
    assert check.kept and not check.pruned and not check.passed
    assert check.verdict().startswith("PREMISE FAILS: p'' did not lose the target")
    models["p'"] = language.restrict(list(range(7)))
    assert "p' did not keep the target" in premise_check(models, language, 7, PremiseRule(max_new_tokens=12)).verdict()


def test_premise_rule_and_inputs_are_checked_before_sampling(language):
    with pytest.raises(ValueError, match="n_samples"):
        PremiseRule(n_samples=5000)  # the rule measures on at least 10k samples
    with pytest.raises(ValueError, match="prune_to_at_most"):
        PremiseRule(keep_at_least=0.2, prune_to_at_most=0.25)
    with pytest.raises(ValueError, match="missing"):
        premise_check({"p*": language}, language, 7)
    table = topic_shares({"a": language}, language, 7, n_samples=200, max_new_tokens=6)
    assert math.isnan(table["ratio"].iloc[0])  # no p* to compare with
    assert 1 <= table["mean_length"].iloc[0] <= 6


def test_premise_check_is_cached_by_recipes_and_rule(language, tmp_path):
    from alignkd.cache import ResultStore
    from alignkd.lm.premise import cached_premise_check

    store = ResultStore("test", root=tmp_path)
    models = {"p*": language, "p'": language, "p''": language.restrict(list(range(7)))}
    recipes = {"p*": "gt", "p'": "high", "p''": "low"}
    rule = PremiseRule(max_new_tokens=8)
    first = cached_premise_check(store, models, recipes, language, 7, rule)
    assert first.shares.equals(premise_check(models, language, 7, rule).shares)  # the uncached check's numbers
    models["p''"] = language  # same recipes: the cached shares are read back, not re-measured
    again = cached_premise_check(store, models, recipes, language, 7, rule)
    assert again.shares.equals(first.shares) and again.passed
    assert not cached_premise_check(store, models, {**recipes, "p''": "other"}, language, 7, rule).passed
    # one entry per model: another p'' re-measures p'' alone
    assert len(list((tmp_path / "lm_topic_share").glob("*.parquet"))) == 4


def test_premise_figure_draws_curves_and_shares(language):
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from alignkd.lm.premise import premise_figure

    models = {"p*": language, "p'": language, "p''": language.restrict(list(range(7)))}
    check = premise_check(models, language, 7, PremiseRule(max_new_tokens=8))
    log = pd.DataFrame({"step": [0, 1, 2], "epoch": [1.0, 2.0, 2.5], "phase": ["stable", "stable", "decay"],
                        "loss": [3.0, 2.9, 2.8], "lr": [1e-3, 1e-3, 0.0], "eval_loss": [3.1, 3.0, 2.9]})
    fig = premise_figure(check, {"p'": log, "p''": log})
    left, right = fig.axes
    assert len(left.lines) == 4 and len(right.patches) == 3
    assert fig.get_size_inches()[0] <= 7
