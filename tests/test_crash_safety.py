"""A run killed with SIGKILL at any crash point and run again completes with the numbers of an uninterrupted run.

The kills are deterministic: `ALIGNKD_KILL_AT=label[#n]` makes the process kill itself at the n-th
`alignkd.cache.crash_point(label)` it reaches (after a table is computed, after its temporary file is
staged, after it is saved; after an artifact folder is built, described, marked, saved; after a KD
shard; after an alignment checkpoint). Each killed run continues from what the previous ones left.

- The language-model pipeline (KD data is a resumable folder, students and alignments are not, the
  metrics a table) runs in processes forked from a server that imported torch once (a fork per run
  costs milliseconds, an import seconds).
- A MoG chapter runs as a chapter: `python -m alignkd run 02`, its kernel killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
LM_KILLS = ["kd:shard", "directory:built", "directory:described", "directory:marked", "directory:saved",
            "align:checkpoint", "frame:computed", "write:staged", "frame:saved"]


# --------------------------------------------------------------------------- the forked language-model runs

def _lm_pipeline(root: Path) -> None:
    """A tiny K-A / A-K run of one PPO seed: every kind of LM artifact, through the chapter's library calls."""
    from alignkd.cache import ResultStore
    from alignkd.lm.algorithms import alignment_config
    from alignkd.lm.config import LLMConfig, StageConfig
    from alignkd.lm.experiments import cached_references, cached_run_pipelines
    from alignkd.lm.groundtruth import MarkovMixtureConfig
    from alignkd.lm.kd import KDDataConfig, TrainConfig
    from alignkd.lm.metrics import MetricConfig

    train, n = dict(epochs=1.0, learning_rate=0.002, batch_size=32, size="tiny"), 8
    config = LLMConfig(
        markov=MarkovMixtureConfig(vocab_size=16, n_topics=3),
        high_recall=StageConfig(KDDataConfig(n_samples=200, max_new_tokens=n, tau=1.0, shard_size=100),
                                TrainConfig(**train)),
        low_recall=StageConfig(KDDataConfig(n_samples=100, max_new_tokens=n, tau=0.95, tau_topic=0.7, shard_size=50),
                               TrainConfig(**train)),
        n_fold_samples=50, n_recall_samples=50, metrics=MetricConfig(n_samples=50, max_new_tokens=n))
    ppo = alignment_config("ppo", n_iterations=2, batch_size=8, mini_batch_size=4, max_new_tokens=n, eval_every=1)
    store = ResultStore("crash", root=root)
    cached_run_pipelines(store, cached_references(store, config, progress=False), ppo, [0], progress=False)


def serve() -> None:
    """Read `<results root> <kill spec or ->` lines; run the pipeline in a forked child; answer its fate."""
    import tempfile

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import alignkd.lm.experiments  # noqa: F401

    torch.set_num_threads(1)  # and OMP_NUM_THREADS=1: no thread pool that a fork could break
    with tempfile.TemporaryDirectory() as folder:  # imports what saving and loading a model pulls in, once
        size = dict(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                    num_key_value_heads=1)
        LlamaForCausalLM(LlamaConfig(vocab_size=8, **size)).save_pretrained(folder)
        LlamaForCausalLM.from_pretrained(folder)
    for line in sys.stdin:
        root, kill_at = line.split()
        pid = os.fork()
        if pid == 0:
            os.environ["ALIGNKD_CRASH_LOG"] = f"{root}.log"
            if kill_at != "-":
                os.environ["ALIGNKD_KILL_AT"] = kill_at
            try:
                _lm_pipeline(Path(root))
            except BaseException:
                import traceback

                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}",
              flush=True)


