"""Results keyed by a hash of the full configuration that produced them, safe against a crash at any point.

A chapter asks for a result by name and configuration; if a complete result for that exact
configuration exists it is read back, otherwise it is computed and saved. A changed parameter
changes the hash, so only the results it affects are recomputed.

The crash contract (a process may be killed, even by SIGKILL, between any two instructions):

- A table (`ResultStore.frame`) is written to a temporary file and renamed into place, so its
  path holds a whole parquet file or nothing. Temporary files left by a killed process carry its pid
  and are deleted by the next write into that folder.
- An artifact folder (`ResultStore.directory`) is built in `<hash>.partial`, marked complete and
  renamed to `<hash>` in one step; only a folder with its completion mark is ever returned. A
  non-resumable builder always starts in an empty partial folder (whatever a killed run left is
  discarded); a resumable one (`resumable=True`) gets the partial folder as the killed run left it
  and must keep its own progress there with atomic writes (e.g. `lm.kd.generate_dataset`'s shards).
  Builds of one folder are serialised by a lock that the kernel releases when its holder dies.

What is read back is verified, never trusted: a table's sidecar (`<hash>.json`) holds the SHA-256 of its
parquet bytes, written before the table itself, and a finished folder's manifest (`alignkd_manifest.json`)
holds the SHA-256 of every file in it, written before its completion mark. A table or folder that does not
match (a flipped bit, a file deleted or replaced, an unreadable file, no checksum) is rebuilt, that result
alone, and the rebuild is reported: as a warning in the process, and in the cache log, from which the book
and `alignkd run` print it in the terminal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_LOG_ENV = "ALIGNKD_CACHE_LOG"  # the book points it at a file to tell, per chapter, what was reused


def _log_use(target: Path, reused: bool, rebuilt: str | None = None, cpu_seconds: float | None = None,
             charged: bool = False) -> None:
    if os.environ.get(CACHE_LOG_ENV):
        entry = {"result": target.parent.name, "file": target.name, "reused": reused,
                 "at": round(time.time(), 1), "pid": os.getpid()}  # when and where: a chapter's timeline
        if charged:  # CPU spent for several results at once, before each is stored (no result of its own)
            entry["charged"] = True
        if rebuilt:
            entry["rebuilt"] = rebuilt
        if cpu_seconds is not None:
            entry["cpu_seconds"] = round(cpu_seconds, 3)
        with open(os.environ[CACHE_LOG_ENV], "a") as log:
            log.write(json.dumps(entry) + "\n")


_nested_cpu: list[float] = []  # per open build of this process: CPU seconds its own nested builds took


@contextlib.contextmanager
def _timed_build(target: Path, charged: bool = False) -> Iterator[None]:
    """Log the process CPU seconds of one build, less those of the builds nested in it (a study's table that
    builds models first): each second is counted once, by the result that spent it. A build that waits on
    worker processes spends little CPU here; the workers log their own builds."""
    start = time.process_time()
    _nested_cpu.append(0.0)
    try:
        yield
    finally:
        nested = _nested_cpu.pop()
        spent = time.process_time() - start
        if _nested_cpu:
            _nested_cpu[-1] += spent
        _log_use(target, False, cpu_seconds=spent - nested, charged=charged)


def _rebuilding(target: Path, reason: str) -> None:
    """Say that a stored result is rebuilt, and why: in this process and in the cache log (the terminal)."""
    warnings.warn(f"{target} {reason}; rebuilding it", stacklevel=3)
    _log_use(target, False, rebuilt=reason)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

COMPLETE = ".complete"
"""The mark of a finished artifact folder, written last inside the partial folder."""
MANIFEST = "alignkd_manifest.json"
"""A finished folder's file list with the SHA-256 of each file, written just before `COMPLETE`."""
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
        if root is None and not (isinstance(profile, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", profile)):
            # results/<profile>/ must stay inside results/: a profile is a name, never a path
            raise ValueError(f"profile = {profile!r}: a profile is the name of a file in params/, not a path")
        self.profile = profile
        self.root = Path(root) if root is not None else results_root() / profile

    def path(self, name: str, config: Any, suffix: str = ".parquet") -> Path:
        return self.root / name / f"{config_hash(config)}{suffix}"

    def charged(self, name: str) -> contextlib.AbstractContextManager:
        """Charge the CPU seconds of a block to the results called `name` in the cache log: work done for several
        results at once before each is stored (e.g. seeds aligned as one computation)."""
        return _timed_build(self.root / name / "(several)", charged=True)

    def has(self, name: str, config: Any) -> bool:
        """Whether a complete table or artifact folder for `config` is saved."""
        return self.path(name, config).exists() or _is_complete(self.path(name, config, suffix=""))

    def frame(self, name: str, config: Any, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """Read the table for `config` if its bytes match their checksum, or compute it, save it atomically (its
        checksum first) and return it."""
        target = self.path(name, config)
        if target.exists():
            frame, problem = _read_verified(target)
            if problem is None:
                _log_use(target, True)
                return frame
            _rebuilding(target, problem)
        else:
            _log_use(target, False)
        with _timed_build(target):
            frame = compute()
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{name}: compute() must return a pandas DataFrame, got {type(frame).__name__}")
        crash_point("frame:computed")
        data = io.BytesIO()
        frame.to_parquet(data, index=False)
        data = data.getvalue()
        sidecar = {"config": _canonical(config), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        write_atomic(target.with_suffix(".json"), lambda path: path.write_text(json.dumps(sidecar, indent=2)))
        write_atomic(target, lambda path: path.write_bytes(data))
        crash_point("frame:saved")
        return frame

    def directory(self, name: str, config: Any, build: Callable[[Path], None], *, resumable: bool = False) -> Path:
        """A folder of artifacts (checkpoints, shards) for `config`, built once by `build(partial_folder)`.

        `resumable=False`: `build` gets an empty folder, whatever an interrupted run left there.
        `resumable=True`: `build` gets the folder as an interrupted run left it and resumes from it.
        """
        target = self.path(name, config, suffix="")
        if _is_complete(target):
            problem = _folder_problem(target)
            if problem is None:
                _log_use(target, True)
                return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with locked(target.with_name(target.name + ".lock")):
            if _is_complete(target):  # another process built it while this one waited, or it failed its check
                problem = _folder_problem(target)
                if problem is None:
                    _log_use(target, True)
                    return target
                _rebuilding(target, problem)
                _discard(target)
            else:
                _log_use(target, False)
            for trash in target.parent.glob(f"{target.name}.trash-*"):  # left by a killed process
                shutil.rmtree(trash, ignore_errors=True)
            staging = target.with_name(target.name + ".partial")
            if not _is_complete(staging):  # a complete one was killed just before its rename: only that is left
                if staging.exists() and not resumable:
                    _discard(staging)
                staging.mkdir(exist_ok=True)
                with _timed_build(target):
                    build(staging)
                crash_point("directory:built")
                _write_config(staging / "alignkd_config.json", config)  # not config.json: save_pretrained owns it
                _write_manifest(staging)
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


def _read_verified(target: Path) -> tuple[pd.DataFrame | None, str | None]:
    """The table at `target` and None, or None and why it cannot be trusted."""
    try:
        sidecar = json.loads(target.with_suffix(".json").read_text())
        expected = sidecar["sha256"] if isinstance(sidecar, dict) else None
    except (OSError, ValueError, KeyError):
        expected = None
    if expected is None:
        return None, "has no checksum in its sidecar (written by an older alignkd, or the sidecar was lost)"
    data = target.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        return None, "does not match the checksum in its sidecar (changed on disk since it was written)"
    try:
        return pd.read_parquet(io.BytesIO(data)), None
    except (OSError, ValueError) as error:  # pyarrow's errors on a malformed file are both kinds
        return None, f"is unreadable ({error})"


def _write_manifest(folder: Path) -> None:
    files = {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name not in (COMPLETE, MANIFEST)}
    write_atomic(folder / MANIFEST, lambda path: path.write_text(json.dumps({"sha256": files}, indent=1)))


# Folders verified by this process, keyed by path, with the completion mark's mtime: a model folder is read
# many times per chapter, and hashing it once per process is enough.
_verified_folders: dict[Path, int] = {}


def _folder_problem(folder: Path) -> str | None:
    """None if every file of a finished folder matches its manifest (and no file is missing), else why not."""
    mark = (folder / COMPLETE).stat().st_mtime_ns
    if _verified_folders.get(folder) == mark:
        return None
    try:
        expected = json.loads((folder / MANIFEST).read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return "has no manifest of checksums (written by an older alignkd, or the manifest was lost)"
    for relative, digest in expected.items():
        path = folder / relative
        if not path.is_file():
            return f"lost its file {relative}"
        if sha256_file(path) != digest:
            return f"has a file that changed on disk since it was written ({relative})"
    _verified_folders[folder] = mark
    return None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
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
