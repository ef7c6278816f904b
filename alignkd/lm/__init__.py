"""The LLM testbed (paper §4.2, App. C–D).

- `generation`: ancestral sampling from a causal LM (`sample`) and response scoring
  (`sequence_logprobs`, `token_logprobs`), on right-padded `Samples`.
- `students`: Llama students of named sizes (`make_student`, the SmolLM2 configs; `tiny_llama`).
- `models`: the interface every model samples and scores through (`LanguageModel`, `HFLanguageModel`).
- `groundtruth`: ground truths p* behind it (`markov_mixture`, `hf:<id or path>`, `gguf:smollm2`).
- `kd`: the KD stage (teacher samples sharded to disk, student training); `kd_batched`: R students of one shape
  (seeds) trained as one computation (`train_students`), each equal to its `kd.train_student` alone.
- `metrics`: per-token average overall precision, overall recall, target precision and mean reward; recall's baselines
  (`UnigramModel` of a KD dataset, `uniform_recall`).
- alignment: `reward` (the oracle), `ppo`, `dpo`, `grpo`, `kto`, `simpo` (trainers, by name in `algorithms`),
  `training` (what the trainers share), `selection` (App. C.4 rules), `device`.
- `config`: `LLMConfig` (chapter 06's parameters become it in `alignkd.chapters.ch06_llm`).
- `experiments`: Pipelines K-A and A-K, every model cached under its recipe (`cached_*`); `parallel`: the process
  pool that builds independent cells; `summary`, `studies`, `premise`: the numbers of chapter 06's tables (their
  words: `alignkd.chapters.ch06_report`); `smollm2`: chapter 06's SmolLM2 section (what students of the offline SmolLM2 learn, against the baselines).
"""

import logging

from .generation import Samples, SequenceScores, sample, sequence_logprobs, token_logprobs
from .students import STUDENT_SIZES, count_parameters, make_student, student_config, tiny_llama

__all__ = [
    "Samples", "SequenceScores", "sample", "sequence_logprobs", "token_logprobs",
    "STUDENT_SIZES", "count_parameters", "make_student", "student_config", "tiny_llama",
]


def _drop_deepspeed_cpu_notice(record: logging.LogRecord) -> bool:
    # DeepSpeed (imported lazily by accelerate and TRL) logs this to stdout on every CPU machine, which
    # would print it into the book's pages; its other messages still come through.
    return "Setting accelerator to CPU" not in record.getMessage()


logging.getLogger("DeepSpeed").addFilter(_drop_deepspeed_cpu_notice)
