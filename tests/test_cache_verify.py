"""The cache verifies what it reads back: a table against the checksum in its sidecar, a finished folder against
its manifest. Each case here read back silently or crashed every re-run before (issue: every way in validates)."""

import json
import random

import pandas as pd
import pytest

from alignkd import cache, provenance
from alignkd.cache import MANIFEST, ResultStore


def _table():
    return pd.DataFrame({"beta": [0.5, 1.0, 2.0], "reward": [0.125, -1.5, 3.0]})


def _stored(tmp_path, monkeypatch):
    log = tmp_path / "cache.jsonl"
    monkeypatch.setenv(cache.CACHE_LOG_ENV, str(log))
    store = ResultStore("quick", root=tmp_path / "results")
    calls = []

    def compute():
        calls.append(1)
        return _table()

    store.frame("sweep", {"beta": 1}, compute)
    return store, compute, calls, store.path("sweep", {"beta": 1}), log


def test_a_flipped_bit_in_a_table_is_rebuilt_and_said(tmp_path, monkeypatch):
    store, compute, calls, path, log = _stored(tmp_path, monkeypatch)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="does not match the checksum"):
        again = store.frame("sweep", {"beta": 1}, compute)
    assert len(calls) == 2
    pd.testing.assert_frame_equal(again, _table())
    assert provenance.rebuilt(log) == [f"rebuilt sweep/{path.name}: it does not match the checksum in its sidecar "
                                       f"(changed on disk since it was written)"]
    store.frame("sweep", {"beta": 1}, compute)  # rebuilt with a fresh checksum: trusted again
    assert len(calls) == 2


def test_every_single_bit_flip_of_a_table_is_caught(tmp_path, monkeypatch):
    """On main before checksums 50 of ~750 random single-bit flips read back without an error."""
    store, compute, calls, path, _ = _stored(tmp_path, monkeypatch)
    original = path.read_bytes()
    rng = random.Random(0)
    for trial in range(60):
        data = bytearray(original)
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))
        frame, problem = cache._read_verified(path)
        assert frame is None and problem, f"bit {bit} read back"
    path.write_bytes(original)
    frame, problem = cache._read_verified(path)
    assert problem is None and frame.equals(_table())


def test_a_table_without_a_checksum_is_rebuilt(tmp_path, monkeypatch):
    store, compute, calls, path, _ = _stored(tmp_path, monkeypatch)
    sidecar = path.with_suffix(".json")
    sidecar.write_text(json.dumps(json.loads(sidecar.read_text())["config"]))  # as an older alignkd wrote it
    with pytest.warns(UserWarning, match="no checksum"):
        store.frame("sweep", {"beta": 1}, compute)
    assert len(calls) == 2


def _folder(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_LOG_ENV, str(tmp_path / "cache.jsonl"))
    store = ResultStore("quick", root=tmp_path / "results")
    builds = []

    def build(folder):
        builds.append(1)
        (folder / "model.safetensors").write_bytes(bytes(range(256)) * 4)
        (folder / "sub").mkdir()
        (folder / "sub" / "log.csv").write_text("step,loss\n0,1.5\n")

    return store, build, builds, store.directory("student", {"size": "tiny"}, build)


@pytest.mark.parametrize("damage", ["deleted", "flipped", "manifest lost"])
def test_a_damaged_model_folder_is_rebuilt(tmp_path, monkeypatch, damage):
    """On main before manifests a file deleted from a finished folder crashed every re-run of chapter 06."""
    store, build, builds, folder = _folder(tmp_path, monkeypatch)
    assert json.loads((folder / MANIFEST).read_text())["sha256"].keys() == {"model.safetensors", "sub/log.csv",
                                                                           "alignkd_config.json"}
    if damage == "deleted":
        (folder / "model.safetensors").unlink()
    elif damage == "flipped":
        data = bytearray((folder / "sub" / "log.csv").read_bytes())
        data[3] ^= 0x04
        (folder / "sub" / "log.csv").write_bytes(bytes(data))
    else:
        (folder / MANIFEST).unlink()
    monkeypatch.setattr(cache, "_verified_folders", {})  # a new run: nothing verified yet
    reason = {"deleted": "lost its file model.safetensors", "flipped": r"changed on disk since it was written \(sub/log.csv\)",
              "manifest lost": "no manifest"}[damage]
    with pytest.warns(UserWarning, match=reason):
        again = store.directory("student", {"size": "tiny"}, build)
    assert again == folder and len(builds) == 2
    assert (folder / "model.safetensors").read_bytes() == bytes(range(256)) * 4
    monkeypatch.setattr(cache, "_verified_folders", {})
    store.directory("student", {"size": "tiny"}, build)  # whole again: not rebuilt
    assert len(builds) == 2
