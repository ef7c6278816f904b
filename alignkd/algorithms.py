"""The one form of an alignment-algorithm registry, shared by both testbeds.

Each testbed has a dict `ALGORITHMS: {name: Algorithm}` (`alignkd.mog.algorithms`,
`alignkd.lm.algorithms`); pipelines, sweeps and chapters look an algorithm up there and nowhere
else, so adding an algorithm (or a named variant such as `grpo_reward`) is one entry:

    algorithm = lookup(ALGORITHMS, "grpo_reward")
    config = algorithm.config(n_iterations=200)        # GRPOConfig(kl_form="reward", n_iterations=200)
    algorithm.train(policy, reference, config, ...)    # the testbed's train function

A variant fixes some config fields (`fixed`): its `config()` sets them and refuses other values, and
`check_config` refuses a config built for another variant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Algorithm:
    name: str
    """Registry key, used in sweeps, cache keys and tables (e.g. "grpo_reward")."""
    label: str
    """Name in figures and prose (e.g. "GRPO (KL in the reward)")."""
    config_class: type
    """The algorithm's config dataclass."""
    train: Callable
    """The testbed's training function for this algorithm."""
    fixed: tuple[tuple[str, Any], ...] = ()
    """Config fields this entry fixes, as (field, value) pairs (a variant of a shared config class)."""
    train_runs: Callable | None = None
    """Trains several seeds at once as one computation, each run equal to `train`'s (LM testbed: `train(policies,
    reference, oracle, config, seeds=...)` returns one run per seed); None: the seeds train one at a time."""

    def config(self, **fields):
        """The algorithm's config with `fields` set (and the `fixed` fields, which must not be overridden)."""
        for name, value in self.fixed:
            if name in fields and fields[name] != value:
                raise ValueError(f"{self.config_class.__name__}.{name} = {fields[name]!r}: algorithm {self.name!r} "
                                 f"fixes it to {value!r} (choose the algorithm by name instead)")
        return self.config_class(**{**fields, **dict(self.fixed)})

    def check_config(self, config) -> None:
        """Refuse a config of another class or with other values of the `fixed` fields."""
        if not isinstance(config, self.config_class):
            raise TypeError(f"config for {self.name} must be a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        for name, value in self.fixed:
            if getattr(config, name) != value:
                raise ValueError(f"{self.config_class.__name__}.{name} = {getattr(config, name)!r}: algorithm "
                                 f"{self.name!r} needs {value!r}")


def lookup(registry: Mapping[str, Algorithm], name: str, field: str = "algorithm") -> Algorithm:
    """registry[name], or a ValueError naming `field`, the value and the allowed names."""
    if name not in registry:
        raise ValueError(f"{field} = {name!r}: unknown (allowed: {', '.join(registry)})")
    return registry[name]
