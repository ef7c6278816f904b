"""Results are keyed by the full configuration, written atomically and never recomputed."""

import dataclasses

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


def test_directory_is_complete_or_absent(tmp_path):
    store = ResultStore("quick", root=tmp_path)

    def half_done(folder):
        (folder / "shard-0.pt").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.directory("data", {"n": 2}, half_done)
    partial = store.partial_dir("data", {"n": 2})
    assert (partial / "shard-0.pt").exists()  # kept, so a resumable builder can pick up from here

    def finish(folder):
        assert (folder / "shard-0.pt").exists()
        (folder / "shard-1.pt").write_text("y")

    done = store.directory("data", {"n": 2}, finish)
    assert sorted(p.name for p in done.glob("shard-*")) == ["shard-0.pt", "shard-1.pt"]
    assert store.directory("data", {"n": 2}, lambda folder: pytest.fail("rebuilt")) == done
