"""The book pipeline: MyST notebook → papermill with a profile's parameters → executed notebook → HTML.

    notebooks/NN_name.md --jupytext--> .ipynb --papermill(params/<profile>.yaml)--> book/chapters/NN_name.ipynb
    jupyter-book build . (execute_notebooks: off) --> _build/html/index.html

Every profile is checked against every chapter's parameters before anything executes. A chapter whose
notebook source, parameter values and library source are unchanged since its last execution is not
executed again (its stamp matches); heavy results are cached separately by `alignkd.cache`, so even a
re-executed chapter recomputes only what its changed parameters affect.
"""

from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import datetime
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

# jupytext, nbformat and papermill are imported in the functions that use them: the library imports without
# the notebook stack (a GPU machine has none of it), and `import alignkd.book` stays cheap
if TYPE_CHECKING:
    import nbformat

from . import claims, provenance
from .cache import CACHE_LOG_ENV, REPO_ROOT, locked, results_root, write_atomic
from .chapters.memory import check_memory
from .parameters import MILESTONE_TAG, Chapter, ParameterError, chapters, check_writable, preflight

BOOK_SOURCES = ("_config.yml", "_toc.yml", "book")  # what jupyter-book reads besides the executed chapters
_STAMP_KEY = "alignkd_stamp"
PROVENANCE_KEY = "alignkd_provenance"
# myst-nb's visibility tags, and ours: `show-input` keeps a code cell's source open on the page
VISIBILITY_TAGS = {"hide-input", "remove-input", "hide-cell", "remove-cell", "hide-output", "remove-output",
                   "show-input"}
# Kernel logging stays off the terminal: "Kernel is running over TCP without encryption" at every start and
# "KeyboardInterrupt caught in kernel" when the client's shutdown SIGINT lands mid-iteration. A cell's error or a
# dead kernel still fails the chapter through papermill.
_KERNEL_QUIET = ["--IPKernelApp.log_level=CRITICAL"]
# papermill reads "# >= 10" spec comments as type hints and warns on each; the spec is ours, not a hint
logging.getLogger("papermill.translators").setLevel(logging.ERROR)
# for the same reason papermill believes every profile value is unknown; alignkd.parameters checks them properly
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
    import nbformat

    if not path.exists():
        return None
    try:
        return nbformat.read(path, as_version=4).metadata.get(_STAMP_KEY)
    except Exception:  # an unreadable notebook is simply stale
        return None


KERNEL_STARTS = 3
KERNEL_DIED = "Kernel died before replying to kernel_info"
"""How often a chapter's kernel is started before its failure to start is raised, and the failure that is retried:
two kernels started at once by two processes can draw the same free port (jupyter_client picks one and binds it
later), and one dies with `ZMQError: Address already in use` (seen once in CI, in `test_book_jobs.py`; a known
race of kernel start-up: jupyter/jupyter_client#154, ipython/ipython#12372 with papermill)."""


