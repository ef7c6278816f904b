"""The MoG alignment algorithms by name: the registry every sweep and chapter looks them up in.

    from alignkd.mog.algorithms import ALGORITHMS
    ALGORITHMS["grpo_reward"].config(n_iterations=400)      # GRPOConfig(kl_form="reward", ...)

Every `train` has the contract of `ppo.train` (rows = settings × trials, per-row β, snapshots).
"""

from __future__ import annotations

from ..algorithms import Algorithm, lookup
from . import dpo_offline, dpo_online, grpo, kto, ppo, simpo

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("ppo", "PPO", ppo.PPOConfig, ppo.train),
    Algorithm("grpo", "GRPO", grpo.GRPOConfig, grpo.train, fixed=(("kl_form", "k3"),)),
    Algorithm("grpo_reward", "GRPO (KL in the reward)", grpo.GRPOConfig, grpo.train, fixed=(("kl_form", "reward"),)),
    Algorithm("dpo_online", "On-policy DPO", dpo_online.DPOOnlineConfig, dpo_online.train),
    Algorithm("dpo_offline", "Off-policy DPO", dpo_offline.DPOOfflineConfig, dpo_offline.train),
    Algorithm("kto", "KTO", kto.KTOConfig, kto.train),
    Algorithm("simpo", "SimPO", simpo.SimPOConfig, simpo.train),
)}


def find_algorithm(name: str) -> Algorithm:
    """ALGORITHMS[name], or an error naming `algorithm` and the allowed names."""
    return lookup(ALGORITHMS, name)
