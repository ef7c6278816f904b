"""Chapters executed side by side: `after:` order, one thread each, and a failure that stops the build."""

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from alignkd import book, provenance
from alignkd.parameters import ParameterError, load_chapter

HEADER = ("---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
          "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n{after}---\n\n# {title}\n\n"
          "```{{code-cell}} ipython3\n:tags: [parameters]\nprofile = \"quick\"  # one of: quick, default, paper\n```\n\n")


def toy_chapter(folder: Path, name: str, body: str, after: list[str] = ()) -> Path:
    """A chapter whose one cell logs its start, runs `body`, and logs its end and its thread limit."""
    front = f"alignkd:\n  after: [{', '.join(after)}]\n" if after else ""
    log = folder / "log.jsonl"
    cell = ("import json, os, time\n"
            f"with open({str(log)!r}, 'a') as f: f.write(json.dumps({{'chapter': {name!r}, 'event': 'start', "
            "'t': time.time()}) + '\\n')\n"
            f"{body}\n"
            f"with open({str(log)!r}, 'a') as f: f.write(json.dumps({{'chapter': {name!r}, 'event': 'end', "
            "'t': time.time(), 'threads': os.environ.get('OMP_NUM_THREADS')}) + '\\n')\n")
    path = folder / f"{name}.md"
    path.write_text(HEADER.format(after=front, title=name) + f"```{{code-cell}} ipython3\n{cell}```\n")
    return path


