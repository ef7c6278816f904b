"""The LM alignment algorithms by name: the registry every pipeline and chapter looks them up in.

    from alignkd.lm.algorithms import ALGORITHMS
    entry = ALGORITHMS["grpo_reward"]
    run = entry.train(policy, reference, oracle, entry.config(n_iterations=300), prompt_ids=[bos], seed=0)

Every `train` has the contract of `ppo.train_ppo` (HF causal LMs, returns an `AlignmentRun`); all
accept `tokenizer=` (only GRPO's TRL backend uses it).
"""

from __future__ import annotations

from ..algorithms import Algorithm, lookup
from .dpo import DPOConfig, train_dpo
from .grpo import GRPOConfig, train_grpo
from .ppo import PPOConfig, train_ppo

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("ppo", "PPO", PPOConfig, train_ppo),
    Algorithm("dpo", "On-policy DPO", DPOConfig, train_dpo),
    Algorithm("grpo", "GRPO", GRPOConfig, train_grpo, fixed=(("kl_form", "k3"),)),
    Algorithm("grpo_reward", "GRPO (KL in the reward)", GRPOConfig, train_grpo, fixed=(("kl_form", "reward"),)),
)}


def find_algorithm(name: str) -> Algorithm:
    """ALGORITHMS[name], or an error naming `algorithm` and the allowed names."""
    return lookup(ALGORITHMS, name)