def execute_chapter(chapter: Chapter, values: dict[str, Any], output: Path, *, stamp: str | None = None,
                    progress: bool = True, library: str | None = None, threads: int | None = None,
                    live: Path | None = None) -> Path:
    """Execute one chapter with checked parameter values into `output` (written only on success).

    `threads` caps the kernel's math threads (OpenMP, MKL: what torch's intra-op pool reads at start-up), so
    that chapters executed side by side do not oversubscribe the cores; None leaves the kernel's defaults.

    `live`: a folder where the chapter reports as it runs, for `LiveLines` to show: `<name>.cell` (the code cell
    it is executing, n of N) and `<name>.cache.jsonl` (what it reuses, computes and rebuilds).

    The executed notebook is made to read as a page (`present`) and ends with its provenance; the same
    facts are kept in its metadata under `alignkd_provenance`.
    """
    import jupytext
    import nbformat
    import papermill

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / f"{chapter.name}.ipynb"
        executed = Path(scratch) / f"{chapter.name}.executed.ipynb"
        cache_log = Path(live) / f"{chapter.name}.cache.jsonl" if live else Path(scratch) / "cache.jsonl"
        cache_log.unlink(missing_ok=True)
        notebook = jupytext.read(chapter.path)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        jupytext.write(notebook, source)
        executed_at = datetime.datetime.now(datetime.timezone.utc)
        start = time.perf_counter()
        limits = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} if threads else {}
        hooks = {"on_cell_start": _cell_counter(Path(live) / f"{chapter.name}.cell", notebook),
                 "on_cell_executed": _milestone_marker(Path(live) / f"{chapter.name}.reached")} if live else {}
        with _environment({CACHE_LOG_ENV: str(cache_log), **limits}):
            try:
                for attempt in range(KERNEL_STARTS):
                    try:
                        papermill.execute_notebook(
                            str(source), str(executed), parameters=values, kernel_name="python3",
                            cwd=str(REPO_ROOT), progress_bar=progress, log_output=False,
                            extra_arguments=_KERNEL_QUIET, **hooks,
                        )
                        break
                    except RuntimeError as error:  # no cell has run: starting again changes nothing
                        if KERNEL_DIED not in str(error) or attempt == KERNEL_STARTS - 1:
                            raise
            finally:  # the kernel's warnings never reach the terminal: say here what was rebuilt, and why
                if live is None:  # (the book says it above its live lines)
                    for line in provenance.rebuilt(cache_log):
                        print(f"{chapter.name}: {line}", flush=True)
        seconds = time.perf_counter() - start
        result = nbformat.read(executed, as_version=4)
        cells = provenance.cell_costs(result, cache_log)  # before `present` drops papermill's parameters cell
        present(result, values)
        use = provenance.cache_use(cache_log)
        record = {
            "chapter": chapter.name, "title": chapter.title, "profile": values.get("profile", "?"),
            "parameters": values, "modules": provenance.modules_used(chapter.path.read_text()),
            "commit": provenance.git_commit(), "library": library or _library_digest(),
            "machine": {**provenance.machine(), **({"threads": threads} if threads else {})}, "executed_at": executed_at.strftime("%Y-%m-%d %H:%M UTC"),
            "seconds": seconds, "cache": {kind: dict(counter) for kind, counter in use.items()},
            "build_cpu_seconds": provenance.build_seconds(cache_log), "cells": cells,
        }
        if live is None:  # `alignkd run`: where the chapter's CPU went (the book keeps it in the page's metadata)
            print(f"{chapter.name}: {seconds:,.0f} s; CPU seconds building results: "
                  f"{provenance.build_text(record['build_cpu_seconds'])}; per cell of at least a second:\n"
                  f"{provenance.cells_text(cells)}", flush=True)
        result.cells.append(nbformat.v4.new_markdown_cell(
            provenance.footer(record, chapter.path.name, chapter.path.read_bytes())))
        result.metadata[_STAMP_KEY] = stamp
        result.metadata[PROVENANCE_KEY] = record
        result.metadata.pop("jupytext", None)
        nbformat.write(result, executed)
        write_atomic(output, lambda path: shutil.copyfile(executed, path))  # a reader sees the old page or the new
    return output


def _estimated_seconds(name: str, values: dict[str, Any], page: Path) -> float:
    """How long a chapter will take: its last execution's time, else its cost model's prediction on this machine's
    cores (`chapters.predicted_seconds`; chapter 06 has one), else 0 (unknown)."""
    from .chapters import predicted_seconds

    last = (_provenance_of(page) or {}).get("seconds")
    return float(last) if last else predicted_seconds(name, values) or 0.0


def _execute_in_book(chapter: Chapter, values: dict[str, Any], output: Path, *, stamp: str, profile: str,
                     force: bool, **options: Any) -> bool:
    """One chapter of a book build, alone among the builds of this profile: two `make book` on one results folder
    take turns per chapter (a lock the kernel releases if its holder dies), and the later one finds the page
    already made with the same stamp and does not execute it again. Returns whether it executed the chapter."""
    folder = results_root() / profile / ".book-locks"
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder / f"{chapter.name}.lock"):
        if not force and _stamp_of(output) == stamp:
            return False
        claims.clear(profile, chapter.name)  # the chapter records its claims afresh; none may survive from before
        execute_chapter(chapter, values, output, stamp=stamp, progress=False, **options)
        return True


