"""One prepared GPU run (SPEC §7): the device, the throughput of our code on it, and chapter 06's pipeline.

    python benchmarks/gpu_smoke.py --out DIR --budget SECONDS [--device cuda] [--tokenizer DIR] [--work DIR]
    python benchmarks/gpu_smoke.py --out DIR --budget 100 --device cpu --tiny      # the CPU rehearsal

The GPU machine gives one command at most 10 minutes and a session 15, start-up included, so everything it
should tell us is asked in one run, and every stage writes its results the moment it ends: a run cut off at
its limit still returns what it did. Stages, in order:

- env          versions, device, memory, bf16 support, commit                             -> env.json (first)
- params       chapter 06's parameters under the `gpu-smoke` profile: the plan of the pipeline stages
- ceiling      a large bf16 matmul's TFLOP/s on this device: the MFU's denominator        -> throughput.csv/json
- train:SIZE:bB KD training steps (`kd.causal_lm_loss`, AdamW (0.9, 0.95), bf16 autocast): tokens/s and
               MFU = (6·N + 12·L·d·T) FLOPs per token / the ceiling (PaLM's count; attention not halved)
- sample:SIZE:bB `generation.sample` (our ancestral sampler, KV cache) under bf16 autocast: tokens/s
- p*           SmolLM2-135M-shaped: the real GGUF (`gguf:smollm2`) where it and the `gguf` package are here,
               else seeded random weights saved with the real SmolLM2 tokenizer (`hf:/folder`)
- references, then per algorithm K-A, A-K (its final KD included) and evaluation (`cached_run_pipelines`, which
               reads the aligned models back from the store and scores them)        -> metrics.csv, trajectories.csv

Each stage runs inside `alignkd.lm.device.placement_record()`; summary.json, rewritten after every stage,
holds each one's status (done / skipped / failed / cut off), wall time, estimate, and the tally of its
forward passes by (model, device, autocast dtype) with the problems against the requested placement.
Before a stage starts, it is skipped when the budget left is below its estimate (1.5 × the longest stage of
its kind so far; a first stage of its kind is estimated from the references' time, `FIRST_OF_KIND`). At the
end of the budget an alarm stops the stage in progress, so summary.json is always the last thing written.

`--tiny` shrinks every shape (a `tiny` student for throughput; a small random Llama as p* on the real
SmolLM2 tokenizer if one is at hand, else on the synthetic language's tokenizer; a few samples and
iterations): `--tiny --device cpu` rehearses the whole run in about a minute on one core, bf16 included
(torch autocasts to bfloat16 on the CPU too). `tests/test_gpu_smoke.py` runs it.
"""

from __future__ import annotations

import time

START = time.monotonic()  # the budget counts from here: the imports below are part of what the machine's minutes pay for

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the GPU machine runs a checkout in which alignkd is not installed

import pandas as pd
import torch
import transformers

from alignkd.cache import ResultStore
from alignkd.chapters import call_with, ch06_llm, profile_values
from alignkd.lm.device import Placement, placement_record
from alignkd.lm.experiments import cached_a_k_final, cached_align, cached_references, cached_run_pipelines
from alignkd.lm.generation import sample
from alignkd.lm.groundtruth import markov_tokenizer, smollm2_gguf_path
from alignkd.lm.kd import causal_lm_loss
from alignkd.lm.students import count_parameters, make_student

VOCAB = 49152  # the SmolLM2 tokenizer's: every throughput shape has the real embedding and LM head
SMOKE_PROFILE = "gpu-smoke"
# The rehearsal: every count at its notebook minimum or near it, so that a vocabulary of 49 152 fits a minute
# of one CPU core (a KD step at batch 50 × 5 tokens costs ~1 s there: the logits dominate).
TINY = dict(high_size="tiny", low_size="tiny", max_new_tokens=4, n_high=100, n_low=100, kd_epochs=1.0, kd_batch=50,
            kd_validation=0, kd_patience=0, seeds=[0], iterations=1, eval_every=1, batch_size=4, dpo_grad_steps=1,
            n_eval=10, final_taus=[0.95])