@pytest.fixture
def toy_book(tmp_path, monkeypatch):
    """Three toy chapters: b waits on a (`after:`), c waits on nothing; each sleeps 1.5 s."""
    sources = tmp_path / "notebooks"
    sources.mkdir()
    for name, after in (("91_a", []), ("92_b", ["91_a"]), ("93_c", [])):
        toy_chapter(sources, name, "time.sleep(1.5)", after)
    toys = {p.stem: load_chapter(p) for p in sorted(sources.glob("*.md"))}
    monkeypatch.setenv("ALIGNKD_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(book, "chapters", lambda: toys)
    monkeypatch.setattr(book, "preflight", lambda profile, overrides=None: {name: {"profile": "quick"} for name in toys})
    return tmp_path, sources


def events(folder: Path) -> dict[tuple[str, str], dict]:
    rows = [json.loads(line) for line in (folder / "notebooks" / "log.jsonl").read_text().splitlines()]
    return {(row["chapter"], row["event"]): row for row in rows}


def test_chapters_run_side_by_side_after_what_they_read(toy_book, capsys):
    root, _ = toy_book
    report = book.execute_profile("quick", book_root=root, jobs=2)
    log = events(root)
    assert [status for _, status, _ in report] == ["ran", "ran", "ran"]
    assert log[("92_b", "start")]["t"] >= log[("91_a", "end")]["t"]  # b reads a's results: it waits
    assert log[("93_c", "start")]["t"] < log[("91_a", "end")]["t"]  # c reads nothing: it runs beside a
    expected = str(max(1, provenance.available_cores() // 2))
    assert {row["threads"] for (_, event), row in log.items() if event == "end"} == {expected}
    terminal = capsys.readouterr().out.splitlines()
    assert len([line for line in terminal if "executing" in line]) == 3
    assert len([line for line in terminal if "done in" in line]) == 3
    assert all((root / "book" / "chapters" / f"{name}.ipynb").exists() for name in ("91_a", "92_b", "93_c"))
    # unchanged chapters are not executed again, whatever the number of jobs
    assert {status for _, status, _ in book.execute_profile("quick", book_root=root, jobs=2)} == {"cached"}


def test_the_longest_lane_starts_first(toy_book, monkeypatch):
    """Chapter 06 started 42 s late from empty results: nothing said it was long, and chapter 02 (most chapters
    wait on it) went first."""
    root, sources = toy_book
    toy_chapter(sources, "94_d", "time.sleep(1.5)")
    toys = {p.stem: load_chapter(p) for p in sorted(sources.glob("*.md"))}
    monkeypatch.setattr(book, "chapters", lambda: toys)
    monkeypatch.setattr(book, "preflight", lambda profile, overrides=None: {name: {"profile": "quick"} for name in toys})
    estimates = {"91_a": 0.0, "92_b": 0.0, "93_c": 0.0, "94_d": 100.0}  # as chapter 06's cost model predicts it
    monkeypatch.setattr(book, "_estimated_seconds", lambda name, values, page: estimates[name])
    book.execute_profile("quick", book_root=root, jobs=2)
    log = events(root)
    assert log[("94_d", "start")]["t"] < log[("93_c", "start")]["t"]  # in book order, c would have gone before d
    assert log[("94_d", "start")]["t"] < log[("91_a", "end")]["t"]


def test_a_chapters_estimate_is_its_last_time_else_its_cost_models_prediction(tmp_path):
    from alignkd.chapters import predicted_seconds
    from alignkd.parameters import preflight

    values = preflight("quick")
    assert book._estimated_seconds("05_mog_coverage", values["05_mog_coverage"], tmp_path / "none.ipynb") == 0.0
    predicted = book._estimated_seconds("06_llm", values["06_llm"], tmp_path / "none.ipynb")
    assert predicted == predicted_seconds("06_llm", values["06_llm"]) > 0


def test_one_job_runs_in_book_order_in_this_process(toy_book):
    root, _ = toy_book
    book.execute_profile("quick", book_root=root, jobs=1)
    log = events(root)
    starts = sorted((row["t"], chapter) for (chapter, event), row in log.items() if event == "start")
    assert [chapter for _, chapter in starts] == ["91_a", "92_b", "93_c"]
    assert {row["threads"] for (_, event), row in log.items() if event == "end"} == {os.environ.get("OMP_NUM_THREADS")}


def test_a_failing_chapter_stops_what_waits_on_it_and_raises(toy_book, monkeypatch):
    root, sources = toy_book
    toy_chapter(sources, "91_a", "raise RuntimeError('boom')")
    toys = {p.stem: load_chapter(p) for p in sorted(sources.glob("*.md"))}
    monkeypatch.setattr(book, "chapters", lambda: toys)
    started = time.time()
    with pytest.raises(Exception, match="boom"):
        book.execute_profile("quick", book_root=root, jobs=2)
    log = events(root)
    assert ("92_b", "start") not in log  # it would read a's missing results
    assert log[("93_c", "end")]["t"] > started  # already running beside a: it finishes, and its page is kept
    assert not (root / "book" / "chapters" / "91_a.ipynb").exists()


def test_after_may_name_only_earlier_chapters(tmp_path):
    from alignkd.parameters import chapters

    toy_chapter(tmp_path, "91_a", "pass", ["92_b"])
    toy_chapter(tmp_path, "92_b", "pass")
    with pytest.raises(ValueError, match=r"may name only earlier chapters"):
        chapters(tmp_path)


def test_a_chapter_waiting_on_a_milestone_starts_once_that_cell_ran(tmp_path, monkeypatch):
    """Chapter 07 reads chapter 06's results up to its pipelines only; it used to wait for the whole of 06 and then
    ran alone on one core at the end of the book."""
    sources = tmp_path / "notebooks"
    sources.mkdir()
    path = toy_chapter(sources, "91_a", "time.sleep(0.5)")
    log = sources / "log.jsonl"
    later = ("import json, time\ntime.sleep(6)\n"
             f"with open({str(log)!r}, 'a') as f: f.write(json.dumps({{'chapter': '91_a', 'event': 'last', "
             "'t': time.time()}) + '\\n')\n")
    text = path.read_text().replace("```{code-cell} ipython3\nimport", "```{code-cell} ipython3\n:tags: [milestone-ready]\n\nimport")
    path.write_text(text + f"\n```{{code-cell}} ipython3\n{later}```\n")
    toy_chapter(sources, "92_b", "pass", ["'91_a:ready'"])
    toys = {p.stem: load_chapter(p) for p in sorted(sources.glob("*.md"))}
    assert toys["91_a"].milestones == ("ready",) and toys["92_b"].waits_on == [("91_a", "ready")]
    monkeypatch.setenv("ALIGNKD_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(book, "chapters", lambda: toys)
    monkeypatch.setattr(book, "preflight", lambda profile, overrides=None: {name: {"profile": "quick"} for name in toys})
    book.execute_profile("quick", book_root=tmp_path, jobs=2)
    rows = events(tmp_path)
    assert rows[("91_a", "end")]["t"] <= rows[("92_b", "start")]["t"] < rows[("91_a", "last")]["t"]


def test_after_names_only_milestones_that_exist(tmp_path):
    from alignkd.parameters import chapters

    toy_chapter(tmp_path, "91_a", "pass")
    toy_chapter(tmp_path, "92_b", "pass", ["'91_a:nowhere'"])
    with pytest.raises(ValueError, match=r"91_a has no cell tagged 'milestone-nowhere'"):
        chapters(tmp_path)


@pytest.mark.parametrize("jobs", [0, -1])
def test_jobs_must_be_positive(toy_book, jobs):
    root, _ = toy_book
    with pytest.raises(ParameterError, match="jobs"):
        book.execute_profile("quick", book_root=root, jobs=jobs)


def test_live_lines_show_each_running_chapter_cell_and_computation(tmp_path):
    """What `make book` keeps on the terminal while chapters run (before: nothing for the 19 minutes of 06)."""
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    (tmp_path / "06_llm.cell").write_text("14 35")
    (tmp_path / "06_llm.cache.jsonl").write_text(
        json.dumps({"result": "lm_kd_data", "file": "a", "reused": True}) + "\n"
        + json.dumps({"result": "lm_student", "file": "b", "reused": False}) + "\n{\"result\": \"lm_")  # half-written
    (tmp_path / "05_mog_coverage.cache.jsonl").write_text(
        json.dumps({"result": "mog_study", "file": "c", "reused": False, "rebuilt": "lost its file x"}) + "\n")
    terminal = Terminal()
    live = book.LiveLines(tmp_path, stream=terminal, every=3600)
    live.start("06_llm")
    live.start("05_mog_coverage")
    now = live.running["06_llm"] + 130
    assert live.line("06_llm", now) == "06_llm  cell 14/35  computing lm_student  2:10"
    assert live.line("05_mog_coverage", live.running["05_mog_coverage"] + 5).startswith(
        "05_mog_coverage  starting  rebuilding mog_study (it lost its file x)")
    live.print("[book 0:01] 1/7 06_llm: executing")
    live.stop("06_llm")
    live.print("[book 2:11] 1/7 06_llm: done in 130.0 s")
    text = terminal.getvalue()
    assert text.count("06_llm  cell 14/35") == 1 and "\x1b[2F\x1b[J" in text  # drawn, then cleared to print
    plain = io.StringIO()  # not a terminal: only the book's own lines
    quiet = book.LiveLines(tmp_path, stream=plain)
    with quiet:
        quiet.start("06_llm")
        quiet.print("a line")
    assert plain.getvalue() == "a line\n"


def test_a_chapter_reports_its_cells_as_it_runs(toy_book):
    root, sources = toy_book
    reports = root / "reports"
    reports.mkdir()
    book.execute_chapter(load_chapter(sources / "93_c.md"), {"profile": "quick"}, root / "out" / "93_c.ipynb",
                         progress=False, live=reports)
    assert (reports / "93_c.cell").read_text() == "3 3"  # parameters, papermill's injected cell, the chapter's one


BUILD = """
import sys
from pathlib import Path
from alignkd import book
from alignkd.parameters import load_chapter
root = Path(sys.argv[1])
toys = {p.stem: load_chapter(p) for p in sorted((root / "notebooks").glob("*.md"))}
book.chapters = lambda: toys
book.preflight = lambda profile, overrides=None: {name: {"profile": "quick"} for name in toys}
print(book.execute_profile("quick", book_root=root, jobs=int(sys.argv[2])))
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_two_builds_at_once_equal_one(tmp_path, jobs):
    """Two `make book` on one results folder: each chapter executes once, its claims are whole and in order."""
    import subprocess
    import sys

    sources = tmp_path / "notebooks"
    sources.mkdir()
    for name in ("91_a", "92_b"):
        body = (f"from alignkd import claims\n"
                f"for i in range(4):\n"
                f"    claims.record('quick', {name!r}, f'c{{i}}', f'claim {{i}}', 'p', float(i))\n"
                f"    time.sleep(0.3)\n")
        toy_chapter(sources, name, body)
    env = {**os.environ, "ALIGNKD_RESULTS": str(tmp_path / "results")}
    builds = [subprocess.Popen([sys.executable, "-c", BUILD, str(tmp_path), str(jobs)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [build.communicate(timeout=300) for build in builds]
    assert [build.returncode for build in builds] == [0, 0], outputs
    starts = [row for row in map(json.loads, (sources / "log.jsonl").read_text().splitlines()) if row["event"] == "start"]
    assert sorted(row["chapter"] for row in starts) == ["91_a", "92_b"]  # each executed once in all
    assert sum("executed meanwhile by another build" in out for out, _ in outputs) >= 1
    for name in ("91_a", "92_b"):
        table = pd.read_csv(tmp_path / "results" / "quick" / "claims" / f"{name}.csv")
        assert list(table.claim_id) == ["c0", "c1", "c2", "c3"] and list(table.ours) == [0.0, 1.0, 2.0, 3.0]
        assert (tmp_path / "book" / "chapters" / f"{name}.ipynb").exists()


def test_a_kernel_that_dies_as_it_starts_is_started_again(toy_book, monkeypatch):
    """Two kernels started at once can draw the same port; one then dies before any cell runs (seen in CI:
    `ZMQError: Address already in use`). Only that failure is retried."""
    import papermill

    root, sources = toy_book
    chapter = load_chapter(sources / "91_a.md")
    real, calls = papermill.execute_notebook, []

    def dies_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError(book.KERNEL_DIED)
        return real(*args, **kwargs)

    monkeypatch.setattr(papermill, "execute_notebook", dies_first)
    book.execute_chapter(chapter, {"profile": "quick"}, root / "out" / "91_a.ipynb")
    assert len(calls) == 2 and (root / "out" / "91_a.ipynb").exists()

    def fails(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("a cell failed")

    monkeypatch.setattr(papermill, "execute_notebook", fails)
    calls.clear()
    with pytest.raises(RuntimeError, match="a cell failed"):
        book.execute_chapter(chapter, {"profile": "quick"}, root / "out" / "91_a.ipynb")
    assert len(calls) == 1
