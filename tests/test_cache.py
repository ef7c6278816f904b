"""Results are keyed by the full configuration, written atomically and never recomputed."""

import dataclasses
import os
import subprocess
import sys

import pandas as pd
import pytest

from alignkd.cache import ResultStore, config_hash


@dataclasses.dataclass
class Config:
    beta: float = 1.0
    trials: int = 20


def test_hash_is_stable_and_sensitive():
    assert config_hash({"a": 1, "b": [1.0, 2.0]}) == config_hash({"b": [1.0, 2.0], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert config_hash(Config()) == config_hash(Config(beta=1.0, trials=20))
    assert config_hash(Config()) != config_hash(Config(beta=0.5))
    with pytest.raises(TypeError, match="cannot hash"):
        config_hash({"a": object()})


def test_frame_computes_once_per_configuration(tmp_path):
    store = ResultStore("quick", root=tmp_path)
    calls = []

    def compute(beta):
        calls.append(beta)
        return pd.DataFrame({"beta": [beta], "reward": [beta * 2]})

    first = store.frame("sweep", Config(beta=0.5), lambda: compute(0.5))
    again = store.frame("sweep", Config(beta=0.5), lambda: compute(0.5))
    other = store.frame("sweep", Config(beta=2.0), lambda: compute(2.0))
    assert calls == [0.5, 2.0]
    pd.testing.assert_frame_equal(first, again)
    assert other["reward"].item() == 4.0
    assert store.path("sweep", Config(beta=0.5)).with_suffix(".json").exists()


def test_a_failed_computation_leaves_nothing(tmp_path):
    store = ResultStore("quick", root=tmp_path)

    def boom():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        store.frame("sweep", Config(), boom)
    assert not store.has("sweep", Config())
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob("*.tmp"))


def test_a_resumable_directory_resumes_and_is_complete_or_absent(tmp_path):
    store = ResultStore("quick", root=tmp_path)

    def half_done(folder):
        (folder / "shard-0.pt").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.directory("data", {"n": 2}, half_done, resumable=True)
    assert not store.has("data", {"n": 2})

    def finish(folder):
        assert (folder / "shard-0.pt").exists()  # kept: the builder picks up from here
        (folder / "shard-1.pt").write_text("y")

    done = store.directory("data", {"n": 2}, finish, resumable=True)
    assert sorted(p.name for p in done.glob("shard-*")) == ["shard-0.pt", "shard-1.pt"]
    assert store.directory("data", {"n": 2}, lambda folder: pytest.fail("rebuilt")) == done
    assert store.has("data", {"n": 2})
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [done.name, f"{done.name}.lock"]


def test_a_non_resumable_directory_starts_clean_after_an_interruption(tmp_path):
    """The bug of issue 9: a builder that creates a subfolder failed on every run after an interrupted one."""
    store = ResultStore("quick", root=tmp_path)
    seen = []

    def build(folder):
        seen.append(sorted(p.name for p in folder.iterdir()))
        (folder / "checkpoints").mkdir()  # would raise FileExistsError in a reused folder
        (folder / "checkpoints" / "step_1.pt").write_text("x")
        if len(seen) == 1:
            raise KeyboardInterrupt
        (folder / "model.pt").write_text("m")

    with pytest.raises(KeyboardInterrupt):
        store.directory("aligned", Config(), build)
    done = store.directory("aligned", Config(), build)
    assert seen == [[], []]
    assert (done / "model.pt").read_text() == "m" and (done / ".complete").exists()


def test_a_directory_killed_between_its_mark_and_its_rename_is_finished_without_rebuilding(tmp_path):
    store = ResultStore("quick", root=tmp_path)
    target = store.path("data", {"n": 1}, suffix="")
    staging = target.with_name(target.name + ".partial")
    staging.mkdir(parents=True)
    (staging / "model.pt").write_text("m")
    (staging / ".complete").touch()
    target.mkdir()  # an unmarked folder under the final name is never trusted
    (target / "junk").write_text("j")
    done = store.directory("data", {"n": 1}, lambda folder: pytest.fail("rebuilt"))
    assert done == target and sorted(p.name for p in done.iterdir()) == [".complete", "model.pt"]
    assert not staging.exists() and not list(target.parent.glob("*.trash-*"))


def test_an_unreadable_table_is_recomputed_and_stale_temporaries_are_removed(tmp_path):
    store = ResultStore("quick", root=tmp_path)
    target = store.path("sweep", Config())
    target.parent.mkdir(parents=True)
    target.write_bytes(b"PAR1 truncated")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = target.parent / f".{target.name}.pid{int(dead.stdout)}.abc123.tmp"
    stale.write_bytes(b"half")
    mine = target.parent / f".other.parquet.pid{os.getpid()}.abc123.tmp"  # a live writer's: left alone
    mine.write_bytes(b"busy")
    with pytest.warns(UserWarning, match="unreadable"):
        frame = store.frame("sweep", Config(), lambda: pd.DataFrame({"x": [1.5]}))
    assert frame["x"].item() == 1.5
    pd.testing.assert_frame_equal(pd.read_parquet(target), frame)
    assert not stale.exists() and mine.exists()


def test_concurrent_builds_of_one_folder_build_it_once(tmp_path):
    import threading

    store = ResultStore("quick", root=tmp_path)
    started, release, builds = threading.Event(), threading.Event(), []

    def slow(folder):
        builds.append(folder)
        started.set()
        release.wait(5)
        (folder / "model.pt").write_text("m")

    first = threading.Thread(target=store.directory, args=("data", {"n": 3}, slow))
    first.start()
    started.wait(5)
    second = threading.Thread(target=store.directory, args=("data", {"n": 3}, slow))
    second.start()  # blocks on the lock, then finds the folder complete
    second.join(0.3)  # time to reach the lock; without it, it would discard the folder being built
    release.set()
    first.join(5)
    second.join(5)
    assert len(builds) == 1 and store.has("data", {"n": 3})
