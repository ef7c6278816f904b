"""What the book records about how each page was made, and how executed notebooks are made to read as pages."""

import json
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from alignkd import book, claims, provenance
from alignkd.cache import CACHE_LOG_ENV, ResultStore

PARAMETERS = 'profile = "default"  # one of: quick, default, paper\nbetas = [0.5,\n         1.0]  # each > 0; β grid\nseed = 0\n'


def test_effective_parameters_keep_specs_and_join_multiline_values():
    text = book.effective_parameters(PARAMETERS, {"profile": "quick", "betas": [0.1]})
    assert text.splitlines() == ['profile = "quick"  # one of: quick, default, paper',
                                 "betas = [0.1]  # each > 0; β grid", "seed = 0"]


def _executed():
    code = nbformat.v4.new_code_cell
    cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        code(PARAMETERS, metadata={"tags": ["parameters"]}),
        code('profile = "quick"\n', metadata={"tags": ["injected-parameters"]}),
        code("import x", outputs=[nbformat.v4.new_output("stream", name="stderr", text="100%|####|"),
                                  nbformat.v4.new_output("stream", name="stdout", text="kept")]),
        code("table", metadata={"tags": ["show-input"]}),
        code("setup()", metadata={"tags": ["remove-cell"]}),
        code("bar", outputs=[nbformat.v4.new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "m"}, "text/plain": "HBox()"})]),
    ]
    return nbformat.v4.new_notebook(cells=cells)


def test_present_hides_plumbing_shows_parameters_once_and_drops_noise():
    notebook = _executed()
    book.present(notebook, {"profile": "quick", "betas": [0.5, 1.0], "seed": 0})
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert len(code) == 5  # the injected-parameters cell is gone
    parameters = code[0]
    assert parameters.metadata.tags == ["parameters", "hide-input"]
    assert parameters.source.startswith('profile = "quick"  # one of')
    assert parameters.metadata["mystnb"]["code_prompt_show"] == "Show the parameters this page was made with (profile quick)"
    assert code[1].metadata.tags == ["hide-input"]
    assert [o.text for o in code[1].outputs] == ["kept"]
    assert code[2].metadata.tags == ["show-input"] and code[3].metadata.tags == ["remove-cell"]
    assert code[4].outputs == []


def test_modules_used_resolve_submodules_imported_from_packages():
    source = ("from alignkd import theory\nfrom alignkd.pad import losses\n"
              "from alignkd.mog.pipelines import (Setup,\n    Sweep)\n    from alignkd.cache import ResultStore\n"
              "import alignkd.lm.kd\n")
    assert provenance.modules_used(source) == ["alignkd.cache", "alignkd.lm.kd", "alignkd.mog.pipelines",
                                               "alignkd.pad.losses", "alignkd.theory"]


def test_the_cache_log_tells_reused_from_computed(tmp_path, monkeypatch):
    log = tmp_path / "cache.jsonl"
    monkeypatch.setenv(CACHE_LOG_ENV, str(log))
    store = ResultStore("quick", root=tmp_path / "results")
    for _ in range(3):
        store.frame("metrics", {"n": 1}, lambda: pd.DataFrame({"a": [1]}))
    store.directory("models", {"n": 1}, lambda path: (path / "w.txt").write_text("w"))
    store.directory("models", {"n": 1}, lambda path: (path / "w.txt").write_text("w"))
    store.frame("metrics", {"n": 2}, lambda: pd.DataFrame({"a": [2]}))
    earlier = ResultStore("quick", root=tmp_path / "results")  # e.g. a worker process, or an earlier build
    monkeypatch.delenv(CACHE_LOG_ENV)
    earlier.frame("metrics", {"n": 3}, lambda: pd.DataFrame({"a": [3]}))
    monkeypatch.setenv(CACHE_LOG_ENV, str(log))
    store.frame("metrics", {"n": 3}, lambda: pd.DataFrame({"a": [3]}))
    use = provenance.cache_use(log)
    # distinct results: n=1 and n=2 were computed during the run (read again: still computed), n=3 before it
    assert use == {"reused": {"metrics": 1}, "computed": {"metrics": 2, "models": 1}}
    assert provenance.cache_text(use) == ("1 reused from the cache (`metrics`); "
                                          "3 computed and stored (`metrics` ×2, `models`)")
    monkeypatch.delenv(CACHE_LOG_ENV)
    store.frame("metrics", {"n": 1}, lambda: pd.DataFrame({"a": [1]}))
    assert len(log.read_text().splitlines()) == 10  # no log asked for, none written (3 builds add a line each)