P_STAR_SIZE = {False: "smollm2-135m", True: "small"}  # by --tiny
THROUGHPUT_SIZES = {False: ("10m", "30m", "smollm2-135m"), True: ("tiny",)}


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What the throughput stages measure, and for how long at most."""

    matmul: int  # n of the n × n × n bf16 ceiling matmul
    train_batches: tuple[int, ...]  # a KD step of chapter 06's size (gpu-smoke: 64 × 33 positions), and a larger one
    train_seq: int
    train_steps: int
    sample_batches: tuple[int, ...]  # alignment's batch, and KD data generation's
    sample_tokens: int  # the pipeline's response length (gpu-smoke's max_new_tokens): a decode step grows with it
    repeats: int  # timed sampling calls
    warmup: int
    seconds: float  # time box of one measurement's timed part


SHAPES = {
    False: Shapes(matmul=8192, train_batches=(4, 16), train_seq=512, train_steps=20, sample_batches=(64, 512),
                  sample_tokens=32, repeats=3, warmup=3, seconds=10.0),
    True: Shapes(matmul=512, train_batches=(4,), train_seq=16, train_steps=3, sample_batches=(8,), sample_tokens=4,
                 repeats=1, warmup=1, seconds=5.0),
}

MARGIN = 1.5  # estimate = MARGIN × the longest stage of the same kind so far
RESERVE = 2.0  # seconds kept for the last summary.json
# A first K-A / A-K / evaluation is estimated as this share of the references' time (in the CPU rehearsal:
# K-A 0.06, A-K 0.4 to 0.55, evaluation 0.13 to 0.3; A-K trains a student as the references do three times).
FIRST_OF_KIND = {"K-A": 0.3, "A-K": 0.6, "evaluation": 0.4}

THROUGHPUT_COLUMNS = ["kind", "size", "params", "batch", "tokens_per_row", "steps", "median_s", "tokens_per_s",
                      "tflops", "mfu", "device", "dtype"]


# --------------------------------------------------------------------------- writing as we go


def log(message: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S} +{time.monotonic() - START:6.1f}s] {message}", flush=True)


def write_atomic(path: Path, text: str) -> None:
    """Readers (and a run killed mid-write) see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, value) -> None:
    write_atomic(path, json.dumps(value, indent=2, default=str) + "\n")


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    write_atomic(path, frame.to_csv(index=False))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- stages under a budget


class BudgetSpent(BaseException):
    """Raised by the alarm when the budget ends; not an Exception, so no library `except Exception` eats it."""


class Alarm:
    """The end of the budget. It interrupts a stage's work only: bookkeeping between stages is never cut in
    half, and once it has rung every later stage is skipped."""

    rang = False
    in_work = False

    @staticmethod
    def ring(signum, frame):
        Alarm.rang = True
        if Alarm.in_work:
            raise BudgetSpent()


