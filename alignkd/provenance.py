"""What made a page: profile, parameter values, commit, library digest, machine, runtime and cache use.

The book appends `footer(...)` to every executed chapter and keeps the same facts in the notebook's
metadata (`alignkd_provenance`), from which the "Build status" page is made. Which results were reused
from the cache comes from `alignkd.cache`: while a chapter executes, the book points `ALIGNKD_CACHE_LOG`
at a file and every `ResultStore` lookup appends one line to it (`cache_use` reads it back).
"""

from __future__ import annotations

import base64
import functools
import html
import json
import os
import platform
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from .cache import REPO_ROOT


def git_commit(root: Path = REPO_ROOT) -> str:
    """The checkout's commit, marked when tracked files differ from it; 'unknown' outside a git checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                 check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} + uncommitted changes" if changed else commit


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one): how many chapters, or
    chapter 06's worker processes, run at once by default."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@functools.cache
def machine() -> dict[str, Any]:
    """CPU model, logical cores, torch's default thread count, and the GPU (None without one). The book records
    the threads a chapter's kernel was given instead, when it limits them (chapters executed side by side)."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "gpu": gpu, "python": platform.python_version()}


def machine_text(info: dict[str, Any]) -> str:
    gpu = info["gpu"] or "no GPU"
    return (f"{info['cpu']}, {info['cores']} logical cores; torch {info['torch']} with {info['threads']} math "
            f"thread(s); {gpu}; Python {info['python']}")


def cache_use(log: Path) -> dict[str, Counter]:
    """From a cache log: how many distinct results of each name were reused from before the chapter ran
    and how many were computed while it ran. A result computed during the run (by the chapter or by a
    worker process it started) and read again later counts once, as computed."""
    computed_now: dict[tuple[str, str], bool] = {}
    if Path(log).exists():
        for line in Path(log).read_text().splitlines():
            entry = json.loads(line)
            if entry.get("charged"):  # CPU for several results at once: not a result
                continue
            key = (entry["result"], entry["file"])
            computed_now[key] = computed_now.get(key, False) or not entry["reused"]
    use = {"reused": Counter(), "computed": Counter()}
    for (result, _), computed in computed_now.items():
        use["computed" if computed else "reused"][result] += 1
    return use


def cell_costs(notebook, log: Path, least: float = 1.0) -> list[dict[str, Any]]:
    """Where an executed chapter's time went, per code cell that ran at least `least` seconds: its number among the
    page's code cells (papermill's injected one not counted), its first line, wall seconds (papermill's) and the
    CPU seconds of the results built while it ran, its worker processes' included. Each cache log entry is stamped
    when its build ended and charged once, to the last cell that had started by then, so work begun in the
    background (chapter 06's SmolLM2 section) is charged to the cell that was running when it ended. CPU over wall
    is how many cores the cell kept busy."""
    import datetime

    entries = [json.loads(line) for line in Path(log).read_text().splitlines()] if Path(log).exists() else []
    code = [c for c in notebook.cells
            if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]  # the page's cells
    starts = [datetime.datetime.fromisoformat(c.metadata["papermill"]["start_time"]).timestamp()
              if c.metadata.get("papermill", {}).get("start_time") else None for c in code]
    charged = Counter()
    for entry in entries:
        if "at" in entry and "cpu_seconds" in entry:
            running = [n for n, start in enumerate(starts) if start is not None and start <= entry["at"]]
            if running:
                charged[running[-1]] += entry["cpu_seconds"]
    rows = []
    for n, cell in enumerate(code):
        duration = cell.metadata.get("papermill", {}).get("duration") or 0
        if starts[n] is None or duration < least:
            continue
        first = next((line for line in cell.source.splitlines() if line.strip() and not line.startswith(("#", "%"))),
                     "")
        rows.append({"cell": n + 1, "first_line": first[:80], "wall_seconds": round(duration, 1),
                     "cpu_seconds": round(charged[n], 1)})
    return rows


def cells_text(rows: list[dict[str, Any]]) -> str:
    """`cell_costs` as lines: wall and build CPU seconds (work a cell does without storing a result is not
    counted), the cores its builds kept busy, and the cell's first line."""
    return "\n".join(f"  cell {r['cell']:>2}: {r['wall_seconds']:>7.0f} s wall, {r['cpu_seconds']:>7.0f} build CPU s "
                     f"({r['cpu_seconds'] / max(r['wall_seconds'], 1e-9):.1f} cores)  {r['first_line']}" for r in rows)


def build_seconds(log: Path) -> dict[str, float]:
    """From a cache log: process CPU seconds spent building each kind of result while the chapter ran, its worker
    processes included, each second counted once (by the result whose build spent it, not by a study's table
    that waited for it), largest first."""
    totals: Counter = Counter()
    if Path(log).exists():
        for line in Path(log).read_text().splitlines():
            entry = json.loads(line)
            if "cpu_seconds" in entry:
                totals[entry["result"]] += entry["cpu_seconds"]
    return {name: round(seconds, 1) for name, seconds in totals.most_common()}


