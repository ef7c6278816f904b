"""Recording the paper's claims: validated rows, one file per chapter, replaced by id, verdicts from intervals."""

import math

import pandas as pd
import pytest

from alignkd import claims
from alignkd.cache import ResultStore


@pytest.fixture(autouse=True)
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKD_RESULTS", str(tmp_path))
    monkeypatch.delenv(claims.CLAIMS_DIR_ENV, raising=False)
    return tmp_path


def _ppo(**changes):
    row = dict(chapter="03_mog_alignment", claim_id="ppo-reward", claim="PPO: A-K reward above K-A",
               paper_value="A-K > K-A", ours=0.25, low=0.1, high=0.4, verdict="holds", figure="fig-03-ppo")
    row.update(changes)
    return row


def test_record_writes_one_row_per_claim_and_replaces_by_id(results):
    path = claims.record("quick", **_ppo())
    assert path == results / "quick" / "claims" / "03_mog_alignment.csv"
    claims.record("quick", **_ppo(claim_id="ppo-precision", ours=-0.1, low=-0.3, high=0.1, verdict="partly",
                                  reason="interval contains 0"))
    claims.record("quick", **_ppo(ours=0.5, low=0.45, high=0.55))  # the same id again: replaced, not appended
    table = claims.load("quick")
    assert list(table.claim_id) == ["ppo-precision", "ppo-reward"]
    assert table.set_index("claim_id").loc["ppo-reward", ["ours", "low", "high"]].tolist() == [0.5, 0.45, 0.55]
    assert list(table.columns) == claims.COLUMNS
    assert not list((results / "quick" / "claims").glob("*.tmp"))


def test_a_result_store_and_its_profile_name_write_the_same_file(results):
    store = ResultStore("quick")
    assert claims.record(store, **_ppo()) == claims.record("quick", **_ppo())
    assert claims.claims_dir(ResultStore("x", root=results / "elsewhere")) == results / "elsewhere" / "claims"


def test_not_testable_rows_keep_no_number_and_read_back_as_nan(results):
    claims.record("quick", chapter="06_llm", claim_id="app-d", claim="App. D at 1.7B scale",
                  paper_value=0.42, ours=None, verdict="not testable here", reason="needs a GPU and hub weights")
    row = claims.load("quick").iloc[0]
    assert math.isnan(row.ours) and math.isnan(row.low) and row.paper_value == "0.42" and row.figure == ""
    assert row.reason == "needs a GPU and hub weights"


