"""The reward oracle of the LLM experiments: NLL under p_target, folded (paper App. C.3, eqs. 9–10).

    oracle = RewardOracle.from_language_model(p_target, target_samples)   # τ_f from p_target's own samples
    oracle = RewardOracle.from_target_samples(target_logprob, target_samples)   # any scorer
    oracle.nll(samples)          # [B] per-token average NLL of the response tokens under p_target
    oracle.base_reward(samples)  # R_base = 10·exp(−0.5·NLL)                                (eq. 9)
    oracle.reward(samples)       # R = R_base if R_base ≤ τ_f else 2τ_f − R_base           (eq. 10)
    oracle.prefer(a, b)          # [B] bool: response a is chosen over b (lower NLL; App. C.3)

`samples` are `alignkd.lm.generation.Samples` (right-padded prompt + response). The scorer
`target_logprob(token_ids, mask) -> [B]` is any function returning, per sequence, the *per-token
average* log-probability under p_target of the tokens where `mask` is True; the oracle passes the
response mask (`samples.response_mask`: the response and its EOS; not the prompt, since
NLL(y | x) conditions on x; not padding). With right padding the real-token mask is recoverable from it
(every position up to the last response token), which is what `scorer_from_language_model` does.

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

from .generation import Samples

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


def pair_indices(nll: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """On-policy pairs of a batch of 2n responses (App. C.3): response i is paired with i + n and the one with the
    lower NLL under p_target is chosen; tied pairs carry no preference and are dropped. Returns the batch indices
    (chosen [m], rejected [m]) of the m untied pairs, on `nll`'s device."""
    n = len(nll) // 2
    first_is_chosen, tie = pair_preferences(nll[:n], nll[n:2 * n])
    keep = (~tie).nonzero()[:, 0]
    first, second = torch.arange(n, device=nll.device), torch.arange(n, device=nll.device) + n
    return torch.where(first_is_chosen, first, second)[keep], torch.where(first_is_chosen, second, first)[keep]


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
        cls, target_logprob: TargetLogprob, target_samples: Samples, quantile: float = FOLD_QUANTILE, **kwargs
    ) -> "RewardOracle":
        """The oracle whose τ_f is the `quantile` of R_base over p_target's own samples."""
        threshold = fold_threshold(cls(target_logprob, None, **kwargs).base_reward(target_samples), quantile)
        return cls(target_logprob, threshold, **kwargs)

    @classmethod
    def from_language_model(
        cls, p_target, target_samples: Samples | None = None, quantile: float = FOLD_QUANTILE, **kwargs
    ) -> "RewardOracle":
        """The oracle of any `alignkd.lm.models.LanguageModel` (exact `markov_mixture` densities,
        HF models): its `log_prob(samples).per_token` is the score; τ_f from `target_samples`, if given."""
        scorer = scorer_from_language_model(p_target)
        if target_samples is None:
            return cls(scorer, None, **kwargs)
        return cls.from_target_samples(scorer, target_samples, quantile, **kwargs)

    @torch.no_grad()
    def nll(self, samples: Samples) -> torch.Tensor:
        """[B] per-token average NLL of the response tokens under p_target (float32 on CPU)."""
        logprob = self.target_logprob(samples.tokens, samples.response_mask)
        logprob = torch.as_tensor(logprob).detach().float().cpu()
        if logprob.shape != (len(samples),):
            raise ValueError(
                f"target_logprob returned shape {tuple(logprob.shape)}; expected one value per sequence ({len(samples)},)"
            )
        return -logprob

    def base_reward(self, samples: Samples) -> torch.Tensor:
        """[B] R_base = scale·exp(−c·NLL) (eq. 9)."""
        return base_reward_from_nll(self.nll(samples), self.scale, self.c)

    def reward_from_nll(self, nll: torch.Tensor) -> torch.Tensor:
        """[B] folded reward from precomputed NLLs (so one scoring pass serves reward and preference)."""
        return fold(base_reward_from_nll(nll, self.scale, self.c), self.fold_threshold)

    def reward(self, samples: Samples) -> torch.Tensor:
        """[B] the folded reward R of eq. 10 (R_base when `fold_threshold` is None)."""
        return self.reward_from_nll(self.nll(samples))

    def prefer(self, a: Samples, b: Samples) -> torch.Tensor:
        """[B] bool: response a[i] is preferred to b[i], i.e. has the lower NLL under p_target (App. C.3).

        Preferences follow the NLL, not the folded reward, as in the paper's DPO labelling."""
        a_is_chosen, _ = pair_preferences(self.nll(a), self.nll(b))
        return a_is_chosen


def _real_mask_and_prompt_length(response_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Undo `Samples.response_mask` for right-padded rows sharing one prompt: the real-token mask is
    every position up to the last response token; the prompt ends where the first response begins."""
    positions = torch.arange(response_mask.shape[1], device=response_mask.device)
    last = torch.where(response_mask, positions, -1).max(1).values
    first = torch.where(response_mask, positions, response_mask.shape[1]).min(1).values
    return positions[None, :] <= last[:, None], int(first.min())


def scorer_from_language_model(p_target) -> TargetLogprob:
    """`target_logprob(token_ids, response_mask)` of a `models.LanguageModel` (per-token average)."""

    @torch.no_grad()
    def target_logprob(token_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        real, prompt_length = _real_mask_and_prompt_length(response_mask.bool())
        return p_target.log_prob(Samples(token_ids, real, prompt_length)).per_token

    return target_logprob