def build_text(seconds: dict[str, float]) -> str:
    """"lm_student 420 s, lm_aligned 300 s, …" (CPU seconds by result kind), or that nothing was built."""
    if not seconds:
        return "nothing built"
    return ", ".join(f"{name} {value:,.0f} s" for name, value in seconds.items()) + f" (total {sum(seconds.values()):,.0f} s)"


def rebuilt(log: Path) -> list[str]:
    """From a cache log: one line per stored result that was found untrustworthy and rebuilt, and why."""
    if not Path(log).exists():
        return []
    entries = [json.loads(line) for line in Path(log).read_text().splitlines()]
    lines = [f"rebuilt {e['result']}/{e['file']}: it {e['rebuilt']}" for e in entries if e.get("rebuilt")]
    return list(dict.fromkeys(lines))


def cache_text(use: dict[str, Counter]) -> str:
    def listing(counter: Counter) -> str:
        return ", ".join(f"`{name}` ×{n}" if n > 1 else f"`{name}`" for name, n in sorted(counter.items()))

    reused, computed = sum(use["reused"].values()), sum(use["computed"].values())
    if not reused and not computed:
        return "none stored (everything on this page is computed as it runs)"
    parts = []
    if reused:
        parts.append(f"{reused} reused from the cache ({listing(use['reused'])})")
    if computed:
        parts.append(f"{computed} computed and stored ({listing(use['computed'])})")
    return "; ".join(parts)


def data_link(content: bytes, filename: str, label: str, mime: str) -> str:
    """An HTML link that downloads `content` as `filename`, carried in the page itself (no file to serve)."""
    encoded = base64.b64encode(content).decode()
    return (f'<a class="alignkd-download" download="{html.escape(filename)}" '
            f'href="data:{mime};base64,{encoded}">{html.escape(label)}</a>')


def modules_used(source: str) -> list[str]:
    """The `alignkd` modules a notebook imports (`from alignkd import theory` counts as `alignkd.theory`)."""
    import importlib.util

    found = set()
    pattern = r"^[ \t]*from[ \t]+(alignkd(?:\.\w+)*)[ \t]+import[ \t]+(?:\(([^)]*)\)|([\w \t,]+))"
    for match in re.finditer(pattern, source, flags=re.M):
        package = match.group(1)
        names = [n.strip() for n in (match.group(2) or match.group(3)).split(",") if n.strip()]
        submodules = [f"{package}.{n}" for n in names if importlib.util.find_spec(f"{package}.{n}") is not None] \
            if importlib.util.find_spec(package).submodule_search_locations else []
        found.update(submodules or [package])
    found.update(re.findall(r"^[ \t]*import[ \t]+(alignkd(?:\.\w+)*)", source, flags=re.M))
    return sorted(found)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


LONG_CELL = 10.0
"""Code cells that ran at least this many seconds are listed in a page's provenance (wall and build CPU seconds)."""


def footer(record: dict[str, Any], source_name: str, source: bytes) -> str:
    """The markdown that ends a chapter page: the provenance table and the downloads."""
    parameters = ", ".join(f"`{name} = {value!r}`" for name, value in record["parameters"].items()) or "none"
    rows = [
        ("profile", f"`{record['profile']}`"),
        ("parameters", parameters),
        ("commit", f"`{record['commit']}`"),
        ("library used", ", ".join(f"{{py:mod}}`{m}`" for m in record.get("modules", [])) or "none"),
        ("library digest", f"`sha256:{record['library'][:16]}` (every `alignkd/*.py` file)"),
        ("machine", machine_text(record["machine"])),
        ("executed", f"{record['executed_at']}, in {record['seconds']:.1f} s"),
        ("results", cache_text({k: Counter(v) for k, v in record["cache"].items()})),
    ]
    long = [c for c in record.get("cells", []) if c["wall_seconds"] >= LONG_CELL]
    if long:  # where the time went: a reader re-running the chapter knows which sections to shrink
        rows.append((f"cells of {LONG_CELL:.0f} s or more", "; ".join(
            f"{c['cell']} (`{c['first_line'][:40].strip()}`…): {c['wall_seconds']:,.0f} s, "
            f"{c['cpu_seconds']:,.0f} build CPU s" for c in long)))
    table = "\n".join(f"| {name} | {_cell(value)} |" for name, value in rows)
    commit = record["commit"]
    myst = data_link(source, source_name, f"MyST source ({source_name})", "text/markdown")
    return (
        "## Provenance\n\n"
        "This page was made by executing the chapter's notebook as follows.\n\n"
        f"| what | value |\n|---|---|\n{table}\n\n"
        f"Downloads: {myst} · the executed notebook (.ipynb, without progress or warning output) from the "
        "download button at the top of the page.\n"
    )
