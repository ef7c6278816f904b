"""The LM alignment algorithms by name: the registry every pipeline and chapter looks them up in.

    from alignkd.lm.algorithms import ALGORITHMS
    entry = ALGORITHMS["grpo_reward"]
    run = entry.train(policy, reference, oracle, entry.config(n_iterations=300), seed=0)

Every `train` has the contract of `ppo.train_ppo`: policy and reference are `HFLanguageModel`s (the
policy object carries its prompt, EOS, padding and suppressed tokens), it returns an `AlignmentRun`.
"""

from __future__ import annotations

import dataclasses

from ..algorithms import Algorithm, lookup
from .dpo import DPOConfig, train_dpo, train_dpo_runs
from .grpo import GRPOConfig, train_grpo, train_grpo_runs
from .kto import KTOConfig, train_kto, train_kto_runs
from .ppo import PPOConfig, train_ppo, train_ppo_runs
from .simpo import SimPOConfig, train_simpo, train_simpo_runs

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("ppo", "PPO", PPOConfig, train_ppo, train_runs=train_ppo_runs),
    Algorithm("dpo_online", "On-policy DPO", DPOConfig, train_dpo, train_runs=train_dpo_runs),
    Algorithm("grpo", "GRPO", GRPOConfig, train_grpo, fixed=(("kl_form", "k3"),), train_runs=train_grpo_runs),
    Algorithm("grpo_reward", "GRPO (KL in the reward)", GRPOConfig, train_grpo, fixed=(("kl_form", "reward"),),
              train_runs=train_grpo_runs),
    Algorithm("kto", "KTO", KTOConfig, train_kto, train_runs=train_kto_runs),
    Algorithm("simpo", "SimPO", SimPOConfig, train_simpo, train_runs=train_simpo_runs),
)}


def find_algorithm(name: str) -> Algorithm:
    """ALGORITHMS[name], or an error naming `algorithm` and the allowed names."""
    return lookup(ALGORITHMS, name)


def alignment_config(algorithm: str, **overrides):
    """The config dataclass of an alignment algorithm with overrides (unknown fields are named)."""
    entry = find_algorithm(algorithm)
    names = {f.name for f in dataclasses.fields(entry.config_class)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{entry.config_class.__name__} has no field(s) {unknown} (fields: {', '.join(sorted(names))})")
    return entry.config(**overrides)


def algorithm_of(config) -> Algorithm:
    """The registry entry a config belongs to (its class and the fields a variant fixes)."""
    for entry in ALGORITHMS.values():
        if type(config) is entry.config_class and all(getattr(config, k) == v for k, v in entry.fixed):
            return entry
    raise TypeError(f"{type(config).__name__} is not an LM alignment config (algorithms: {', '.join(ALGORITHMS)})")