class Server:
    def __init__(self):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env, cwd=ROOT)

    def run(self, root: Path, kill_at: str | None = None) -> str:
        log = Path(f"{root}.log")
        log.unlink(missing_ok=True)
        self.process.stdin.write(f"{root} {kill_at or '-'}\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def close(self):
        self.process.stdin.close()
        self.process.wait(30)


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    """Every parquet table under `root` (also inside artifact folders), by path; wall times left out."""
    tables = {}
    for path in sorted(root.rglob("*.parquet")):
        frame = pd.read_parquet(path)
        tables[str(path.relative_to(root))] = frame.drop(columns=[c for c in frame if c == "seconds"])
    return tables


def _weights(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.safetensors"))}


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith((".partial", ".tmp")) or ".trash-" in p.name)


def _assert_same_results(done: Path, reference: Path) -> None:
    tables, expected = _tables(done), _tables(reference)
    assert tables.keys() == expected.keys() and expected
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(tables[name], frame, check_exact=True, obj=name)
    assert _weights(done) == _weights(reference)
    assert _leftovers(done) == []


@pytest.fixture(scope="module")
def server():
    server = Server()
    yield server
    server.close()


def test_lm_pipeline_killed_at_every_kind_of_crash_point_resumes_to_the_same_numbers(tmp_path, server):
    reference = tmp_path / "reference"
    assert server.run(reference) == "exit 0"
    reached = set(Path(f"{reference}.log").read_text().split())
    assert set(LM_KILLS) <= reached, f"crash points never reached: {set(LM_KILLS) - reached}"

    root, shard, killed = tmp_path / "killed", None, []
    for label in LM_KILLS:
        assert server.run(root, label) == f"signal {signal.SIGKILL}", f"not killed at {label}"
        killed.append(Path(f"{root}.log").read_text().split()[-1])
        if shard is None:  # killed right after the first KD shard: the resumable folder must keep it
            (shard,) = root.glob("lm_kd_data/*.partial/shard_00000.pt")
            first = shard.stat()
    assert killed == LM_KILLS
    assert server.run(root) == "exit 0"
    kept = root / "lm_kd_data" / shard.parent.name.removesuffix(".partial") / shard.name
    assert (kept.stat().st_ino, kept.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # resumed, not redone
    _assert_same_results(root, reference)
    assert server.run(root) == "exit 0"  # and a complete run is read back, not recomputed
    assert not Path(f"{root}.log").exists()  # not one crash point: nothing computed or written


def test_an_alignment_killed_mid_training_is_rebuilt_from_a_clean_folder(tmp_path, server):
    """The bug of issue 9: the checkpoints folder of a killed alignment made every later run fail."""
    root = tmp_path / "results"
    assert server.run(root, "align:checkpoint#2") == f"signal {signal.SIGKILL}"
    (partial,) = root.glob("lm_aligned/*.partial")
    assert list((partial / "checkpoints").glob("step_*.pt"))
    assert server.run(root) == "exit 0"
    assert _leftovers(root) == []
    aligned = [p for p in root.glob("lm_aligned/*") if p.is_dir()]
    assert len(aligned) == 2  # K-A's p'' and A-K's p'
    assert all((p / ".complete").exists() and not (p / "checkpoints").exists() for p in aligned)


# --------------------------------------------------------------------------- a MoG chapter, killed as a chapter

CHAPTER = ["run", "02", "--profile", "quick", "-p", "n_trials=2", "-p", "sft_iterations=60", "-p", "kd_iterations=60",
           "-p", "eval_samples=500"]


def _chapter(results: Path, output: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ALIGNKD_RESULTS": str(results), "TQDM_DISABLE": "1",
           "ALIGNKD_CRASH_LOG": str(results) + ".log"}
    env.pop("ALIGNKD_KILL_AT", None)
    if kill_at:
        env["ALIGNKD_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "alignkd", *CHAPTER, "-o", str(output)], env=env, cwd=ROOT,
                          capture_output=True, text=True)


def test_a_mog_chapter_killed_twice_completes_with_the_numbers_of_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    assert _chapter(reference, tmp_path / "reference.ipynb").returncode == 0
    assert "frame:saved" in Path(f"{reference}.log").read_text()

    results, output = tmp_path / "killed", tmp_path / "killed.ipynb"
    for kill_at in ("write:staged#2", "frame:computed#2"):  # p' staged but not renamed; then p'' computed, unsaved
        done = _chapter(results, output, kill_at)
        assert done.returncode != 0 and "DeadKernelError" in done.stderr + done.stdout, done.stderr[-2000:]
        assert not output.exists()
        assert Path(f"{results}.log").read_text().split()[-1] == kill_at.split("#")[0]
    done = _chapter(results, output)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same_results(results / "quick", reference / "quick")
    shutil.rmtree(results)


if __name__ == "__main__":
    serve()
