"""Per-trial random streams, so a batched trial draws exactly what the same trial run alone draws.

Every trial owns one `torch.Generator`, seeded from (seed, stage, trial index). All settings of a
sweep (β values, checkpoints) share their trial's stream: they see common random numbers, which
makes the K-A vs A-K and β-to-β comparisons paired, and it means a trial run alone with
`TrialStreams(seed, stage, trials=[t])` reproduces trial t of the batched run draw for draw.

A draw is always one `randn(n, 3)` call per trial: column 0 becomes the uniform that picks the
mixture component (through the normal CDF), columns 1–2 the Gaussian noise. The number of calls
per step is fixed by the algorithm, never by the data, so streams stay aligned across settings.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch


def stream_seed(seed: int, stage: str, trial: int) -> int:
    """A 63-bit seed for one (seed, stage, trial); stages are names such as "sft" or "align/ppo"."""
    entropy = [int(seed), zlib.crc32(stage.encode()), int(trial)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class TrialStreams:
    """One generator per trial. `draw(n)` returns standard normals shaped [n_trials, n, 3]."""

    def __init__(self, seed: int, stage: str, trials: Sequence[int] | int):
        self.trials = list(range(trials)) if isinstance(trials, int) else [int(t) for t in trials]
        if not self.trials:
            raise ValueError("TrialStreams: need at least one trial")
        self.seed, self.stage = int(seed), stage
        self.generators = []
        for t in self.trials:
            g = torch.Generator()
            g.manual_seed(stream_seed(seed, stage, t))
            self.generators.append(g)

    def __len__(self) -> int:
        return len(self.trials)

    def child(self, stage: str) -> TrialStreams:
        """Fresh streams for a sub-stage (e.g. evaluation), same trials."""
        return TrialStreams(self.seed, f"{self.stage}/{stage}", self.trials)

    def draw(self, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal noise [n_trials, n, 3], one generator call per trial."""
        return torch.stack([torch.randn(n, 3, generator=g, dtype=dtype) for g in self.generators])
