"""The whole book, built in the quick profile in a scratch folder, has every page with its figures."""

import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from alignkd import book, claims
from alignkd.chapters import chapters

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = book.stage_book(tmp_path_factory.mktemp("book"))
    patch = pytest.MonkeyPatch()
    patch.setenv("ALIGNKD_RESULTS", str(root / "results"))  # hermetic: no cached results from earlier runs
    stale = root / "results" / "quick" / "claims" / "01_theory.csv"  # as if left by an older execution
    stale.parent.mkdir(parents=True)
    stale.write_text("chapter,claim_id\n01_theory,stale\n")
    try:
        index = book.build("quick", book_root=root)
        yield root, index
    finally:
        patch.undo()


@pytest.mark.book
def test_index_intro_and_references(built):
    root, index = built
    assert index.exists()
    html = root / "_build" / "html"
    intro = (html / "book" / "intro.html").read_text()
    assert "What the paper claims" in intro and "How to reproduce" in intro
    references = (html / "book" / "references.html").read_text()
    assert "why alignment must precede distillation: a minimal working explanation" in references.lower()


@pytest.mark.book
@pytest.mark.parametrize("name", sorted(chapters()))
def test_every_chapter_page_has_its_figures_and_no_errors(built, name):
    root, _ = built
    page = root / "_build" / "html" / "book" / "chapters" / f"{name}.html"
    assert page.exists(), f"no page for {name}"
    text = page.read_text()
    images = re.findall(r'<img[^>]+src="([^"]+)"', text)
    assert images, f"{name} has no figure"
    for source in images:
        assert (page.parent / source).resolve().exists(), f"{name}: missing image {source}"
    executed = nbformat.read(root / "book" / "chapters" / f"{name}.ipynb", as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.book
def test_executing_a_chapter_forgets_its_old_claims(built):
    root, _ = built
    stale = root / "results" / "quick" / "claims" / "01_theory.csv"
    assert not stale.exists() or "stale" not in stale.read_text()


def test_one_off_runs_record_claims_beside_their_notebook(tmp_path, monkeypatch):
    seen = {}

    def execute(chapter, values, output):
        seen["claims"] = os.environ[claims.CLAIMS_DIR_ENV]
        return output

    monkeypatch.delenv(claims.CLAIMS_DIR_ENV, raising=False)
    monkeypatch.setattr(book, "execute_chapter", execute)
    book.run_chapter("01", "quick", {}, tmp_path / "mine.ipynb")
    assert seen["claims"] == str(tmp_path / "mine.claims")
    assert claims.CLAIMS_DIR_ENV not in os.environ


@pytest.mark.book
def test_math_is_served_locally(built):
    root, _ = built
    html = root / "_build" / "html"
    page = (html / "book" / "chapters" / "01_theory.html").read_text()
    sources = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', page, flags=re.I)
    assert sources and all(not s.startswith("http") for s in sources)
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert "\\pi_{\\mathrm{ref}}" in page or "π_ref" in page


@pytest.mark.book
def test_rebuilding_with_unchanged_parameters_executes_nothing(built):
    root, _ = built
    report = book.execute_profile("quick", book_root=root)
    assert {status for _, status, _ in report} == {"cached"}


def test_a_failing_chapter_leaves_no_output(tmp_path):
    from alignkd.chapters import load_chapter

    source = tmp_path / "99_broken.md"
    source.write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n# Broken\n\n"
        "```{code-cell} ipython3\n:tags: [parameters]\nprofile = \"quick\"  # one of: quick, default, paper\n```\n\n"
        "```{code-cell} ipython3\nraise RuntimeError('boom')\n```\n"
    )
    chapter = load_chapter(source)
    output = tmp_path / "out" / "99_broken.ipynb"
    with pytest.raises(Exception, match="boom"):
        book.execute_chapter(chapter, {"profile": "quick"}, output, progress=False)
    assert not output.exists()


def test_toc_points_at_the_executed_chapters():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert toc["root"] == "book/intro"
    assert "book/reproduce" in files and "book/references" in files
