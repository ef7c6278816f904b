"""The book pipeline: MyST notebook → papermill with a profile's parameters → executed notebook → HTML.

    notebooks/NN_name.md --jupytext--> .ipynb --papermill(params/<profile>.yaml)--> book/chapters/NN_name.ipynb
    jupyter-book build . (execute_notebooks: off) --> _build/html/index.html

Every profile is checked against every chapter's parameters before anything executes. A chapter whose
notebook source, parameter values and library source are unchanged since its last execution is not
executed again (its stamp matches); heavy results are cached separately by `alignkd.cache`, so even a
re-executed chapter recomputes only what its changed parameters affect.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jupytext
import nbformat

from . import claims
from .cache import REPO_ROOT
from .chapters import Chapter, chapters, preflight

BOOK_SOURCES = ("_config.yml", "_toc.yml", "book")  # what jupyter-book reads besides the executed chapters
_STAMP_KEY = "alignkd_stamp"
# papermill reads "# >= 10" spec comments as type hints and warns on each; the spec is ours, not a hint
logging.getLogger("papermill.translators").setLevel(logging.ERROR)
# for the same reason papermill believes every profile value is unknown; alignkd.chapters checks them properly
logging.getLogger("papermill").addFilter(lambda record: not record.getMessage().startswith("Passed unknown parameter"))


def _library_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "alignkd").rglob("*.py")):
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def chapter_stamp(chapter: Chapter, values: dict[str, Any], library: str | None = None) -> str:
    """What an executed chapter depends on: its source, its parameter values, the library."""
    payload = {
        "source": hashlib.sha256(chapter.path.read_bytes()).hexdigest(),
        "parameters": values,
        "library": library or _library_digest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _stamp_of(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        return nbformat.read(path, as_version=4).metadata.get(_STAMP_KEY)
    except Exception:  # an unreadable notebook is simply stale
        return None


def execute_chapter(chapter: Chapter, values: dict[str, Any], output: Path, *, stamp: str | None = None,
                    progress: bool = True) -> Path:
    """Execute one chapter with checked parameter values into `output` (written only on success)."""
    import papermill

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / f"{chapter.name}.ipynb"
        executed = Path(scratch) / f"{chapter.name}.executed.ipynb"
        notebook = jupytext.read(chapter.path)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        jupytext.write(notebook, source)
        papermill.execute_notebook(
            str(source), str(executed), parameters=values, kernel_name="python3",
            cwd=str(REPO_ROOT), progress_bar=progress, log_output=False,
        )
        result = nbformat.read(executed, as_version=4)
        result.metadata[_STAMP_KEY] = stamp
        result.metadata.pop("jupytext", None)
        nbformat.write(result, executed)
        shutil.move(executed, output)
    return output


def chapters_dir(book_root: Path = REPO_ROOT) -> Path:
    """Where executed chapters land; `_toc.yml` points here."""
    return Path(book_root) / "book" / "chapters"


def stage_book(destination: Path) -> Path:
    """Copy the book's sources (config, toc, prose pages) to `destination`, to build a book elsewhere."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in BOOK_SOURCES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("chapters"))
        else:
            shutil.copy2(source, destination / name)
    return destination


def execute_profile(profile: str, only: list[str] | None = None, force: bool = False,
                    book_root: Path = REPO_ROOT) -> list[tuple[str, str, float]]:
    """Execute every chapter (or `only` those) for a profile; returns (chapter, 'ran'|'cached', seconds)."""
    values = preflight(profile)  # every value and what it asks of this machine, before anything runs
    library = _library_digest()
    out_dir = chapters_dir(book_root)
    report = []
    for name, chapter in chapters().items():
        if only and name not in only:
            continue
        output = out_dir / f"{name}.ipynb"
        stamp = chapter_stamp(chapter, values[name], library) + f":{profile}"
        if not force and _stamp_of(output) == stamp:
            report.append((name, "cached", 0.0))
            print(f"[book] {name}: unchanged, not re-executed", flush=True)
            continue
        print(f"[book] {name}: executing with profile '{profile}' {values[name]}", flush=True)
        start = time.perf_counter()
        claims.clear(profile, name)  # the chapter records its claims afresh; none may survive from an older run
        execute_chapter(chapter, values[name], output, stamp=stamp)
        elapsed = time.perf_counter() - start
        report.append((name, "ran", elapsed))
        print(f"[book] {name}: done in {elapsed:.1f} s", flush=True)
    stale = {p.stem for p in out_dir.glob("*.ipynb")} - set(chapters())
    for name in stale:  # a chapter renamed or removed must not linger in the book
        (out_dir / f"{name}.ipynb").unlink()
    return report


def render_html(book_root: Path = REPO_ROOT) -> Path:
    """Render the executed chapters and the prose pages with jupyter-book (execution off)."""
    book_root = Path(book_root)
    missing = [f for f in _toc_files(book_root) if not any((book_root / f).parent.glob(Path(f).name + ".*"))]
    if missing:
        raise FileNotFoundError(f"_toc.yml lists pages that do not exist (chapters not executed?): {missing}")
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(book_root), "--builder", "html",
               "--warningiserror", "--quiet"]
    subprocess.run(command, check=True, cwd=book_root)
    return book_root / "_build" / "html" / "index.html"


def _toc_files(book_root: Path) -> list[str]:
    import yaml

    toc = yaml.safe_load((Path(book_root) / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part.get("chapters", [])]
    return files


def build(profile: str = "default", force: bool = False, book_root: Path = REPO_ROOT) -> Path:
    """The main job: execute every chapter for `profile`, then render the HTML book."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars belong on the terminal, not in the book
    start = time.perf_counter()
    report = execute_profile(profile, force=force, book_root=book_root)
    index = render_html(book_root)
    total = time.perf_counter() - start
    for name, status, seconds in report:
        print(f"  {name:<28} {status:<7} {seconds:8.1f} s")
    print(f"book built in {total:.0f} s with profile '{profile}'")
    print(index)
    return index


def run_chapter(name_or_number: str, profile: str, overrides: dict[str, Any], output: Path | None = None) -> Path:
    """Run one chapter with overrides; parameters are checked before anything executes."""
    from .chapters import find_chapter

    chapter = find_chapter(name_or_number)
    values = preflight(profile, {chapter.name: overrides}, only=[chapter.name])[chapter.name]
    output = Path(output) if output else REPO_ROOT / "_build" / "runs" / f"{chapter.name}.{profile}.ipynb"
    # a one-off run with overrides records its claims beside its notebook, not over the profile's
    previous = os.environ.get(claims.CLAIMS_DIR_ENV)
    os.environ[claims.CLAIMS_DIR_ENV] = str(output.resolve().parent / f"{output.stem}.claims")
    try:
        return execute_chapter(chapter, values, output)
    finally:
        if previous is None:
            os.environ.pop(claims.CLAIMS_DIR_ENV, None)
        else:
            os.environ[claims.CLAIMS_DIR_ENV] = previous