def _burn(seconds: float) -> None:
    import time

    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_cache_log_counts_each_builds_own_cpu_once(tmp_path, monkeypatch):
    """A study's table that builds a model inside its own compute is charged only for its own work."""
    log = tmp_path / "cache.jsonl"
    monkeypatch.setenv(CACHE_LOG_ENV, str(log))
    store = ResultStore("quick", root=tmp_path / "results")

    def study() -> pd.DataFrame:
        store.directory("models", {"n": 1}, lambda path: _burn(0.3))
        _burn(0.1)
        return pd.DataFrame({"a": [1]})

    store.frame("study", {"n": 1}, study)
    store.frame("study", {"n": 1}, study)  # read back: nothing built, nothing charged
    with store.charged("models"):  # e.g. seeds trained together, each stored afterwards
        _burn(0.2)
    seconds = provenance.build_seconds(log)
    assert list(seconds) == ["models", "study"]
    assert 0.5 <= seconds["models"] < 0.7 and 0.1 <= seconds["study"] < 0.2
    assert provenance.cache_use(log)["computed"] == {"models": 1, "study": 1}  # a charge is not a result
    assert provenance.build_text({"lm_student": 420.4, "lm_aligned": 1300.0}) == \
        "lm_student 420 s, lm_aligned 1,300 s (total 1,720 s)"
    assert provenance.build_text({}) == "nothing built"


def test_footer_names_every_fact_and_carries_the_source():
    record = {"profile": "quick", "parameters": {"betas": [0.5]}, "modules": ["alignkd.theory"],
              "commit": "abc123", "library": "f" * 64, "machine": {"cpu": "CPU X", "cores": 2, "torch": "2.13.0",
                                                                     "threads": 2, "gpu": None, "python": "3.11.7"},
              "executed_at": "2026-11-24 12:00 UTC", "seconds": 4.25, "cache": {"reused": {}, "computed": {}}}
    text = provenance.footer(record, "01_theory.md", b"# source")
    for fact in ("`quick`", "`betas = [0.5]`", "{py:mod}`alignkd.theory`", "`abc123`", "sha256:ffffffffffffffff",
                 "CPU X, 2 logical cores", "no GPU", "in 4.2 s", "none stored", 'download="01_theory.md"',
                 "data:text/markdown;base64,IyBzb3VyY2U="):
        assert fact in text, fact
    assert "cells of" not in text  # no cell ran long
    record["cells"] = [{"cell": 4, "first_line": "refs = cached_references(store, config)", "wall_seconds": 164.2,
                        "cpu_seconds": 1142.0}, {"cell": 5, "first_line": "x = 1", "wall_seconds": 2.0,
                                                 "cpu_seconds": 0.0}]
    text = provenance.footer(record, "01_theory.md", b"# source")
    assert "| cells of 10 s or more | 4 (`refs = cached_references(store, config)`…): 164 s, 1,142 build CPU s |" in text


def test_figure_data_offers_the_frame_as_csv():
    html = book.figure_data(pd.DataFrame({"beta": [0.5], "reward": [1.25]}), "fig-03-ppo").data
    assert 'download="fig-03-ppo.csv"' in html
    import base64
    encoded = html.split("base64,", 1)[1].split('"', 1)[0]
    assert base64.b64decode(encoded).decode() == "beta,reward\n0.5,1.25\n"
    with pytest.raises(ValueError, match="plain file stem"):
        book.figure_data(pd.DataFrame(), "a/b")


def _row(**changes):
    row = dict(chapter="03_mog_alignment", claim_id="ppo", claim="PPO: A-K | K-A", paper_value="A-K > K-A",
               ours=0.25, low=0.1, high=0.4, verdict="holds", reason="", figure="fig-03-ppo")
    row.update(changes)
    return claims.make_row(**row)


