"""The whole book, built in the quick profile in a scratch folder, has every page with its figures."""

import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from alignkd import book, claims
from alignkd.parameters import chapters

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def built(quick_book):
    return quick_book


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
    from alignkd.parameters import load_chapter

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


@pytest.mark.book
@pytest.mark.parametrize("name", sorted(chapters()))
def test_every_chapter_ends_with_its_provenance_and_reads_as_a_page(built, name):
    root, _ = built
    page = (root / "_build" / "html" / "book" / "chapters" / f"{name}.html").read_text()
    provenance = page.split('id="provenance"', 1)[1]
    for fact in ("profile", "parameters", "commit", "library digest", "machine", "logical cores", "executed",
                 "results", f'download="{name}.md"'):
        assert fact in provenance, fact
    download = root / "_build" / "html" / "_sources" / "book" / "chapters" / f"{name}.ipynb"  # the page's ⬇ .ipynb
    assert f'href="../../_sources/book/chapters/{name}.ipynb"' in page
    executed = nbformat.read(download, as_version=4)
    assert not [o for c in executed.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert not [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
    assert all(set(c.metadata.get("tags", [])) & book.VISIBILITY_TAGS for c in code), "a code cell is not collapsed"
    parameters = next(c for c in code if "parameters" in c.metadata.tags)
    assert 'profile = "quick"' in parameters.source
    assert "Show the parameters this page was made with (profile quick)" in page


@pytest.mark.book
def test_generated_pages_claims_status_api_and_the_executed_extension(built):
    root, _ = built
    html = root / "_build" / "html" / "book"
    claims_page = (html / "generated" / "claims.html").read_text()
    recorded = claims.load("quick")
    assert (root / "results" / "quick" / "claims.csv").exists()
    silent = [name for name in chapters() if name not in set(recorded.chapter)]
    for name in silent:  # a chapter that recorded nothing is named, not silently missing
        assert f'href="../chapters/{name}.html"' in claims_page.split('id="chapters-that-recorded-no-claims"', 1)[1]
    for row in recorded.itertuples():
        assert row.verdict in claims_page
    status = (html / "generated" / "status.html").read_text()
    for name, chapter in chapters().items():
        assert f'href="../chapters/{name}.html"' in status
    assert "All chapters together" in status
    api = (html / "generated" / "api.html").read_text()
    assert 'id="alignkd.theory.reverse_kl_optimum"' in api and 'id="alignkd.claims.record"' in api
    extend = (html / "extend.html").read_text()
    assert re.search(r'<img[^>]+src="[^"]+\.png"', extend) and 'caption-number">Figure 1' in extend
    assert "for π*(y*) ≥ 1/2" in extend  # its code ran during the build
    assert 'download="fig-extend-recall.csv" href="data:text/csv;base64,' in extend


@pytest.mark.book
def test_the_terminal_shows_one_line_as_each_chapter_starts_and_ends(built):
    root, _ = built
    lines = (root / "terminal.log").read_text().splitlines()
    assert all(re.match(r"\[book \d+:\d\d\] ", line) for line in lines), [l for l in lines if not l.startswith("[book")]
    for number, name in enumerate(chapters(), 1):
        mine = [line for line in lines if f" {name}: " in line]
        assert len(mine) == 2 and "executing" in mine[0] and re.search(r"done in \d+\.\d s$", mine[1]), mine
    assert lines[-1].endswith("index.html")