class Stages:
    """Runs stages in order inside placement records and rewrites summary.json after each one."""

    def __init__(self, out: Path, budget: float, placement: Placement, header: dict):
        self.out, self.placement, self.header = out, placement, header
        self.deadline = START + budget
        self.records: list[dict] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def arm(self) -> None:
        signal.signal(signal.SIGALRM, Alarm.ring)
        if self.left() > 0:
            signal.setitimer(signal.ITIMER_REAL, self.left())
        else:
            Alarm.rang = True

    @staticmethod
    def disarm() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)

    def status(self, name: str) -> str | None:
        return next((r["status"] for r in self.records if r["stage"] == name), None)

    def estimate(self, kind: str, prior: float = 0.0) -> float:
        taken = [r["seconds"] for r in self.records if r["kind"] == kind and r["status"] == "done"]
        return MARGIN * (max(taken) if taken else prior)

    def seconds(self, name: str) -> float:
        return next((r["seconds"] for r in self.records if r["stage"] == name and r["status"] == "done"), 0.0)

    def run(self, name: str, kind: str, estimate: float, work, needs: tuple[str, ...] = (), always: bool = False):
        """`work()`'s value, or None when the stage is skipped, fails or is cut off (summary.json says which).
        `always`: run even after the budget (reading the parameters costs nothing and names the later stages)."""
        record = {"stage": name, "kind": kind, "estimate_s": round(estimate, 1)}
        missing = [n for n in needs if self.status(n) != "done"]
        left = self.left()
        if missing:
            reason = f"needs {', '.join(missing)}, which did not finish"
        elif Alarm.rang and not always:
            reason = "budget spent"
        elif left - RESERVE < estimate and not always:
            reason = f"too little budget: {left:.0f} s left, estimate {estimate:.0f} s"
        else:
            reason = None
        if reason:
            record.update(status="skipped", reason=reason)
            log(f"{name}: skipped — {reason}")
            self.records.append(record)
            self.write_summary(finished=False)
            return None

        log(f"{name}: start ({left:.0f} s of budget left, estimate {estimate:.0f} s)")
        value = None
        begun = time.monotonic()
        with placement_record() as tally:
            try:
                Alarm.in_work = True
                value = work()
                synchronize(self.placement.device)
                record["status"] = "done"
            except BudgetSpent:
                value = None
                record.update(status="cut off", reason="the budget ended during this stage")
            except Exception as error:  # one failed stage must not lose the others: record it and go on
                record.update(status="failed", error=f"{type(error).__name__}: {error}",
                              traceback=traceback.format_exc(limit=-8))
            finally:
                Alarm.in_work = False
        record["seconds"] = round(time.monotonic() - begun, 2)
        record["placement"] = [{"owner": owner, "device": device, "dtype": str(dtype).removeprefix("torch."),
                                "forwards": count}
                               for (owner, device, dtype), count in sorted(tally.counts.items(), key=str)]
        record["problems"] = tally.problems(self.placement)
        log(f"{name}: {record['status']} in {record['seconds']:.1f} s"
            + (f" — {record.get('error', record.get('reason'))}" if record["status"] != "done" else "")
            + (f"; placement problems: {record['problems']}" if record["problems"] else ""))
        self.records.append(record)
        self.write_summary(finished=False)
        return value

    def write_summary(self, finished: bool) -> None:
        counts = {status: sum(r["status"] == status for r in self.records)
                  for status in ("done", "skipped", "failed", "cut off")}
        problems = {r["stage"]: r["problems"] for r in self.records if r.get("problems")}
        write_json(self.out / "summary.json", {
            **self.header, "finished": finished, "elapsed_s": round(time.monotonic() - START, 1),
            "stages_by_status": counts, "placement_problems": problems, "stages": self.records})


# --------------------------------------------------------------------------- env


def commit_of(explicit: str | None) -> str:
    """`--commit`, else git's HEAD (with `-dirty` when the tree has changes), else a COMMIT file, else unknown."""
    if explicit:
        return explicit
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    for path in (REPO / ".gpu_bundle" / "COMMIT", REPO / "COMMIT"):  # the checkout sent to the GPU has no .git
        if path.exists():
            return path.read_text().strip()
    return "unknown"


