"""Recorded GPU runs (`runs/gpu/<date>_<device>/`), read for the book as records: what ran, where, when.

    runs = records()                  # every committed record, oldest first ([] when none exists)
    print(describe(runs[-1]))         # date, commit, machine, sizes, stages, MFU and tokens/s, in sentences
    runs[-1].throughput               # ceiling, KD training and sampling rows of `benchmarks/gpu_smoke.py`
    runs[-1].metrics                  # its K-A / A-K table (`cached_run_pipelines` columns)

A record is what one run of `benchmarks/gpu_smoke.py` wrote, unchanged (`runs/gpu/README.md`); the profile
that re-creates its pipeline is `gpu-smoke`. A page shows a record for what it is — one run, on one machine,
of the commit it names — and says so when there is none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..cache import REPO_ROOT

RECORDS_DIR = REPO_ROOT / "runs" / "gpu"
PROFILE = "gpu-smoke"
REQUIRED = ("env.json", "summary.json")


@dataclass(frozen=True)
class GPURecord:
    """One recorded run: its folder, `env.json`, `summary.json`, and the tables it wrote (None if it did not)."""

    path: Path
    env: dict[str, Any]
    summary: dict[str, Any]
    throughput: pd.DataFrame | None
    metrics: pd.DataFrame | None

    @property
    def date(self) -> str:
        return str(self.env.get("started", ""))[:10]

    @property
    def commit(self) -> str:
        return str(self.env.get("commit") or self.summary.get("commit") or "unknown")

    @property
    def machine(self) -> str:
        return str(self.env.get("machine") or self.summary.get("machine") or "unknown")

    @property
    def stages(self) -> pd.DataFrame:
        """One row per stage: stage, kind, status, seconds, estimate_s, problems (count)."""
        rows = [{"stage": s["stage"], "kind": s.get("kind", ""), "status": s["status"], "seconds": s.get("seconds"),
                 "estimate_s": s.get("estimate_s"), "problems": len(s.get("problems", []))}
                for s in self.summary.get("stages", [])]
        return pd.DataFrame(rows, columns=["stage", "kind", "status", "seconds", "estimate_s", "problems"])


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() and path.stat().st_size else None


def load_record(folder: Path) -> GPURecord:
    """The record in `folder`; raises naming the folder and the file when one it needs is missing or unreadable."""
    folder = Path(folder)
    missing = [name for name in REQUIRED if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a GPU record: it has no {', '.join(missing)}")
    try:
        env = json.loads((folder / "env.json").read_text())
        summary = json.loads((folder / "summary.json").read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{folder}: unreadable record ({error})") from None
    return GPURecord(folder, env, summary, _read_csv(folder / "throughput.csv"), _read_csv(folder / "metrics.csv"))


def records(root: Path = RECORDS_DIR) -> list[GPURecord]:
    """Every record under `root` (folders holding env.json and summary.json), in folder-name (date) order."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [load_record(folder) for folder in sorted(p for p in root.iterdir() if p.is_dir())
            if all((folder / name).exists() for name in REQUIRED)]


def throughput_table(record: GPURecord) -> pd.DataFrame:
    """The record's measured rates: kind (matmul ceiling, train, sample), size, batch, tokens/s, TFLOP/s, MFU."""
    if record.throughput is None:
        return pd.DataFrame(columns=["kind", "size", "batch", "tokens_per_s", "tflops", "mfu"])
    return record.throughput[["kind", "size", "batch", "tokens_per_s", "tflops", "mfu"]]


def describe(record: GPURecord) -> str:
    """The record in sentences: what ran, where and when, how far it got, and at what rates."""
    counts = record.summary.get("stages_by_status", {})
    done = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    problems = sum(len(v) for v in record.summary.get("placement_problems", {}).values())
    p_star = record.summary.get("p_star", {})
    lines = [f"Recorded {record.date} on {record.machine} (commit {record.commit[:12]}), "
             f"{record.summary.get('device', '?')} {record.summary.get('precision', '?')}; "
             f"profile `{record.summary.get('params', {}).get('profile', PROFILE)}` as of that commit"
             f"{' shrunk for a CPU rehearsal' if record.summary.get('tiny') else ''}; "
             f"p* {p_star.get('ground_truth', '?')} ({p_star.get('weights', 'weights as named')}).",
             f"Stages: {done or 'none'}; forward passes off the requested device or precision: {problems}."]
    stages = record.stages
    missed = stages.loc[stages["status"] != "done", "stage"].tolist()
    if missed:
        lines.append(f"Not done (the budget's end skips a stage it cannot finish): {', '.join(missed)}.")
    table = throughput_table(record)
    ceiling = table[table["kind"] == "matmul"]
    if len(ceiling):
        lines.append(f"Measured bf16 matmul ceiling {float(ceiling['tflops'].iloc[0]):.3g} TFLOP/s.")
    for row in table[table["kind"] != "matmul"].itertuples():
        lines.append(f"{row.kind} {row.size} (batch {row.batch}): {row.tokens_per_s:,.0f} tokens/s, "
                     f"MFU {100 * row.mfu:.1f} %.")
    if record.throughput is not None and "median_s" in record.throughput:
        steps = record.throughput.assign(ms=1e3 * record.throughput["median_s"]
                                         / record.throughput["tokens_per_row"].where(
                                             record.throughput["kind"] == "sample", 1))
        spans = {kind: steps.loc[steps["kind"] == kind, "ms"] for kind in ("train", "sample")}
        if all(len(v) for v in spans.values()):
            lines.append(f"One step took {spans['train'].min():.0f}–{spans['train'].max():.0f} ms to train "
                         f"(every size at one batch) and {spans['sample'].min():.0f}–{spans['sample'].max():.0f} ms "
                         f"to decode (every size and batch): when the step time barely follows the model's size, "
                         f"the GPU is waiting on the host.")
    return "\n".join(lines)


def no_record_note(root: Path = RECORDS_DIR) -> str:
    """What a page says while no GPU run has been recorded."""
    where = root.relative_to(REPO_ROOT) if root.is_relative_to(REPO_ROOT) else root
    return (f"No GPU run has been recorded: {where}/ holds no record. Everything about GPUs in this book is a "
            f"prediction (`python -m alignkd check --profile {PROFILE}`) or a CPU rehearsal of the GPU path; "
            f"`benchmarks/gpu_smoke.py` makes a record ({where}/README.md).")
