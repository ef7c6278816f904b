"""Results keyed by a hash of the full configuration that produced them, safe against a crash at any point.

A chapter asks for a result by name and configuration; if a complete result for that exact
configuration exists it is read back, otherwise it is computed and saved. A changed parameter
changes the hash, so only the results it affects are recomputed.

The crash contract (a process may be killed, even by SIGKILL, between any two instructions):

- A table (`ResultStore.frame`) is written to a temporary file and renamed into place, so its
  path holds a whole parquet file or nothing. A file that cannot be read (a power cut before the
  data reached the disk) is recomputed, never trusted. Temporary files left by a killed process
  carry its pid and are deleted by the next write into that folder.
- An artifact folder (`ResultStore.directory`) is built in `<hash>.partial`, marked complete and
  renamed to `<hash>` in one step; only a folder with its completion mark is ever returned. A
  non-resumable builder always starts in an empty partial folder (whatever a killed run left is
  discarded); a resumable one (`resumable=True`) gets the partial folder as the killed run left it
  and must keep its own progress there with atomic writes (e.g. `lm.kd.generate_dataset`'s shards).
  Builds of one folder are serialised by a lock that the kernel releases when its holder dies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_LOG_ENV = "ALIGNKD_CACHE_LOG"  # the book points it at a file to tell, per chapter, what was reused


def _log_use(target: Path, reused: bool) -> None:
    if os.environ.get(CACHE_LOG_ENV):
        with open(os.environ[CACHE_LOG_ENV], "a") as log:
            log.write(json.dumps({"result": target.parent.name, "file": target.name, "reused": reused}) + "\n")

COMPLETE = ".complete"
"""The mark of a finished artifact folder, written last inside the partial folder."""
KILL_AT_ENV = "ALIGNKD_KILL_AT"
"""Test hook: `ALIGNKD_KILL_AT=N` makes a process SIGKILL itself at the N-th crash point it reaches,
`ALIGNKD_KILL_AT=label#n` at the n-th one with that label (`#n` defaults to the first)."""
CRASH_LOG_ENV = "ALIGNKD_CRASH_LOG"
"""Test hook: a file to which the label of every crash point reached is appended."""
_TEMP = re.compile(r"^\..*\.pid(\d+)\.[^.]*\.tmp$")
_crash_points_reached: dict[str, int] = {}


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


def crash_point(label: str) -> None:
    """A place where a crash must be survivable; tests kill the process here (see `KILL_AT_ENV`).

    Free in normal runs (two environment look-ups). Builders call it between their own atomic
    steps (a KD shard saved, a checkpoint written) so that the crash-safety test interrupts them there.
    """
    log, kill_at = os.environ.get(CRASH_LOG_ENV), os.environ.get(KILL_AT_ENV)
    if not (log or kill_at):
        return
    _crash_points_reached[label] = _crash_points_reached.get(label, 0) + 1
    total = sum(_crash_points_reached.values())
    if log:
        with open(log, "a") as handle:
            handle.write(label + "\n")
    if kill_at:
        wanted, _, nth = kill_at.partition("#")
        if wanted.isdigit():
            hit = total == int(wanted)
        else:
            hit = wanted == label and _crash_points_reached[label] == int(nth or 1)
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)


class ResultStore:
    """Parquet tables and artifact folders under `results/<profile>/<name>/<hash>`."""

    def __init__(self, profile: str, root: Path | None = None):
        self.profile = profile
        self.root = Path(root) if root is not None else results_root() / profile

    def path(self, name: str, config: Any, suffix: str = ".parquet") -> Path:
        return self.root / name / f"{config_hash(config)}{suffix}"

    def has(self, name: str, config: Any) -> bool:
        """Whether a complete table or artifact folder for `config` is saved."""
        return self.path(name, config).exists() or _is_complete(self.path(name, config, suffix=""))

    def frame(self, name: str, config: Any, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """Read the table for `config`, or compute it, save it atomically and return it."""
        target = self.path(name, config)
        if target.exists():
            try:
                frame = pd.read_parquet(target)
                _log_use(target, True)
                return frame
            except (OSError, ValueError) as error:  # pyarrow's errors on a truncated file are both kinds
                warnings.warn(f"{target} is unreadable ({error}); recomputing it", stacklevel=2)
        _log_use(target, False)
        frame = compute()
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{name}: compute() must return a pandas DataFrame, got {type(frame).__name__}")
        crash_point("frame:computed")
        write_atomic(target.with_suffix(".json"), lambda path: _write_config(path, config))
        write_atomic(target, lambda path: frame.to_parquet(path, index=False))
        crash_point("frame:saved")
        return frame

    def directory(self, name: str, config: Any, build: Callable[[Path], None], *, resumable: bool = False) -> Path:
        """A folder of artifacts (checkpoints, shards) for `config`, built once by `build(partial_folder)`.

        `resumable=False`: `build` gets an empty folder, whatever an interrupted run left there.
        `resumable=True`: `build` gets the folder as an interrupted run left it and resumes from it.
        """
        target = self.path(name, config, suffix="")
        _log_use(target, _is_complete(target))
        if _is_complete(target):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target.with_name(target.name + ".lock")):
            if _is_complete(target):  # another process built it while this one waited
                return target
            for trash in target.parent.glob(f"{target.name}.trash-*"):  # left by a killed process
                shutil.rmtree(trash, ignore_errors=True)
            staging = target.with_name(target.name + ".partial")
            if not _is_complete(staging):  # a complete one was killed just before its rename: only that is left
                if staging.exists() and not resumable:
                    _discard(staging)
                staging.mkdir(exist_ok=True)
                build(staging)
                crash_point("directory:built")
                _write_config(staging / "alignkd_config.json", config)  # not config.json: save_pretrained owns it
                crash_point("directory:described")
                (staging / COMPLETE).touch()
                crash_point("directory:marked")
            if target.exists():  # an unmarked folder from an older layout: never trusted
                _discard(target)
            os.replace(staging, target)
        crash_point("directory:saved")
        return target


def _is_complete(folder: Path) -> bool:
    return (folder / COMPLETE).exists()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing); the kernel drops it when the process dies."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _discard(folder: Path) -> None:
    """Remove a folder; renamed away first, so a crash mid-removal leaves no half folder under its name."""
    trash = folder.with_name(f"{folder.name}.trash-{uuid.uuid4().hex[:8]}")
    os.replace(folder, trash)
    shutil.rmtree(trash)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_stale_temporaries(folder: Path) -> None:
    for path in folder.glob(".*.tmp"):
        match = _TEMP.match(path.name)
        if match and not _pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)


def write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` then flush to disk and rename over `target`: readers see the old file or the new one.
    The one atomic writer of the project (the cache's tables and configs, the claims files)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target.parent)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.pid{os.getpid()}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as stream:
            os.fsync(stream.fileno())
        crash_point("write:staged")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_config(path: Path, config: Any) -> None:
    path.write_text(json.dumps(_canonical(config), indent=2, sort_keys=True))
