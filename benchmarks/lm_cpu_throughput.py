"""Chapter 06's model passes on this CPU, one thread: the measurements `alignkd.chapters.ch06_cost` predicts CPU time from.

    OMP_NUM_THREADS=1 python benchmarks/lm_cpu_throughput.py            # measure, print the table and a literal
    OMP_NUM_THREADS=1 python benchmarks/lm_cpu_throughput.py --check    # also: cost.py's prediction / measured

One thread per process, as the book runs a chapter (and chapter 06's workers run a cell). For each model of the
profiles' CPU runs (the tiny / small / medium students on the synthetic language's vocabulary, the tiny / small /
10m / 30m students on SmolLM2's 49 152 tokens, the SmolLM2-135M GGUF p*, the exact Markov mixture) it times
the three passes the chapter makes:

- `sample`: `alignkd.lm.generation.sample` (the KV-cached ancestral loop; EOS disabled so every step runs), one
  call = one decode step of `batch` sequences;
- `score`: `token_logprobs` without gradients, one call = a batch of `batch` sequences of `length` positions;
- `train`: one optimiser step of the KD loop (`causal_lm_loss`, backward, gradient clipping, AdamW foreach).

It prints tokens/s per measurement and, last, a Python literal of them for `CPU_MEASUREMENTS` in `cost.py`. The
machine is shared (other processes may run), so the numbers are what one busy core gives; run it twice and
compare before replacing the stored ones.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import torch

SMOLLM2_VOCAB = 49152


def _repeat(call, min_seconds: float, min_calls: int = 2) -> float:
    """Seconds per call: one warm-up call, then calls until `min_seconds` have passed (at least `min_calls`)."""
    call()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        call()
        calls += 1
    return (time.perf_counter() - start) / calls


def _student(size: str, vocab: int):
    from alignkd.lm.students import make_student

    return make_student(size, vocab, bos_id=0, eos_id=1, pad_id=2, max_positions=256)


def time_sample(model, vocab: int, batch: int, length: int, min_seconds: float) -> float:
    """Seconds per decode step of `alignkd.lm.generation.sample` (prefill included, divided over the steps)."""
    from alignkd.lm.generation import sample

    def call():
        sample(model, [0], batch, length, eos_id=-1, pad_id=2, batch_size=batch, seed=0)

    return _repeat(call, min_seconds) / length


def time_score(model, vocab: int, batch: int, length: int, min_seconds: float) -> float:
    from alignkd.lm.generation import token_logprobs

    tokens = torch.randint(3, vocab, (batch, length))
    mask = torch.ones_like(tokens, dtype=torch.bool)

    def call():
        with torch.no_grad():
            token_logprobs(model, tokens, mask)

    return _repeat(call, min_seconds)


def time_train(model, vocab: int, batch: int, length: int, min_seconds: float) -> float:
    from alignkd.lm.kd import causal_lm_loss

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), foreach=True)
    tokens = torch.randint(3, vocab, (batch, length))
    mask = torch.ones_like(tokens, dtype=torch.bool)

    def call():
        loss = causal_lm_loss(model, tokens, mask, 1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    seconds = _repeat(call, min_seconds)
    model.eval()
    return seconds


def time_markov(kind: str, batch: int, length: int, min_seconds: float) -> float:
    from alignkd.lm.groundtruth import markov_mixture

    p_star = markov_mixture(vocab_size=64, n_topics=8, topic_markers=2)
    if kind == "sample":
        return _repeat(lambda: p_star.sample(batch, length, 0.95, seed=0, batch_size=batch), min_seconds) / length
    samples = p_star.sample(batch, length, 1.0, seed=0)
    return _repeat(lambda: p_star.log_prob(samples), min_seconds)


# (model, vocabulary, kind, batch, length): the passes the CPU profiles make. Lengths: 24 / 10 tokens for the
# synthetic language (default / quick), 4 for the SmolLM2 section (+ 1 prompt position when scored or trained).
PLAN = [
    *[(size, 64, kind, batch, length) for size in ("tiny", "small", "medium")
      for kind, batch, length in (("sample", 512, 24), ("sample", 64, 24), ("score", 512, 25), ("train", 64, 25),
                                  ("train", 8, 25))],
    *[(size, SMOLLM2_VOCAB, kind, batch, length) for size in ("tiny", "small", "10m", "30m")
      for kind, batch, length in (("sample", 512, 4), ("sample", 64, 8), ("score", 256, 9), ("train", 16, 5),
                                  ("train", 64, 25))],
    ("smollm2-135m", SMOLLM2_VOCAB, "train", 8, 25),
    ("smollm2-135m gguf", SMOLLM2_VOCAB, "sample", 64, 4),
    ("smollm2-135m gguf", SMOLLM2_VOCAB, "sample", 16, 8),
    ("smollm2-135m gguf", SMOLLM2_VOCAB, "score", 64, 9),
    ("markov_mixture", 64, "sample", 512, 24),
    ("markov_mixture", 64, "score", 1000, 25),
]


def measure(plan, min_seconds: float) -> list[dict]:
    from alignkd.lm.groundtruth import load_gguf_smollm2

    rows, models = [], {}
    for name, vocab, kind, batch, length in plan:
        if name == "markov_mixture":
            seconds = time_markov(kind, batch, length, min_seconds)
        else:
            key = (name, vocab)
            if key not in models:
                models.clear()  # one model in memory at a time
                models[key] = load_gguf_smollm2().model if name.endswith("gguf") else _student(name, vocab).eval()
            timer = {"sample": time_sample, "score": time_score, "train": time_train}[kind]
            seconds = timer(models[key], vocab, batch, length, min_seconds)
        tokens = batch if kind == "sample" else batch * length  # per call: a decode step, or a batch of positions
        row = {"model": name, "vocab": vocab, "kind": kind, "batch": batch, "length": length,
               "tokens_per_s": round(tokens / seconds, 1)}
        print(f"{name:18s} V={vocab:<6d} {kind:6s} batch {batch:4d} × {length:3d}  {seconds * 1e3:9.2f} ms/call  "
              f"{row['tokens_per_s']:12.1f} tokens/s", flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-seconds", type=float, default=1.0, help="time each pass at least this long")
    parser.add_argument("--check", action="store_true", help="print cost.py's CPU prediction / measured per row")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"load average {os.getloadavg()[0]:.2f}, {datetime.date.today()}")
    rows = measure(PLAN, args.min_seconds)
    print("\nCPU_MEASUREMENTS = (")
    for r in rows:
        print(f"    Measurement({r['model']!r}, {r['vocab']}, {r['kind']!r}, {r['batch']}, {r['length']}, "
              f"{r['tokens_per_s']}),")
    print(")")
    if args.check:
        from alignkd.chapters.ch06_cost import Measurement, cpu_machine, measurement_seconds

        machine = cpu_machine()
        print("\ncost.py's CPU model / this run's measurement, per row:")
        for r in rows:
            m = Measurement(r["model"], r["vocab"], r["kind"], r["batch"], r["length"], r["tokens_per_s"])
            print(f"  {m.model:18s} {m.kind:6s} {m.batch:4d} × {m.length:3d}: "
                  f"{measurement_seconds(machine, m) / m.seconds_per_call:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