def bf16_autocast_works(device: torch.device) -> bool:
    try:
        layer = torch.nn.Linear(8, 8).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return layer(torch.ones(2, 8, device=device)).dtype == torch.bfloat16
    except Exception:
        return False


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def environment(args, device: torch.device) -> dict:
    import accelerate

    info = {
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "argv": sys.argv,
        "commit": commit_of(args.commit), "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "accelerate": accelerate.__version__,
        "pandas": pd.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "requested_device": args.device, "tiny": args.tiny,
        "budget_s": args.budget,
        # stated, not changed: the numbers below are measured with torch's defaults
        "allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_available": torch.cuda.is_available(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(device_name=properties.name, device_count=torch.cuda.device_count(),
                    memory_gib=round(properties.total_memory / 2**30, 1),
                    capability=f"{properties.major}.{properties.minor}",
                    multiprocessors=properties.multi_processor_count, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), bf16_supported=torch.cuda.is_bf16_supported())
        try:
            info["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            info["nvidia_smi"] = f"unavailable: {error}"
    else:
        info.update(device_name=cpu_model(),
                    memory_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1))
    info["bf16_autocast"] = bf16_autocast_works(device)
    info["machine"] = (f"{info['device_name']}, {info['memory_gib']} GiB, {info['cpu_count']} CPU cores; "
                       f"Python {info['python']}, torch {info['torch']}, transformers {info['transformers']}")
    return info


# --------------------------------------------------------------------------- throughput


def timed(step, device: torch.device, warmup: int, repeats: int, seconds: float) -> list[float]:
    """Wall seconds of each of up to `repeats` calls of `step` after `warmup` untimed ones, stopping once
    `seconds` are spent; synchronised before every clock read, as device work is asynchronous."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times, began = [], time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - began < seconds):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def ceiling(device: torch.device, shapes: Shapes) -> dict:
    """TFLOP/s of an n × n × n bf16 matmul on random data (zeros run faster than real data: METHOD.md)."""
    n = shapes.matmul
    g = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(n, n, generator=g, device=device).to(torch.bfloat16) for _ in range(2))
    times = timed(lambda: a @ b, device, warmup=3, repeats=10, seconds=shapes.seconds)
    median = statistics.median(times)
    return {"kind": "matmul", "size": f"{n}x{n}x{n}", "params": 0, "batch": 1, "tokens_per_row": 0,
            "steps": len(times), "median_s": median, "tokens_per_s": float("nan"), "tflops": 2 * n**3 / median / 1e12,
            "mfu": float("nan"), "device": device.type, "dtype": "bf16"}


def training_throughput(size: str, batch: int, placement: Placement, shapes: Shapes, ceiling_tflops: float) -> dict:
    device = placement.device
    seq = shapes.train_seq
    model = make_student(size, VOCAB, bos_id=1, eos_id=2, pad_id=2, max_positions=seq, seed=0).to(device)
    # the KD trainer's optimiser (App. C.2); foreach: the batched update train_student uses
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.95), foreach=True)
    g = torch.Generator(device).manual_seed(0)
    tokens = torch.randint(3, VOCAB, (batch, seq), generator=g, device=device)  # random ids: never time on zeros
    mask = torch.ones_like(tokens, dtype=torch.bool)
    model.train()

    def step():
        with placement.autocast():
            loss = causal_lm_loss(model, tokens, mask, 1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = timed(step, device, shapes.warmup, shapes.train_steps, shapes.seconds)
    # N counts the tied embedding once: as the LM head it is a matmul of every token, as the input a lookup
    n_params, config = count_parameters(model), model.config
    flops_per_token = 6 * n_params + 12 * config.num_hidden_layers * config.hidden_size * seq
    median = statistics.median(times)
    tokens_per_s = batch * seq / median
    tflops = flops_per_token * tokens_per_s / 1e12
    return {"kind": "train", "size": size, "params": n_params, "batch": batch, "tokens_per_row": seq,
            "steps": len(times), "median_s": median, "tokens_per_s": tokens_per_s, "tflops": tflops,
            "mfu": tflops / ceiling_tflops, "device": device.type, "dtype": placement.precision}


def sampling_throughput(size: str, batch: int, placement: Placement, shapes: Shapes, ceiling_tflops: float) -> dict:
    """Sampled tokens/s of `generation.sample` (eos_id −1: every sequence runs the full length); the FLOPs
    counted are the forward's 2·N per token, so its MFU shows how far a memory-bound loop is from the ceiling."""
    device = placement.device
    model = make_student(size, VOCAB, bos_id=1, eos_id=2, pad_id=2, seed=0).to(device)
    new_tokens = shapes.sample_tokens

    def draw(length: int):
        with placement.autocast():
            return sample(model, [1], batch, length, eos_id=-1, pad_id=2, batch_size=batch, seed=0)

    draw(2)  # warm-up: kernels, allocator, cache
    times = timed(lambda: draw(new_tokens), device, 0, shapes.repeats, shapes.seconds)
    n_params = count_parameters(model)
    median = statistics.median(times)
    tokens_per_s = batch * new_tokens / median
    tflops = 2 * n_params * tokens_per_s / 1e12
    return {"kind": "sample", "size": size, "params": n_params, "batch": batch, "tokens_per_row": new_tokens,
            "steps": len(times), "median_s": median, "tokens_per_s": tokens_per_s, "tflops": tflops,
            "mfu": tflops / ceiling_tflops, "device": device.type, "dtype": placement.precision}


# --------------------------------------------------------------------------- p* and chapter 06's parameters


def gguf_at_hand() -> Path | None:
    """The SmolLM2 GGUF, when it and the `gguf` package (transformers reads the file with it) are installed."""
    try:
        path = smollm2_gguf_path()
    except FileNotFoundError:
        return None
    return path if importlib.util.find_spec("gguf") else None


def smollm2_tokenizer(folder: Path | None, work: Path):
    """(tokenizer, {bos, eos, pad}, where it came from): a folder written by `alignkd.lm.gguf.extract_tokenizer`
    (`--tokenizer`), or extracted here from the GGUF; None when neither is at hand."""
    from transformers import AutoTokenizer

    if folder is None:
        gguf = gguf_at_hand()
        if gguf is None:
            return None
        from alignkd.lm.gguf import extract_tokenizer

        folder = extract_tokenizer(gguf, work / "tokenizer")
    ids = json.loads((folder / "special_ids.json").read_text())  # the GGUF's metadata, not transformers' reading
    tokenizer = AutoTokenizer.from_pretrained(folder)
    read = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}
    if any(ids.get(k) is not None and read[k] != ids[k] for k in read):
        raise ValueError(f"{folder}: the tokenizer's special ids {read} differ from special_ids.json's {ids}")
    return tokenizer, ids, str(folder)


