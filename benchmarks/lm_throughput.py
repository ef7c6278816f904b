"""KD training throughput and MFU, and generation throughput (dynamic vs static KV cache), on a GPU.

    python benchmarks/lm_throughput.py [--sizes smollm2-135m smollm2-360m] [--seq 512] [--batch 16]
    python benchmarks/lm_throughput.py --sizes 10m 30m smollm2-135m --seq 65 --batch 256 --gen-batch 512 \
        --gen-tokens 64 --record runs/gpu/throughput-h200.json        # the `gpu` profile's shapes, as a record

Training: causal-LM steps of `alignkd.lm.kd.causal_lm_loss` on random full-length sequences, bf16
autocast, AdamW (0.9, 0.95); tokens/s and MFU = 6·N·tokens/s (+ attention 12·L·d·seq per token)
over the GPU's dense bf16 peak. Goal (issue 4): MFU ≥ 35 % at 360M on an H100.
Generation: tokens/s of `model.generate` with ancestral sampling (top_k = 0, top_p = 1) with the
dynamic and the static KV cache, and of `alignkd.lm.generation.sample` (our loop, dynamic cache).
Without a GPU it says so and exits 0.

`--record PATH` writes what it measured as a GPU record of `alignkd.chapters.ch06_cost` (`GPURates`: per size
`train_tokens_per_s` at `train_batch_tokens`, `mfu`, and `sample_tokens_per_s` of `alignkd.lm.generation.sample`
at `sample_batch`), which then replaces the cost model's assumptions for that GPU in `alignkd check`. Sizes are
those of `STUDENT_SIZES` and `smollm2-1.7b` (the paper's p*; `smollm2-135m` stands for the GGUF p* too).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def make_model(size: str, max_positions: int = 2048):
    """A randomly initialised Llama of a student size, or of SmolLM2-1.7B's released shape (`smollm2-1.7b`)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignkd.chapters.ch06_cost import SMOLLM2_1_7B, SMOLLM2_VOCAB
    from alignkd.lm.students import make_student

    if size == "smollm2-1.7b":
        config = LlamaConfig(vocab_size=SMOLLM2_VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                             max_position_embeddings=max_positions, **SMOLLM2_1_7B)
        return LlamaForCausalLM(config)
    return make_student(size, 49152, bos_id=1, eos_id=2, pad_id=2, max_positions=max_positions)


def train_throughput(size: str, seq: int, batch: int, steps: int, compile_model: bool) -> dict:
    from alignkd.lm.kd import causal_lm_loss
    from alignkd.lm.students import count_parameters

    model = make_model(size, max_positions=seq).cuda()
    model.config._attn_implementation = "sdpa"
    n_params = count_parameters(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.95), fused=True)
    step_fn = torch.compile(model) if compile_model else model
    tokens = torch.randint(3, 49152, (batch, seq), device="cuda")
    mask = torch.ones_like(tokens, dtype=torch.bool)
    for i in range(steps + 3):
        if i == 3:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = causal_lm_loss(step_fn, tokens, mask, 1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tokens_per_s = steps * batch * seq / elapsed
    cfg = model.config
    flops_per_token = 6 * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
    return {"size": size, "params": n_params, "tokens_per_s": tokens_per_s, "tflops": flops_per_token * tokens_per_s / 1e12}


def generation_throughput(size: str, batch: int, new_tokens: int) -> dict:
    from alignkd.lm.generation import sample

    model = make_model(size).cuda().to(torch.bfloat16).eval()
    prompt = torch.full((batch, 1), 504, device="cuda")
    out = {}
    for cache in ("dynamic", "static"):
        kwargs = dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=new_tokens,
                      min_new_tokens=new_tokens, pad_token_id=2)
        if cache == "static":
            kwargs["cache_implementation"] = "static"
        model.generate(prompt, **kwargs)  # warm-up (compiles the static graph)
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(prompt, **kwargs)
        torch.cuda.synchronize()
        out[f"generate_{cache}"] = batch * new_tokens / (time.perf_counter() - start)
    torch.cuda.synchronize()
    start = time.perf_counter()
    produced = sample(model, [504], batch, new_tokens, eos_id=-1, pad_id=2, batch_size=batch, seed=0)
    torch.cuda.synchronize()
    out["alignkd_sample"] = int(produced.response_lengths.sum()) / (time.perf_counter() - start)
    return {"size": size, **out}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["smollm2-135m", "smollm2-360m"])
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--gen-batch", type=int, default=64)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--compile", action="store_true", help="torch.compile the training model")
    parser.add_argument("--record", type=Path, help="write the measurements as a GPU record of alignkd.chapters.ch06_cost")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("lm_throughput: no GPU visible; this benchmark measures GPU throughput only. Nothing to do.")
        return 0
    name = torch.cuda.get_device_name()
    peak = peak_tflops(name)
    print(f"device: {name} (dense bf16 peak {peak or 'unknown'} TFLOP/s); seq {args.seq}, batch {args.batch}")
    record = {}
    for size in args.sizes:
        r = train_throughput(size, args.seq, args.batch, args.steps, args.compile)
        mfu = f"{r['tflops'] / peak:.1%}" if peak else "n/a"
        print(f"train {size:13s} {r['params'] / 1e6:6.1f}M params  {r['tokens_per_s']:10.0f} tokens/s  "
              f"{r['tflops']:6.1f} TFLOP/s  MFU {mfu}")
        record[size] = {"train_tokens_per_s": r["tokens_per_s"], "train_batch_tokens": args.batch * args.seq}
        if peak:
            record[size]["mfu"] = r["tflops"] / peak
        torch.cuda.empty_cache()
    for size in args.sizes:
        g = generation_throughput(size, args.gen_batch, args.gen_tokens)
        print(f"generate {size:13s} dynamic {g['generate_dynamic']:9.0f} tok/s  static {g['generate_static']:9.0f} tok/s "
              f"(static/dynamic {g['generate_static'] / g['generate_dynamic']:.2f}x)  alignkd.sample "
              f"{g['alignkd_sample']:9.0f} tok/s")
        record[size] |= {"sample_tokens_per_s": g["alignkd_sample"], "sample_batch": args.gen_batch}
        torch.cuda.empty_cache()
    if args.record:
        write_record(args.record, name, record, argv if argv is not None else sys.argv[1:])
    return 0


def write_record(path: Path, device: str, throughput: dict, argv) -> None:
    """`alignkd.chapters.ch06_cost.GPURates` as JSON, checked by loading it back."""
    from alignkd.chapters.ch06_cost import load_gpu_record

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": device, "date": datetime.date.today().isoformat(), "commit": commit,
                                "command": " ".join(["python benchmarks/lm_throughput.py", *argv]),
                                "throughput": throughput}, indent=1) + "\n")
    load_gpu_record(path)
    print(f"record: {path}")


if __name__ == "__main__":
    sys.exit(main())
