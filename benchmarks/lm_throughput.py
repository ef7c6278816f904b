"""KD training throughput and MFU, and generation throughput (dynamic vs static KV cache), on a GPU.

    python benchmarks/lm_throughput.py [--sizes smollm2-135m smollm2-360m] [--seq 512] [--batch 16]

Training: causal-LM steps of `alignkd.lm.kd.causal_lm_loss` on random full-length sequences, bf16
autocast, AdamW (0.9, 0.95); tokens/s and MFU = 6·N·tokens/s (+ attention 12·L·d·seq per token)
over the GPU's dense bf16 peak. Goal (issue 4): MFU ≥ 35 % at 360M on an H100.
Generation: tokens/s of `model.generate` with ancestral sampling (top_k = 0, top_p = 1) with the
dynamic and the static KV cache, and of `alignkd.lm.generation.sample` (our loop, dynamic cache).
Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def train_throughput(size: str, seq: int, batch: int, steps: int, compile_model: bool) -> dict:
    from alignkd.lm.kd import causal_lm_loss
    from alignkd.lm.students import count_parameters, make_student

    model = make_student(size, 49152, bos_id=1, eos_id=2, pad_id=2, max_positions=seq).cuda()
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
    from alignkd.lm.students import make_student

    model = make_student(size, 49152, bos_id=1, eos_id=2, pad_id=2).cuda().to(torch.bfloat16).eval()
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
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("lm_throughput: no GPU visible; this benchmark measures GPU throughput only. Nothing to do.")
        return 0
    name = torch.cuda.get_device_name()
    peak = peak_tflops(name)
    print(f"device: {name} (dense bf16 peak {peak or 'unknown'} TFLOP/s); seq {args.seq}, batch {args.batch}")
    for size in args.sizes:
        r = train_throughput(size, args.seq, args.batch, args.steps, args.compile)
        mfu = f"{r['tflops'] / peak:.1%}" if peak else "n/a"
        print(f"train {size:13s} {r['params'] / 1e6:6.1f}M params  {r['tokens_per_s']:10.0f} tokens/s  "
              f"{r['tflops']:6.1f} TFLOP/s  MFU {mfu}")
        torch.cuda.empty_cache()
    for size in args.sizes:
        g = generation_throughput(size, args.gen_batch, args.gen_tokens)
        print(f"generate {size:13s} dynamic {g['generate_dynamic']:9.0f} tok/s  static {g['generate_static']:9.0f} tok/s "
              f"(static/dynamic {g['generate_static'] / g['generate_dynamic']:.2f}x)  alignkd.sample "
              f"{g['alignkd_sample']:9.0f} tok/s")
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