def build_p_star(args, work: Path) -> dict:
    """p*'s ground-truth spec. Random weights are saved with the tokenizer, so `hf:<folder>` loads offline."""
    if not args.tiny and gguf_at_hand():
        return {"ground_truth": "gguf:smollm2", "weights": "SmolLM2-135M-Instruct (Q4_1 GGUF)", "prompt": "The"}
    found = smollm2_tokenizer(args.tokenizer, work)
    if found is None:
        if not args.tiny:
            raise FileNotFoundError("neither the SmolLM2 GGUF nor its tokenizer is here: pass --tokenizer "
                                    ".gpu_bundle/tokenizer (made by tools/gather_gpu_bundle.py)")
        tokenizer, ids, source = markov_tokenizer(64), {"bos": 0, "eos": 1, "pad": 2}, "markov_tokenizer(64)"
        prompt = "w4"  # a word of the synthetic vocabulary ("The" would be <unk>)
    else:
        (tokenizer, ids, source), prompt = found, "The"
    size = P_STAR_SIZE[args.tiny]
    pad = ids["pad"] if ids.get("pad") is not None else ids["eos"]
    model = make_student(size, len(tokenizer), bos_id=ids["bos"], eos_id=ids["eos"], pad_id=pad, seed=args.seed)
    folder = work / "p_star"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"ground_truth": f"hf:{folder.resolve()}", "weights": f"random {size} (seed {args.seed})",
            "tokenizer": source, "prompt": prompt, "params": count_parameters(model)}


