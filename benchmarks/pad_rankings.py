"""How PAD's ranking losses scale with n, the number of responses per group (n! rankings).

    python benchmarks/pad_rankings.py [--rows 256] [--max-n 8] [--repeats 5]

For n = 2..max_n it times one forward + backward of the PPD loss (Jensen–Shannon between two
Plackett–Luce distributions over all n! rankings) on `rows` groups, with the O(n!)-memory subset
implementation and with the dense O(n!·n) reference, and VPD (one ranking, O(n log n)) and
PPD decomposed into groups of n/2 for comparison. Each measurement runs in a fresh subprocess so that
its peak resident memory above the process's own baseline can be read from `ru_maxrss`; large tensors
are mmapped by the allocator and returned on free, so the figure tracks the peak of live tensors.
It prints the growth ratio from n−1 to n (time and memory should grow like n!/(n−1)! = n, times n for the
dense form's extra factor of n only in memory). Single-threaded, so numbers from a shared machine are
pessimistic but their ratios are meaningful.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("ppd", "ppd_dense", "ppd_half_groups", "vpd")


def _measure(variant: str, n: int, rows: int, repeats: int) -> dict:
    import torch

    from alignkd.pad.losses import jensen_shannon, plackett_luce_log_probs_dense, ppd_loss, vpd_loss

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(rows, n, generator=generator)
    teacher = torch.randn(rows, n, generator=generator)

    def step() -> float:
        scores = student.clone().requires_grad_(True)
        if variant == "ppd":
            loss = ppd_loss(scores, teacher).sum()
        elif variant == "ppd_dense":
            loss = jensen_shannon(plackett_luce_log_probs_dense(scores), plackett_luce_log_probs_dense(teacher)).sum()
        elif variant == "ppd_half_groups":
            loss = ppd_loss(scores, teacher, group_size=n // 2).sum()
        else:
            loss = vpd_loss(scores, teacher).sum()
        loss.backward()
        return loss.item()

    # Warm up on a tiny problem so that lazy initialisation is in the baseline, not the measurement.
    ppd_loss(torch.zeros(1, 2, requires_grad=True), torch.zeros(1, 2)).sum().backward()
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": statistics.median(times), "peak_mib": max(0, peak_kib - baseline_kib) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="groups per batch (e.g. trials × groups)")
    parser.add_argument("--max-n", type=int, default=8, help="largest n (8 → 40320 rankings)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dense-max-n", type=int, default=7,
                        help="largest n for the dense reference (n = 8 needs ~3.5 GiB and ~30 s per step)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child[0], int(args.child[1]), args.rows, args.repeats)))
        return

    results = {}
    for variant in VARIANTS:
        for n in range(2, args.max_n + 1):
            if (variant == "ppd_dense" and n > args.dense_max_n) or (variant == "ppd_half_groups" and n % 2):
                continue
            out = subprocess.run(
                [sys.executable, __file__, "--rows", str(args.rows), "--repeats", str(args.repeats), "--child", variant, str(n)],
                check=True, capture_output=True, text=True,
            )
            results[variant, n] = json.loads(out.stdout.strip().splitlines()[-1])

    print(f"PAD ranking losses, forward + backward on {args.rows} groups, 1 thread, median of {args.repeats}")
    print("peak = resident memory above the process baseline (MiB); ratio = value(n) / value(n-1)")
    for variant in VARIANTS:
        print(f"\n{variant}")
        print(f"{'n':>3} {'n!':>7} {'seconds':>10} {'ratio':>7} {'peak MiB':>10} {'ratio':>7} {'out MiB':>9}")
        for n in range(2, args.max_n + 1):
            if (variant, n) not in results:
                continue
            r = results[variant, n]
            prev = results.get((variant, n - 1))
            t_ratio = f"{r['seconds'] / prev['seconds']:.2f}" if prev else ""
            m_ratio = f"{r['peak_mib'] / prev['peak_mib']:.2f}" if prev and prev["peak_mib"] > 1 else ""
            out_mib = args.rows * math.factorial(n) * 4 / 2**20  # one float32 [rows, n!] distribution
            print(f"{n:>3} {math.factorial(n):>7} {r['seconds']:>10.5f} {t_ratio:>7} {r['peak_mib']:>10.1f} {m_ratio:>7} {out_mib:>9.2f}")
    n, dense_n = args.max_n, min(args.dense_max_n, args.max_n)
    print(f"\nat n = {dense_n}: dense / subset time {results['ppd_dense', dense_n]['seconds'] / results['ppd', dense_n]['seconds']:.2f}, "
          f"peak memory {results['ppd_dense', dense_n]['peak_mib'] / max(results['ppd', dense_n]['peak_mib'], 1e-9):.2f}")
    print(f"at n = {n}: PPD / VPD time {results['ppd', n]['seconds'] / results['vpd', n]['seconds']:.0f}", end="")
    if ("ppd_half_groups", n) in results:
        print(f"; PPD / PPD in two groups of {n // 2} time {results['ppd', n]['seconds'] / results['ppd_half_groups', n]['seconds']:.0f}", end="")
    print()


if __name__ == "__main__":
    main()
