"""The LLM testbed (paper §4.2, App. C–D).

- `generation`: ancestral sampling from a causal LM (`sample`) and response scoring
  (`sequence_logprobs`, `token_logprobs`), on right-padded `Samples`.
- `students`: Llama students of named sizes (`make_student`, the SmolLM2 configs; `tiny_llama`).
- `groundtruth`: ground truths p* behind one interface (`markov_mixture`, `hf:<id or path>`, `gguf:smollm2`).
- `kd`: the KD stage (teacher samples sharded to disk, student training).
- `metrics`: per-token average precision, recall, target precision and mean reward.
- `pipeline`: Pipelines K-A and A-K.
- alignment (`reward`, `ppo`, `dpo`, `grpo`, `selection`) is built on `generation`.
"""

from .generation import Samples, SequenceScores, sample, sequence_logprobs, token_logprobs
from .students import STUDENT_SIZES, count_parameters, make_student, student_config, tiny_llama

__all__ = [
    "Samples", "SequenceScores", "sample", "sequence_logprobs", "token_logprobs",
    "STUDENT_SIZES", "count_parameters", "make_student", "student_config", "tiny_llama",
]