def smoke_params(args) -> tuple[dict, str]:
    """(parameters, where they came from): the gpu-smoke profile,
    shrunk by `TINY` for the rehearsal, on the requested device in bf16 (p* is set once it is built)."""
    params, source = profile_values("06_llm", SMOKE_PROFILE), f"params/{SMOKE_PROFILE}.yaml"
    if args.tiny:
        params, source = {**params, **TINY}, source + " shrunk by TINY"
    params.update(device=args.device, bf16=True, tau_topic=1.0)  # τ_topic: real LMs have no topics
    return params, source


# --------------------------------------------------------------------------- the run


def prepare_work(work: Path) -> None:
    """A fresh store for every run (cached results would time nothing); only a folder this script made is emptied."""
    mark = work / ".gpu_smoke_work"
    if work.exists() and any(work.iterdir()):
        if not mark.exists():
            raise FileExistsError(f"--work {work} is not empty and was not made by this script; give an empty folder")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    mark.touch()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the record (a few small files)")
    parser.add_argument("--budget", type=float, required=True, help="seconds for the whole run, imports included")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: the CPU rehearsal")
    parser.add_argument("--tokenizer", type=Path, help="the SmolLM2 tokenizer folder of alignkd.lm.gguf.extract_tokenizer")
    parser.add_argument("--work", type=Path, help="scratch folder for models and the result store (default OUT/work; "
                        "on the GPU machine put it outside $OUT, of which only 8 files come back)")
    parser.add_argument("--commit", help="the commit this checkout is (default: git, else .gpu_bundle/COMMIT)")
    parser.add_argument("--seed", type=int, default=0, help="seed of p*'s random weights")
    args = parser.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()  # the log holds stage lines, not a bar per model loaded
    out = args.out
    work = args.work or out / "work"
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("env.json", "throughput.csv", "throughput.json", "metrics.csv", "trajectories.csv", "summary.json"):
        (out / stale).unlink(missing_ok=True)  # a file in OUT is always this run's

    # env: written before anything that can fail or take long
    if args.device == "cuda" and not torch.cuda.is_available():
        write_json(out / "env.json", {"commit": commit_of(args.commit), "torch": torch.__version__,
                                      "error": "--device cuda but torch sees no GPU"})
        log("--device cuda but torch sees no GPU")
        return 2
    placement = Placement.of(args.device, bf16=True)
    env = environment(args, placement.device)
    write_json(out / "env.json", env)
    log(f"env: {env['machine']}; commit {env['commit']}; bf16 autocast {env['bf16_autocast']}")

    shapes = SHAPES[args.tiny]
    header = {"commit": env["commit"], "machine": env["machine"], "device": args.device, "precision": "bf16",
              "tiny": args.tiny, "budget_s": args.budget}
    stages = Stages(out, args.budget, placement, header)
    throughput: list[dict] = []

    def record_throughput(row: dict | None) -> None:
        if row is not None:
            throughput.append(row)
            frame = pd.DataFrame(throughput, columns=THROUGHPUT_COLUMNS)
            write_csv(out / "throughput.csv", frame)
            write_json(out / "throughput.json", throughput)

    write_csv(out / "throughput.csv", pd.DataFrame(columns=THROUGHPUT_COLUMNS))
    write_json(out / "throughput.json", [])
    metrics, trajectories = [], []
    stages.arm()
    try:  # the alarm interrupts stages only (`Alarm`), so nothing between them needs guarding
        # ------------------------------------------------------------ the plan: chapter 06's parameters
        def read_params():
            params, source = smoke_params(args)
            header.update(params_source=source, params=params)
            return params, call_with(ch06_llm.alignments, params)

        params, alignments = stages.run("params", "params", 0.0, read_params, always=True) or ({}, {})

        # ------------------------------------------------------------ throughput against a measured ceiling
        matmul = stages.run("ceiling", "ceiling", 0.0, lambda: ceiling(placement.device, shapes))
        record_throughput(matmul)
        if matmul is not None:
            log(f"ceiling: {matmul['tflops']:.1f} TFLOP/s bf16 ({shapes.matmul}³ matmul)")
        for size in THROUGHPUT_SIZES[args.tiny]:
            for kind, batches, measure in (("train", shapes.train_batches, training_throughput),
                                           ("sample", shapes.sample_batches, sampling_throughput)):
                for batch in batches:
                    row = stages.run(f"{kind}:{size}:b{batch}", kind, stages.estimate(kind, shapes.seconds),
                                     lambda: measure(size, batch, placement, shapes, matmul["tflops"]),
                                     needs=("ceiling",))
                    record_throughput(row)
                    if row:
                        log(f"{kind} {size} batch {batch}: {row['tokens_per_s']:,.0f} tokens/s, MFU {row['mfu']:.1%}")
            if placement.device.type == "cuda":
                torch.cuda.empty_cache()

        # ------------------------------------------------------------ chapter 06's pipeline
        def make_p_star() -> dict:
            prepare_work(work)
            p_star = build_p_star(args, work)
            header["p_star"] = p_star
            return p_star

        p_star = stages.run("p*", "p*", 0.0, make_p_star)
        store = ResultStore(SMOKE_PROFILE, root=work / "results")

        def make_references():
            config = call_with(ch06_llm.config, {**params, "ground_truth": p_star["ground_truth"]})
            return cached_references(store, dataclasses.replace(config, prompt=p_star["prompt"]), progress=False)

        refs = stages.run("references", "references", 0.0, make_references, needs=("params", "p*"))
        seeds, final_taus = params.get("seeds", []), params.get("final_taus", [])
        for label, alignment in alignments.items():
            taus = final_taus if label in params["tau_sweep_algorithms"] else final_taus[:1]
            basis = stages.seconds("references")
            ka, ak, evaluation = f"{label}: K-A", f"{label}: A-K", f"{label}: evaluation"
            stages.run(ka, "K-A", stages.estimate("K-A", FIRST_OF_KIND["K-A"] * basis),
                       lambda: [cached_align(store, refs, "p''", alignment, seed, progress=False) for seed in seeds],
                       needs=("references",))
            stages.run(ak, "A-K", stages.estimate("A-K", FIRST_OF_KIND["A-K"] * basis),
                       lambda: [cached_a_k_final(store, refs,
                                                 cached_align(store, refs, "p'", alignment, seed, progress=False),
                                                 tau, seed, progress=False) for seed in seeds for tau in taus],
                       needs=("references",))
            result = stages.run(evaluation, "evaluation",
                                stages.estimate("evaluation", FIRST_OF_KIND["evaluation"] * basis),
                                lambda: cached_run_pipelines(store, refs, alignment, seeds, label=label,
                                                             final_taus=taus, progress=False),
                                needs=(ka, ak))
            if result is not None:
                metrics.append(result.metrics)
                trajectories.append(result.trajectories)
                write_csv(out / "metrics.csv", pd.concat(metrics, ignore_index=True))
                write_csv(out / "trajectories.csv", pd.concat(trajectories, ignore_index=True))
    finally:
        stages.disarm()
    stages.write_summary(finished=True)
    done = sum(r["status"] == "done" for r in stages.records)
    log(f"finished: {done} of {len(stages.records)} stages done in {time.monotonic() - START:.0f} s")
    for r in stages.records:
        extra = r.get("error") or r.get("reason") or ""
        print(f"  {r['stage']:32s} {r['status']:8s} {r.get('seconds', 0):7.1f} s  problems {len(r.get('problems', []))}"
              f"  {extra[:120]}")
    for row in throughput:
        print(f"  {row['kind']:6s} {row['size']:16s} batch {row['batch']:4d}  {row['tokens_per_s']:12,.0f} tokens/s  "
              f"{row['tflops']:8.2f} TFLOP/s  MFU {row['mfu']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