MILESTONE_POLL = 2.0  # seconds between looks at the running chapters' milestones


def _passed(status: str, milestone: str | None, reached: Path) -> bool:
    """Whether a chapter in `status` lets a chapter waiting on it (or on its `milestone`) start: it has run or was
    unchanged, or it is running and has executed the cell of that milestone (`reached` lists them, a line each)."""
    if status in ("cached", "ran"):
        return True
    if milestone is None or status != "running":
        return False
    try:
        return milestone in reached.read_text().split()
    except OSError:
        return False


def _milestone_marker(path: Path) -> Callable[..., None]:
    """An nbclient `on_cell_executed` hook: a code cell tagged `milestone-<name>` that ran without an error adds
    <name> to `path`, which the book reads to start the chapters waiting on it (`alignkd: after: [ch:name]`)."""
    path.unlink(missing_ok=True)

    def hook(cell=None, execute_reply=None, **_) -> None:
        if cell is None or execute_reply is None or execute_reply.get("content", {}).get("status") != "ok":
            return
        for tag in cell.get("metadata", {}).get("tags", []):
            if tag.startswith(MILESTONE_TAG):
                with open(path, "a") as handle:
                    handle.write(tag[len(MILESTONE_TAG):] + "\n")

    return hook


def _cell_counter(path: Path, notebook) -> Callable[..., None]:
    """An nbclient `on_cell_start` hook writing "n N" (code cell n of N, papermill's injected one counted)."""
    total = sum(cell.cell_type == "code" for cell in notebook.cells) + 1
    started = [0]

    def hook(cell=None, **_) -> None:
        if cell is not None and cell.cell_type != "code":  # nbclient calls it for every cell
            return
        started[0] += 1
        path.write_text(f"{started[0]} {total}")

    return hook