def test_claims_page_links_figures_and_names_chapters_without_claims():
    table = pd.DataFrame([_row(), _row(claim_id="dpo", ours=None, low=None, high=None, figure="",
                                       verdict="not testable here", reason="needs a GPU")], columns=claims.COLUMNS)
    titles = {"01_theory": "Theory", "03_mog_alignment": "MoG alignment"}
    page = claims.page(table, titles, {"fig-03-ppo": "03_mog_alignment"}, "quick")
    assert "| PPO: A-K \\| K-A ({numref}`fig-03-ppo`) | A-K > K-A | 0.25 [0.1, 0.4] | **holds** |" in page
    assert "| — | **not testable here**: needs a GPU |" in page
    assert "Of 2 claims: 1 holds, 1 not testable here." in page
    assert page.split("## Chapters that recorded no claims", 1)[1].count("{doc}`../chapters/01_theory`") == 1
    with pytest.raises(ValueError, match="names figure 'fig-03-ppo', which no chapter shows"):
        claims.page(table, titles, {}, "quick")
    empty = claims.page(pd.DataFrame(columns=claims.COLUMNS), titles, {}, "quick")
    assert "No chapter recorded a claim in this build." in empty and "{doc}`../chapters/03_mog_alignment`" in empty


def test_claims_summary_lands_beside_the_chapter_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKD_RESULTS", str(tmp_path))
    monkeypatch.delenv(claims.CLAIMS_DIR_ENV, raising=False)
    path = claims.write_summary(pd.DataFrame([_row()], columns=claims.COLUMNS), "quick")
    assert path == tmp_path / "quick" / "claims.csv"
    assert pd.read_csv(path).claim_id.tolist() == ["ppo"]


def test_api_reference_covers_every_library_module(tmp_path):
    page = book.write_api_page(tmp_path).read_text()
    for module in ("alignkd.theory", "alignkd.mog.ppo", "alignkd.lm.experiments", "alignkd.pad.losses", "alignkd.claims"):
        assert f"```{{eval-rst}}\n.. automodule:: {module}\n   :members:\n```" in page
    assert "alignkd.__main__" not in page


def test_a_one_off_run_prints_no_kernel_noise(tmp_path):
    done = subprocess.run([sys.executable, "-m", "alignkd", "run", "01", "--profile", "quick", "-o",
                           str(tmp_path / "01.ipynb")], capture_output=True, text=True, check=True)
    assert "without encryption" not in done.stderr + done.stdout
    executed = nbformat.read(tmp_path / "01.ipynb", as_version=4)
    assert json.dumps(executed.metadata[book.PROVENANCE_KEY]["parameters"]) == '{"profile": "quick"}'
    assert executed.cells[-1].source.startswith("## Provenance")


def test_cell_costs_charge_each_build_to_the_cell_that_ran_when_it_ended(tmp_path):
    import nbformat

    def cell(source, start, seconds, tags=()):
        c = nbformat.v4.new_code_cell(source)
        c.metadata["papermill"] = {"start_time": f"2026-12-03T10:00:{start:02d}+00:00", "duration": seconds,
                                   "end_time": f"2026-12-03T10:00:{start + seconds:02d}+00:00"}
        c.metadata["tags"] = list(tags)
        return c

    notebook = nbformat.v4.new_notebook(cells=[
        cell("profile = 'x'", 0, 0, tags=["injected-parameters"]), nbformat.v4.new_markdown_cell("prose"),
        cell("# a comment first\nrefs = build()", 0, 10), cell("tiny = 1", 10, 0), cell("runs = align(refs)", 10, 20)])
    t0 = 1796292000.0  # 2026-12-03 10:00:00 UTC
    log = tmp_path / "cache.jsonl"
    log.write_text("\n".join(json.dumps(e) for e in [
        {"result": "lm_student", "file": "a", "reused": False, "at": t0 + 4, "cpu_seconds": 3.0},
        {"result": "lm_student", "file": "b", "reused": False, "at": t0 + 9, "cpu_seconds": 5.0},
        {"result": "lm_aligned", "file": "c", "reused": False, "at": t0 + 25, "cpu_seconds": 30.0},
        {"result": "lm_aligned", "file": "c", "reused": True, "at": t0 + 26},  # a read: no CPU
        {"result": "lm_kd_data", "file": "d", "reused": False, "cpu_seconds": 7.0}]))  # an older log: no time
    rows = provenance.cell_costs(notebook, log)
    assert rows == [{"cell": 1, "first_line": "refs = build()", "wall_seconds": 10, "cpu_seconds": 8.0},
                    {"cell": 3, "first_line": "runs = align(refs)", "wall_seconds": 20, "cpu_seconds": 30.0}]
    assert "1.5 cores" in provenance.cells_text(rows) and "0.8 cores" in provenance.cells_text(rows)
