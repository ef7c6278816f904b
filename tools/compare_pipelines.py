"""Chapter 06's final gaps from two results folders, side by side: did a change of computation move a number or a verdict?

    python tools/compare_pipelines.py results/default /other/results/default [--tau-topic 0.5] [--final-tau 0.95]

Reads every `lm_pipeline_metrics` table of each folder whose config has the chapter's main τ_topic (the coverage
sweep's other τ_topic values are left out), computes `lm.summary.final_gaps` (A-K − K-A per algorithm and metric,
paired by seed, 95 % bootstrap interval) and the verdict of "A-K > K-A" from that interval, and prints both folders'
numbers beside each other. Written to compare the seeds of an algorithm trained one at a time with the same seeds
trained as one computation (issue 20); any two runs of the same recipes compare the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from alignkd.claims import verdict_from_interval
from alignkd.lm.summary import final_gaps

METRICS = ("reward", "target_precision", "target_share")


def main_tables(root: Path, tau_topic: float) -> pd.DataFrame:
    """The pipeline metrics of `root` whose p'' was distilled at `tau_topic`, one table, each model's row once."""
    tables = []
    for table in sorted((root / "lm_pipeline_metrics").glob("*.parquet")):
        key = json.loads(table.with_suffix(".json").read_text())["config"]
        if key["pipelines"]["config"]["low_recall"]["data"]["tau_topic"] == tau_topic:
            tables.append(pd.read_parquet(table))
    if not tables:
        raise SystemExit(f"{root}: no lm_pipeline_metrics table with tau_topic = {tau_topic}")
    # the coverage sweep's run at the main τ_topic is the main run again (the same models): its rows once
    return pd.concat(tables, ignore_index=True).drop_duplicates(["algorithm", "seed", "model", "final_tau"])


def gaps(root: Path, tau_topic: float, final_tau: float) -> pd.DataFrame:
    table = final_gaps(main_tables(root, tau_topic), final_tau)
    table = table[table["metric"].isin(METRICS)].copy()
    table["verdict"] = [verdict_from_interval(low, high)[0] if low == low else "no interval"
                        for low, high in zip(table["low"], table["high"])]
    return table.set_index(["algorithm", "metric"])[["ak_mean", "ka_mean", "gap", "low", "high", "verdict"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--tau-topic", type=float, default=0.5, help="the chapter's tau_topic (default profile: 0.5)")
    parser.add_argument("--final-tau", type=float, default=0.95, help="A-K's main final-KD temperature")
    args = parser.parse_args()
    both = pd.concat({str(args.first): gaps(args.first, args.tau_topic, args.final_tau),
                      str(args.second): gaps(args.second, args.tau_topic, args.final_tau)}, axis=1)
    pd.set_option("display.width", 250)
    print(both.round(4).to_string())
    first, second = (both[str(path)]["verdict"] for path in (args.first, args.second))
    changed = both.index[first != second]
    print(f"verdicts changed: {len(changed)} of {len(both)}" + (f" ({', '.join(map(str, changed))})" if len(changed) else ""))


if __name__ == "__main__":
    main()
