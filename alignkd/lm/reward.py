"""The reward oracle of the LLM experiments: NLL under p_target, folded (paper App. C.3, eqs. 9–10).

    oracle = RewardOracle.from_target_samples(target_logprob, target_ids, target_mask)   # τ_f from p_target
    oracle.nll(token_ids, mask)      # [B] per-token average NLL of the masked (response) tokens
    oracle.base_reward(token_ids, mask)   # R_base = 10·exp(−0.5·NLL)                      (eq. 9)
    oracle.reward(token_ids, mask)   # R = R_base if R_base ≤ τ_f else 2τ_f − R_base          (eq. 10)
    oracle.prefer(a, b)              # [B] bool: a = (ids, mask) is chosen over b (lower NLL; App. C.3)

`target_logprob(token_ids, mask) -> [B]` is any scorer of p_target that returns, per sequence, the
*per-token average* log-probability of the tokens where `mask` is 1 (the response tokens; the prompt
is masked out, since NLL(y | x) conditions on it). `token_ids` and `mask` are [B, T] tensors.

Normalisation. NLL is the per-token average, not the sum. The paper's threshold τ_f = 8.4636 means
R_base = 8.46 at the 90th percentile of p_target's own samples, i.e. NLL = −2·ln(0.84636) = 0.33 nats.
A sum over responses of up to 128 tokens is never that small (it would put 0.33 nats on a whole
sentence), and exp(−0.5·sum) would be ≈ 0 for every response, leaving no reward signal; a per-token
average of 0.33 nats is what a sharpened (τ = 0.8) p_target assigns its own text. The average also
keeps short and long responses on one scale, so the reward does not simply favour short answers.

Folding reflects rewards above τ_f (the level p_target itself rarely exceeds) back down, so the most
repetitive, highest-likelihood sentences (mode collapse) are not the optimum (App. C.3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

TargetLogprob = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

REWARD_SCALE = 10.0  # the 10.0 of eq. 9
NLL_SCALE = 0.5  # C of eq. 9
FOLD_QUANTILE = 0.9  # τ_f is the 90th percentile of R_base over p_target's own samples (App. C.3)
PAPER_FOLD_THRESHOLD = 8.4636  # the value the paper measured for SmolLM2-135M p_target (App. C.3)


def base_reward_from_nll(nll: torch.Tensor, scale: float = REWARD_SCALE, c: float = NLL_SCALE) -> torch.Tensor:
    """R_base = scale·exp(−c·NLL) (App. C.3, eq. 9)."""
    return scale * torch.exp(-c * nll)


def fold(reward: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """Eq. 10: rewards above `threshold` are reflected to 2·threshold − R; None leaves them unfolded."""
    if threshold is None:
        return reward
    return torch.where(reward <= threshold, reward, 2.0 * threshold - reward)


def fold_threshold(base_rewards: torch.Tensor, quantile: float = FOLD_QUANTILE) -> float:
    """τ_f: the `quantile` of R_base over samples of p_target (linear interpolation, as numpy's default)."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile = {quantile!r}: must be in (0, 1]")
    values = torch.as_tensor(base_rewards, dtype=torch.float64).flatten()
    if values.numel() == 0:
        raise ValueError("fold_threshold: no p_target samples were given")
    return float(torch.quantile(values, quantile))


def pair_preferences(nll_a: torch.Tensor, nll_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Label pairs by NLL under p_target (App. C.3): (a_is_chosen [B] bool, tie [B] bool).

    The response with the lower NLL is chosen. An exact tie (e.g. the two responses are identical,
    which happens once the policy collapses) carries no preference; callers drop tied pairs.
    """
    return nll_a < nll_b, nll_a == nll_b


@dataclass
class RewardOracle:
    """The reward and preference oracle built from a scorer of p_target (App. C.3).

    target_logprob: callable (token_ids [B, T], mask [B, T]) -> [B] per-token average log-prob
        of the masked tokens under p_target.
    fold_threshold: τ_f of eq. 10; None means no folding (R = R_base). Build it from p_target's own
        samples with `RewardOracle.from_target_samples` rather than copying the paper's 8.4636,
        which belongs to the paper's SmolLM2 p_target.
    scale, c: the 10.0 and C = 0.5 of eq. 9.
    """

    target_logprob: TargetLogprob
    fold_threshold: float | None = None
    scale: float = REWARD_SCALE
    c: float = NLL_SCALE

    def __post_init__(self):
        if not callable(self.target_logprob):
            raise TypeError("RewardOracle.target_logprob must be a callable (token_ids, mask) -> [B] log-prob")
        if self.scale <= 0:
            raise ValueError(f"RewardOracle.scale = {self.scale!r}: must be > 0")
        if self.c <= 0:
            raise ValueError(f"RewardOracle.c = {self.c!r}: must be > 0")
        if self.fold_threshold is not None and not 0 < self.fold_threshold <= self.scale:
            raise ValueError(
                f"RewardOracle.fold_threshold = {self.fold_threshold!r}: must be in (0, scale = {self.scale}] or None"
            )

    @classmethod
    def from_target_samples(
        cls,
        target_logprob: TargetLogprob,
        token_ids: torch.Tensor,
        mask: torch.Tensor,
        quantile: float = FOLD_QUANTILE,
        **kwargs,
    ) -> "RewardOracle":
        """The oracle whose τ_f is the `quantile` of R_base over p_target's own samples (`token_ids`, `mask`)."""
        unfolded = cls(target_logprob, None, **kwargs)
        threshold = fold_threshold(unfolded.base_reward(token_ids, mask), quantile)
        return cls(target_logprob, threshold, **kwargs)

    @torch.no_grad()
    def nll(self, token_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B] per-token average NLL of the masked tokens under p_target (float32 on CPU)."""
        logprob = self.target_logprob(token_ids, mask)
        logprob = torch.as_tensor(logprob).detach().float().cpu()
        if logprob.shape != (token_ids.shape[0],):
            raise ValueError(
                f"target_logprob returned shape {tuple(logprob.shape)}; expected one value per sequence "
                f"({token_ids.shape[0]},)"
            )
        return -logprob

    def base_reward(self, token_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B] R_base = scale·exp(−c·NLL) (eq. 9)."""
        return base_reward_from_nll(self.nll(token_ids, mask), self.scale, self.c)

    def reward_from_nll(self, nll: torch.Tensor) -> torch.Tensor:
        """[B] folded reward from precomputed NLLs (so one scoring pass serves reward and preference)."""
        return fold(base_reward_from_nll(nll, self.scale, self.c), self.fold_threshold)

    def reward(self, token_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B] the folded reward R of eq. 10 (R_base when `fold_threshold` is None)."""
        return self.reward_from_nll(self.nll(token_ids, mask))

    def prefer(self, a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """[B] bool: response a = (token_ids, mask) is preferred to b, i.e. has the lower NLL (App. C.3)."""
        a_is_chosen, _ = pair_preferences(self.nll(*a), self.nll(*b))
        return a_is_chosen
