"""One vocabulary across the testbeds: cached functions are named so, metric columns carry the paper's names."""

import importlib
import inspect
import pkgutil

import pytest

import alignkd.lm
import alignkd.mog
import alignkd.pad

EXEMPT = {
    "alignkd.lm.premise.training_curve": "reads a student's log from the store and computes nothing, so caches nothing",
}
OLD_METRIC_NAMES = {"recall", "precision", "target_mass", "share"}


def _modules():
    for package in (alignkd.mog, alignkd.lm, alignkd.pad):
        yield package
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            yield importlib.import_module(info.name)


def _functions():
    for module in _modules():
        for name, function in vars(module).items():
            if inspect.isfunction(function) and function.__module__ == module.__name__:
                yield f"{module.__name__}.{name}", name, function


def _first_parameter(function) -> str | None:
    parameters = list(inspect.signature(function).parameters)
    return parameters[0] if parameters else None


def test_functions_taking_a_store_first_are_cached_or_record():
    wrong = [path for path, name, function in _functions()
             if not name.startswith("_") and _first_parameter(function) == "store"
             and not name.startswith(("cached_", "record_")) and path not in EXEMPT]
    assert wrong == []


def test_cached_functions_take_a_store_first():
    wrong = [path for path, name, function in _functions()
             if name.lstrip("_").startswith("cached_") and _first_parameter(function) != "store"]
    assert wrong == []


def test_exemptions_still_exist():
    found = {path for path, _, _ in _functions()}
    assert set(EXEMPT) <= found


def test_lm_column_constants_use_the_paper_names():
    from alignkd.chapters import ch07_pad
    from alignkd.lm import smollm2, studies, summary

    for columns in (summary.FINAL_COLUMNS, smollm2.COLUMNS, studies.SWEEP_COLUMNS, ch07_pad.COMPARED,
                    inspect.signature(summary.summarise).parameters["columns"].default):
        assert not OLD_METRIC_NAMES & set(columns), columns


def test_an_lm_metrics_row_uses_the_paper_names():
    torch = pytest.importorskip("torch")
    from alignkd.lm.groundtruth import markov_mixture
    from alignkd.lm.metrics import MetricConfig, evaluate
    from alignkd.lm.premise import topic_shares

    torch.manual_seed(0)
    p_star = markov_mixture()
    target = p_star.restrict([2])
    row = evaluate(p_star, p_star=p_star, p_target=target, recall_samples=p_star.sample(20, 6, seed=1),
                   config=MetricConfig(n_samples=20, max_new_tokens=6), target_topic=2)
    assert {"overall_precision", "overall_recall", "target_precision", "response_length", "target_share"} <= set(row)
    assert not OLD_METRIC_NAMES & set(row)
    shares = topic_shares({"p*": p_star}, p_star, 2, n_samples=20, max_new_tokens=6)
    assert "target_share" in shares.columns and not OLD_METRIC_NAMES & set(shares.columns)
