"""Results keyed by a hash of the full configuration that produced them.

A chapter asks for a result by name and configuration; if a file for that exact configuration
exists it is read back, otherwise it is computed and written atomically (temporary file, then
rename), so an interrupted run never leaves a partial result that a later run would trust.
A changed parameter changes the hash, so only the results it affects are recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]


def results_root() -> Path:
    """Where results live: `$ALIGNKD_RESULTS` if set, else `results/` at the repository root."""
    return Path(os.environ.get("ALIGNKD_RESULTS", REPO_ROOT / "results"))


def _canonical(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__name__, **_canonical(dataclasses.asdict(value))}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return float(repr(value))  # one spelling per float: 1.0 and 1 must not hash alike by accident
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot hash a configuration value of type {type(value).__name__}: {value!r}")


def config_hash(config: Any) -> str:
    """A short, stable hash of a configuration (mapping or dataclass, nested)."""
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ResultStore:
    """Parquet tables and artifact folders under `results/<profile>/<name>/<hash>`."""

    def __init__(self, profile: str, root: Path | None = None):
        self.profile = profile
        self.root = Path(root) if root is not None else results_root() / profile

    def path(self, name: str, config: Any, suffix: str = ".parquet") -> Path:
        return self.root / name / f"{config_hash(config)}{suffix}"

    def has(self, name: str, config: Any) -> bool:
        return self.path(name, config).exists()

    def frame(self, name: str, config: Any, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """Read the table for `config`, or compute it, save it atomically and return it."""
        target = self.path(name, config)
        if target.exists():
            return pd.read_parquet(target)
        frame = compute()
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{name}: compute() must return a pandas DataFrame, got {type(frame).__name__}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as handle:
            tmp = Path(handle.name)
        try:
            frame.to_parquet(tmp, index=False)
            _write_config(target.with_suffix(".json"), config)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return frame

    def directory(self, name: str, config: Any, build: Callable[[Path], None]) -> Path:
        """A folder of artifacts (checkpoints, shards) for `config`, built once.

        `build(tmp_dir)` fills a temporary folder; it is renamed into place only when `build`
        returns, so a crash leaves nothing that looks complete. Builders that want to resume
        after an interruption should keep their own progress under `partial_dir(name, config)`.
        """
        target = self.path(name, config, suffix="")
        if (target / ".complete").exists():
            return target
        staging = self.partial_dir(name, config)
        build(staging)
        _write_config(staging / "alignkd_config.json", config)  # not config.json: save_pretrained owns that name
        (staging / ".complete").write_text("")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
        return target

    def partial_dir(self, name: str, config: Any) -> Path:
        """Scratch folder that survives interruptions, for resumable builders."""
        staging = self.root / name / f"{config_hash(config)}.partial"
        staging.mkdir(parents=True, exist_ok=True)
        return staging


def _write_config(path: Path, config: Any) -> None:
    path.write_text(json.dumps(_canonical(config), indent=2, sort_keys=True))