class LiveLines:
    """On a terminal, one live line per running chapter under the book's own lines: the code cell it executes
    (n of N), what it is computing or rebuilding, and its elapsed time; redrawn every second. Elsewhere (a log
    file, CI) it prints nothing: the start and end lines say what happened."""

    def __init__(self, folder: Path, stream=None, every: float = 1.0):
        self.folder, self.stream, self.every = Path(folder), stream or sys.stdout, every
        self.running: dict[str, float] = {}
        self.shown = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.thread = threading.Thread(target=self._loop, daemon=True) if self.tty else None

    def __enter__(self) -> "LiveLines":
        if self.thread:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        if self.thread:
            self.thread.join()
        self.print(None)

    def start(self, name: str) -> None:
        with self.lock:
            self.running[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        with self.lock:
            self.running.pop(name, None)

    def line(self, name: str, now: float | None = None) -> str:
        """`06_llm  cell 14/35  computing lm_student  2:10` from the chapter's reports."""
        elapsed = (now or time.perf_counter()) - self.running.get(name, now or time.perf_counter())
        parts = [name]
        try:
            n, total = (self.folder / f"{name}.cell").read_text().split()
            parts.append(f"cell {n}/{total}")
        except (OSError, ValueError):
            parts.append("starting")
        event = _last_event(self.folder / f"{name}.cache.jsonl")
        if event is not None and event.get("rebuilt"):
            parts.append(f"rebuilding {event['result']} (it {event['rebuilt']})")
        elif event is not None and not event.get("reused"):
            parts.append(f"computing {event['result']}")
        parts.append(_clock(elapsed))
        return "  ".join(parts)

    def print(self, text: str | None) -> None:
        """A line of the book's own, above the live lines (which are then drawn again)."""
        with self.lock:
            if self.tty and self.shown:
                self.stream.write(f"\x1b[{self.shown}F\x1b[J")  # up over the live lines, and clear them
            self.shown = 0
            if text is not None:
                self.stream.write(text + "\n")
            if self.tty and not self.done.is_set():
                lines = [self.line(name) for name in self.running]
                self.stream.write("".join(line[:200] + "\n" for line in lines))
                self.shown = len(lines)
            self.stream.flush()

    def _loop(self) -> None:
        while not self.done.wait(self.every):
            self.print(None)


def _last_event(log: Path) -> dict | None:
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:  # a line still being written
            continue
    return None


@contextlib.contextmanager
def _environment(changes: dict[str, str]):
    """Environment variables for the kernel papermill starts (it inherits ours)."""
    previous = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def effective_parameters(source: str, values: dict[str, Any]) -> str:
    """The parameters cell with each default replaced by the value the chapter ran with (specs kept)."""
    lines = source.splitlines()
    for node in reversed(ast.parse(source).body):  # bottom-up, so line numbers above stay valid
        name = node.targets[0].id
        if name not in values:
            continue
        last = lines[node.end_lineno - 1]
        comment = "  #" + last.split("#", 1)[1] if "#" in last else ""
        lines[node.lineno - 1:node.end_lineno] = [f"{name} = {_literal(values[name])}{comment}"]
    return "\n".join(lines)


def present(notebook: nbformat.NotebookNode, values: dict[str, Any]) -> None:
    """Make an executed notebook read as a page: prose, figures and tables first.

    - papermill's injected-parameters cell goes; the parameters cell shows the values the chapter ran with,
      collapsed;
    - every other code cell's source is collapsed (`hide-input`) unless the notebook tags it otherwise
      (`show-input` keeps it open; `remove-input`, `remove-cell`, ... are honoured as they are);
    - stderr (progress bars, warnings) and progress widgets are dropped: they belong on the terminal.
    """
    cells = []
    for cell in notebook.cells:
        tags = list(cell.metadata.get("tags", []))
        if "injected-parameters" in tags:
            continue
        if cell.cell_type == "code":
            if "parameters" in tags:
                cell.source = effective_parameters(cell.source, values)
                profile = f" (profile {values['profile']})" if "profile" in values else ""
                cell.metadata.setdefault("mystnb", {})["code_prompt_show"] = \
                    f"Show the parameters this page was made with{profile}"
            if not set(tags) & VISIBILITY_TAGS:
                tags.append("hide-input")
            cell.metadata["tags"] = tags
            cell.outputs = [o for o in cell.outputs if not _is_noise(o)]
        cells.append(cell)
    notebook.cells = cells


def _is_noise(output: dict) -> bool:
    if output.get("output_type") == "stream":
        return output.get("name") == "stderr"
    return "application/vnd.jupyter.widget-view+json" in output.get("data", {})


def figure_data(frame, name: str, label: str | None = None):
    """Offer a figure's data as a CSV download below it: `figure_data(table, "fig-03-ppo")`.

    Call it in its own cell right after the figure's (tagged `remove-input`): myst-nb turns every output of a
    cell with `mystnb: figure` metadata into that figure, so a second output there would duplicate its name.

    The file travels inside the page (a data: link), so it works in the HTML book, in the downloaded
    notebook and offline alike.
    """
    from IPython.display import HTML

    if not name or any(c in name for c in "/\\ "):
        raise ValueError(f"figure_data: name = {name!r}: must be a plain file stem like 'fig-03-ppo'")
    content = frame.to_csv(index=False).encode()
    label = label or f"Data of this figure ({name}.csv, {len(content) / 1024:.0f} kB)"
    return HTML(provenance.data_link(content, f"{name}.csv", label, "text/csv"))


def chapters_dir(book_root: Path = REPO_ROOT) -> Path:
    """Where executed chapters land; `_toc.yml` points here."""
    return Path(book_root) / "book" / "chapters"


def generated_dir(book_root: Path = REPO_ROOT) -> Path:
    """Where the pages made at build time land (claims, build status, API reference); `_toc.yml` points here."""
    return Path(book_root) / "book" / "generated"


def stage_book(destination: Path) -> Path:
    """Copy the book's sources (config, toc, prose pages) to `destination`, to build a book elsewhere."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in BOOK_SOURCES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("chapters", "generated"))
        else:
            shutil.copy2(source, destination / name)
    return destination


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}:{seconds:02d}"


def default_jobs() -> int:
    """Chapters executed at once: one per core (`ALIGNKD_JOBS` overrides); each runs one thread when > 1."""
    if os.environ.get("ALIGNKD_JOBS"):
        jobs = os.environ["ALIGNKD_JOBS"]
        if not jobs.isdigit() or int(jobs) < 1:
            raise ParameterError(f"ALIGNKD_JOBS = {jobs!r}: must be a whole number >= 1")
        return int(jobs)
    return provenance.available_cores()


def _dependants(selected: dict[str, Chapter]) -> dict[str, int]:
    """How many selected chapters wait, directly or not, on each one."""
    waiting = {name: set() for name in selected}
    for name in reversed(list(selected)):  # `after` names only earlier chapters, so one backward pass suffices
        for before, _ in selected[name].waits_on:
            if before in waiting:
                waiting[before] |= {name} | waiting[name]
    return {name: len(names) for name, names in waiting.items()}


def execute_profile(profile: str, only: list[str] | None = None, force: bool = False,
                    book_root: Path = REPO_ROOT, *, jobs: int | None = None,
                    overrides: dict[str, dict[str, Any]] | None = None) -> list[tuple[str, str, float]]:
    """Execute every chapter (or `only` those) for a profile; returns (chapter, 'ran'|'cached', seconds).

    Up to `jobs` chapters (default: one per core) execute at once, each in its own process with one thread
    per core it gets; a chapter starts only after the chapters its front matter names under `alignkd: after:`
    (their cached results are its inputs). Among the chapters ready to start, the one that took longest at its
    last execution (or, never executed, is predicted longest by its cost model) goes first, so the longest lane
    starts early, else the one most chapters wait on, else book order. (All run at one priority: giving the
    longest lane priority starved chapter 05, which chapter 07 waits on, and the default book took longer.)
    Prints one line as each chapter starts and one as it ends, with its time and the time since the start. If a chapter fails, no further chapter starts, the running ones finish, and the first error
    is raised.
    """
    values = preflight(profile, overrides)  # every value and what it asks of this machine, before anything runs
    check_memory({name: values[name] for name in values if not only or name in only},
                 {name: chapter.defaults for name, chapter in chapters().items()})
    check_writable(results_root() / profile, claims.claims_dir(profile), chapters_dir(book_root))
    library = _library_digest()
    out_dir = chapters_dir(book_root)
    selected = {name: chapter for name, chapter in chapters().items() if not only or name in only}
    numbers = {name: number for number, name in enumerate(selected, 1)}
    if jobs is not None and jobs < 1:
        raise ParameterError(f"jobs = {jobs}: must be >= 1 (chapters executed at once)")
    jobs = jobs or default_jobs()
    threads = max(1, provenance.available_cores() // jobs)
    dependants = _dependants(selected)
    began = time.perf_counter()
    statuses: dict[str, tuple[str, float]] = {}

    def where(name: str) -> str:
        return f"[book {_clock(time.perf_counter() - began)}] {numbers[name]}/{len(selected)} {name}"

    with tempfile.TemporaryDirectory() as reports, LiveLines(Path(reports)) as live:
        pending = []
        for name, chapter in selected.items():
            stamp = chapter_stamp(chapter, values[name], library) + f":{profile}"
            if not force and _stamp_of(out_dir / f"{name}.ipynb") == stamp:
                statuses[name] = ("cached", 0.0)
                live.print(f"{where(name)}: unchanged since its last execution, not re-executed")
            else:
                pending.append((name, stamp))
        last = {name: _estimated_seconds(name, values[name], out_dir / f"{name}.ipynb") for name, _ in pending}
        pending.sort(key=lambda item: (-last[item[0]], -dependants[item[0]], numbers[item[0]]))

        def ready(name: str) -> bool:
            return all(_passed(statuses.get(before, ("pending",))[0], milestone, live.folder / f"{before}.reached")
                       for before, milestone in selected[name].waits_on if before in selected)

        def start(name: str, stamp: str, run):
            live.print(f"{where(name)}: executing (profile {profile}) ...")
            statuses[name] = ("running", time.perf_counter())
            live.start(name)
            return run(_execute_in_book, selected[name], values[name], out_dir / f"{name}.ipynb", stamp=stamp,
                       profile=profile, force=force, library=library, threads=threads if jobs > 1 else None,
                       live=live.folder)

        def finish(name: str, error: BaseException | None, ran: bool = True) -> None:
            elapsed = time.perf_counter() - statuses[name][1]
            live.stop(name)
            if error is None and not ran:
                statuses[name] = ("cached", 0.0)
                live.print(f"{where(name)}: executed meanwhile by another build of this profile, not re-executed")
                return
            for line in provenance.rebuilt(live.folder / f"{name}.cache.jsonl"):
                live.print(f"{where(name)}: {line}")
            if error is None:
                statuses[name] = ("ran", elapsed)
                live.print(f"{where(name)}: done in {elapsed:.1f} s")
            else:
                statuses[name] = ("failed", elapsed)
                live.print(f"{where(name)}: FAILED after {elapsed:.1f} s ({type(error).__name__})")

        if jobs == 1:  # in this process, in book order: what a debugger or a monkeypatch sees
            for name, stamp in sorted(pending, key=lambda item: numbers[item[0]]):
                ran = start(name, stamp, lambda function, *args, **kwargs: function(*args, **kwargs))
                finish(name, None, ran)
        elif pending:
            failure = None
            context = multiprocessing.get_context("spawn")  # a fresh interpreter per chapter: no state leaks between
            with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, max_tasks_per_child=1) as pool:
                running: dict[concurrent.futures.Future, str] = {}
                while pending or running:
                    for item in [item for item in pending if failure is None and ready(item[0])][:jobs - len(running)]:
                        pending.remove(item)
                        running[start(*item, pool.submit)] = item[0]
                    if not running:
                        break
                    # a pending chapter may wait on a running one's milestone, which no future reports: look again
                    waiting = any(m for item in pending for _, m in selected[item[0]].waits_on)
                    done, _ = concurrent.futures.wait(running, timeout=MILESTONE_POLL if waiting else None,
                                                      return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in done:
                        name = running.pop(future)
                        finish(name, future.exception(), future.exception() is not None or future.result())
                        failure = failure or future.exception()
            if failure is not None:
                raise failure
    stale = {p.stem for p in out_dir.glob("*.ipynb")} - set(chapters())
    for name in stale:  # a chapter renamed or removed must not linger in the book
        (out_dir / f"{name}.ipynb").unlink()
    return [(name, *statuses[name]) for name in selected]


def _provenance_of(path: Path) -> dict[str, Any] | None:
    import nbformat

    try:
        return nbformat.read(path, as_version=4).metadata.get(PROVENANCE_KEY)
    except Exception:
        return None


def write_status_page(profile: str, report: list[tuple[str, str, float]], book_root: Path = REPO_ROOT) -> Path:
    """The "Build status" page: every chapter's status, runtime and cache use in this build."""
    status = {name: state for name, state, _ in report}
    rows, total, commits, machine = [], 0.0, set(), provenance.machine()
    for name, chapter in chapters().items():
        record = _provenance_of(chapters_dir(book_root) / f"{name}.ipynb")
        link = f"{{doc}}`{chapter.title} <../chapters/{name}>`"
        if record is None:
            rows.append(f"| {link} | not executed | | | |")
            continue
        total += record["seconds"]
        commits.add(record["commit"])
        machine = record["machine"]  # as the chapters saw it: the threads each was given
        state = "executed" if status.get(name) == "ran" else "unchanged"
        use = record["cache"]
        rows.append(f"| {link} | {state} | {record['seconds']:.1f} s | {record['executed_at']} | "
                    f"{sum(use['reused'].values())} / {sum(use['computed'].values())} |")
    text = (
        "# Build status\n\n"
        f"The last build of this book, with profile `{profile}`. *executed*: the chapter ran in this build; "
        "*unchanged*: its notebook, parameter values and library were the same as at its last execution, so its "
        "page is the one that execution made. *Runtime* is the chapter's own execution time; *results* counts its "
        "distinct `ResultStore` results, reused from `results/<profile>/` / computed and stored while it ran. Each "
        "chapter's page ends with its full provenance.\n\n"
        "| chapter | status | runtime | executed | results reused / computed |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nAll chapters together: {total:.1f} s of execution, from commit "
        + ", ".join(f"`{c}`" for c in sorted(commits))
        + f", on {provenance.machine_text(machine)}.\n"
    )
    path = generated_dir(book_root) / "status.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _figure_names(book_root: Path) -> dict[str, str]:
    """Every numbered figure's name (`mystnb: figure: name`) -> the chapter that shows it."""
    import nbformat

    names = {}
    for path in sorted(chapters_dir(book_root).glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            figure = cell.metadata.get("mystnb", {}).get("figure", {})
            if figure.get("name"):
                names[figure["name"]] = path.stem
    return names


def write_claims_page(profile: str, book_root: Path = REPO_ROOT) -> Path:
    """The "Claims at a glance" page and `results/<profile>/claims.csv`, from the claims the chapters recorded."""
    available = chapters()
    table = claims.load(profile, list(available))
    claims.write_summary(table, profile)
    folder = generated_dir(book_root)
    folder.mkdir(parents=True, exist_ok=True)
    forest = None
    if len(claims.forest_rows(table)):
        figure = claims.forest_figure(table)
        figure.savefig(folder / claims.FOREST_FILE, dpi=130)
        import matplotlib.pyplot as plt

        plt.close(figure)
        forest = claims.FOREST_FILE
    text = claims.page(table, {name: chapter.title for name, chapter in available.items()},
                       _figure_names(book_root), profile, forest=forest)
    path = folder / "claims.md"
    path.write_text(text)
    return path


def render_html(book_root: Path = REPO_ROOT) -> Path:
    """Render the executed chapters and the prose pages with jupyter-book (execution off)."""
    book_root = Path(book_root)
    missing = [f for f in _toc_files(book_root) if not any((book_root / f).parent.glob(Path(f).name + ".*"))]
    if missing:
        raise FileNotFoundError(f"_toc.yml lists pages that do not exist (chapters not executed?): {missing}")
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(book_root), "--builder", "html",
               "--warningiserror", "--quiet"]
    # jupyter-book's banner and Sphinx's progress are noise on a good build; on a failed one they are the diagnosis
    done = subprocess.run(command, cwd=book_root, capture_output=True, text=True)
    if done.returncode:
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        output = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise RuntimeError("jupyter-book build failed; its last lines:\n" + "\n".join(output[-25:]))
    html = book_root / "_build" / "html"
    for page in html.rglob("*.html"):
        _drop_repeated_inline_scripts(page)
    _give_the_redirect_a_favicon(html / "index.html")
    return html / "index.html"


def _give_the_redirect_a_favicon(index: Path) -> None:
    """jupyter-book's root index.html only redirects to the first page and names no icon, so a browser that
    asks for /favicon.ico before the redirect logs a 404 in the console; point it at the book's own icon."""
    text = index.read_text()
    if 'rel="icon"' not in text:
        index.write_text('<link rel="icon" href="_static/favicon.svg" />\n' + text)


def _drop_repeated_inline_scripts(page: Path) -> None:
    """jupyter-book 1.0.4 emits sphinx-thebe's and togglebutton's inline config scripts twice in every page's
    head; the second `const THEBE_JS_URL` is a SyntaxError in the browser's console. Keep the first of each."""
    seen, kept, changed = set(), [], False
    for line in page.read_text().splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("<script>") and stripped.endswith("</script>"):
            if stripped in seen:
                changed = True
                continue
            seen.add(stripped)
        kept.append(line)
    if changed:
        page.write_text("".join(kept))


def _toc_files(book_root: Path) -> list[str]:
    import yaml

    toc = yaml.safe_load((Path(book_root) / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part.get("chapters", [])]
    return files


API_SECTIONS = (  # (title, package prefix); modules under no prefix go to the last section
    ("Theory (paper §3)", "alignkd.theory"),
    ("Alignment objectives", "alignkd.objectives"),
    ("Mixture of Gaussians (§4.1, App. A–B)", "alignkd.mog"),
    ("Language models (§4.2, App. C–D)", "alignkd.lm"),
    ("Preference-aligned distillation", "alignkd.pad"),
    ("Statistics", "alignkd.stats"),
    ("The book's plumbing", "alignkd"),
)


def library_modules() -> list[str]:
    """Every module of the library, by name (what the API reference documents)."""
    import pkgutil

    import alignkd

    names = [m.name for m in pkgutil.walk_packages(alignkd.__path__, "alignkd.") if m.name != "alignkd.__main__"]
    return sorted(n for n in names if not n.rsplit(".", 1)[-1].startswith("_"))


def write_api_page(book_root: Path = REPO_ROOT) -> Path:
    """The API reference: every library module's docstrings (Sphinx autodoc), grouped by testbed."""
    modules = library_modules()
    lines = ["---", "html_theme.sidebar_secondary.remove: true", "---", "", "# Library reference", "",
             "Generated from the docstrings of the `alignkd` library each time the book is built. Chapters link "
             "here from their provenance; {doc}`../extend` shows how to build on these functions.", "",
             "Modules: " + ", ".join(f"{{py:mod}}`{m}`" for m in modules) + ".", ""]
    placed: set[str] = set()
    for title, prefix in API_SECTIONS:
        members = [m for m in modules if m not in placed and (m == prefix or m.startswith(prefix + "."))]
        if not members:
            continue
        placed.update(members)
        lines += [f"## {title}", ""]
        for module in members:
            # autodoc writes reStructuredText, so it must run inside eval-rst, not as a MyST directive
            lines += [f"### `{module}`", "", "```{eval-rst}", f".. automodule:: {module}", "   :members:", "```", ""]
    path = generated_dir(book_root) / "api.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def _docstring_as_written(app, what, name, obj, options, lines: list[str]) -> None:
    """autodoc reads docstrings as reStructuredText; ours are plain text that is mostly valid RST. One that is not
    (an indented diagram, a list without blank lines) is shown preformatted rather than failing the build."""
    import io

    import docutils.core
    import docutils.utils

    if not lines:
        return
    stream = io.StringIO()
    settings = {"report_level": docutils.utils.Reporter.WARNING_LEVEL, "halt_level": 5, "warning_stream": stream,
                "env": app.env}  # Sphinx's roles (:class:, :func:) look for it
    docutils.core.publish_doctree("\n".join(lines), settings_overrides=settings)
    if stream.getvalue():
        lines[:] = ["::", ""] + ["    " + line for line in lines] + [""]


def setup(app):
    """The book's Sphinx hooks (`_config.yml` loads `alignkd.book` as an extension)."""
    app.connect("autodoc-process-docstring", _docstring_as_written, priority=900)  # after napoleon
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def build(profile: str = "default", force: bool = False, book_root: Path = REPO_ROOT, *,
          jobs: int | None = None) -> Path:
    """The main job: execute every chapter for `profile`, write the generated pages, render the HTML book."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars belong on the terminal, not in the book
    start = time.perf_counter()
    report = execute_profile(profile, force=force, book_root=book_root, jobs=jobs)
    write_claims_page(profile, book_root)
    write_status_page(profile, report, book_root)
    write_api_page(book_root)
    print(f"[book {_clock(time.perf_counter() - start)}] rendering the HTML ...", flush=True)
    index = render_html(book_root)
    print(f"[book {_clock(time.perf_counter() - start)}] built with profile '{profile}': {index}", flush=True)
    return index


def run_chapter(name_or_number: str, profile: str, overrides: dict[str, Any], output: Path | None = None) -> Path:
    """Run one chapter with overrides; parameters are checked before anything executes."""
    from .parameters import find_chapter

    chapter = find_chapter(name_or_number)
    values = preflight(profile, {chapter.name: overrides}, only=[chapter.name])[chapter.name]
    check_memory({chapter.name: values}, {chapter.name: chapter.defaults})
    output = Path(output) if output else REPO_ROOT / "_build" / "runs" / f"{chapter.name}.{profile}.ipynb"
    check_writable(results_root() / profile, output.resolve().parent)
    # a one-off run with overrides records its claims beside its notebook, not over the profile's
    with _environment({claims.CLAIMS_DIR_ENV: str(output.resolve().parent / f"{output.stem}.claims")}):
        return execute_chapter(chapter, values, output)