@pytest.mark.parametrize("changes, message", [
    (dict(verdict="yes"), "verdict = 'yes': must be one of holds, partly, does not hold, not testable here"),
    (dict(verdict="partly"), "reason must not be empty"),
    (dict(chapter="mog"), "chapter = 'mog'"),
    (dict(claim_id="a b"), "claim_id = 'a b'"),
    (dict(low=0.3), "need low <= ours <= high"),
    (dict(high=None), "both ends of the interval or neither"),
    (dict(ours=None, low=None, high=None), "only with verdict 'not testable here'"),
    (dict(ours=float("inf")), "ours = inf"),
    (dict(ours=True), "ours = True"),
    (dict(figure="Figure 3"), "figure = 'Figure 3'"),
    (dict(claim=" "), "claim must not be empty"),
])
def test_bad_rows_fail_naming_the_field_and_write_nothing(results, changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        claims.record("quick", **_ppo(**changes))
    assert not (results / "quick" / "claims").exists()


def test_clear_and_load_in_chapter_order(results):
    claims.record("quick", **_ppo(chapter="04_mog_multi_target"))
    claims.record("quick", **_ppo())
    assert list(claims.load("quick").chapter) == ["03_mog_alignment", "04_mog_multi_target"]
    assert list(claims.load("quick", ["04_mog_multi_target", "03_mog_alignment"]).chapter) == \
        ["04_mog_multi_target", "03_mog_alignment"]
    claims.clear("quick", "03_mog_alignment")
    assert list(claims.load("quick").chapter) == ["04_mog_multi_target"]
    assert claims.load("empty").empty


def test_claims_dir_env_redirects_one_off_runs(results, monkeypatch):
    monkeypatch.setenv(claims.CLAIMS_DIR_ENV, str(results / "run"))
    assert claims.record("quick", **_ppo()) == results / "run" / "03_mog_alignment.csv"


def test_multiline_text_is_kept_on_one_line(results):
    claims.record("quick", **_ppo(claim="PPO:\n  A-K,  reward", reason="a, b"))
    text = (results / "quick" / "claims" / "03_mog_alignment.csv").read_text()
    assert len(text.strip().splitlines()) == 2
    assert claims.load("quick").claim.iloc[0] == "PPO: A-K, reward"


@pytest.mark.parametrize("low, high, claimed, verdict", [
    (0.1, 0.4, "> 0", "holds"),
    (-0.4, -0.1, "> 0", "does not hold"),
    (-0.1, 0.4, "> 0", "partly"),
    (-0.4, -0.1, "< 0", "holds"),
    (0.55, 0.7, "< 0.5", "does not hold"),
    (0.0, 0.4, "> 0", "partly"),  # touching the bound is not clearing it
])
def test_verdict_from_interval(low, high, claimed, verdict):
    got, reason = claims.verdict_from_interval(low, high, claimed)
    assert got == verdict
    assert f"[{low:.3g}, {high:.3g}]" in reason


def test_verdict_from_interval_rejects_bad_input():
    with pytest.raises(ValueError, match="claimed = '>= 0'"):
        claims.verdict_from_interval(0.0, 1.0, ">= 0")
    with pytest.raises(ValueError, match="low <= high"):
        claims.verdict_from_interval(1.0, 0.0)


def test_verdict_from_settings():
    assert claims.verdict_from_settings(["holds"] * 3) == ("holds", "holds in 3 of 3 settings")
    assert claims.verdict_from_settings(["holds", "partly", "does not hold"], "β values") == \
        ("partly", "holds in 1 of 3 β values, partly in 1, does not hold in 1")
    assert claims.verdict_from_settings(["partly", "does not hold"])[0] == "does not hold"
    assert claims.verdict_from_settings(["partly", "partly"])[0] == "partly"
    assert claims.verdict_from_settings(["not testable here"])[0] == "not testable here"
    with pytest.raises(ValueError, match="unknown verdicts"):
        claims.verdict_from_settings(["maybe"])


def test_loaded_table_is_a_plain_frame_of_the_columns(results):
    claims.record("quick", **_ppo())
    table = claims.load("quick")
    assert isinstance(table, pd.DataFrame) and table.verdict.tolist() == ["holds"]


def _table():
    rows = [claims.make_row(**_ppo()),
            claims.make_row(**_ppo(claim_id="dpo-reward", ours=-0.2, low=-0.5, high=0.05, verdict="does not hold",
                                   reason="the interval holds 0")),
            claims.make_row(**_ppo(chapter="06_llm", claim_id="app-d", ours=None, low=None, high=None,
                                   verdict="not testable here", reason="needs a GPU", figure="")),
            claims.make_row(**_ppo(chapter="06_llm", claim_id="kl", ours=3.0, low=1.0, high=30.0, verdict="partly",
                                   reason="one of two settings", figure=""))]
    return pd.DataFrame(rows, columns=claims.COLUMNS)


def test_the_forest_plot_shows_every_interval_by_chapter_coloured_by_verdict():
    import matplotlib.colors as colors

    table = _table()
    rows = claims.forest_rows(table)
    assert list(rows["claim_id"]) == ["ppo-reward", "dpo-reward", "kl"]  # the claim without an interval is left out
    assert list(rows["y"]) == [0.0, 1.0, 3.0]  # a blank row between chapters
    fig = claims.forest_figure(table)
    ax = fig.axes[0]
    intervals = [line for line in ax.lines if len(line.get_xdata()) == 2 and line.get_xdata()[0] != line.get_xdata()[1]]
    drawn = sorted((tuple(line.get_xdata()), colors.to_hex(line.get_color())) for line in intervals)
    assert drawn == sorted([((0.1, 0.4), claims.VERDICT_COLOURS["holds"]),
                            ((-0.5, 0.05), claims.VERDICT_COLOURS["does not hold"]),
                            ((1.0, 30.0), claims.VERDICT_COLOURS["partly"])])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["03 ppo-reward", "03 dpo-reward", "06 kl"]
    assert ax.get_xscale() == "symlog"


def test_the_claims_page_opens_with_the_forest_plot():
    table = _table()
    text = claims.page(table, {"03_mog_alignment": "MoG", "06_llm": "LLM"}, {"fig-03-ppo": "03_mog_alignment"},
                       "quick", forest=claims.FOREST_FILE)
    assert text.index("```{image} claims_forest.png") < text.index("## MoG")
    assert "the 3 claims with a 95 % interval" in text and "1 claim has no interval and appears only in the tables below" in text
    assert "{image}" not in claims.page(table, {"03_mog_alignment": "MoG", "06_llm": "LLM"},
                                         {"fig-03-ppo": "03_mog_alignment"}, "quick")
