"""PAD losses on batched scores: Plackett–Luce over every ranking, PPD (Jensen–Shannon) and VPD (NLL).

Preference-Aligned Distillation (Gu et al., 2025, arXiv 2502.14272, §4) turns the rewards of n responses
into a distribution over all n! rankings with the Plackett–Luce model,

    P(π | r) = Π_{i=1..n} exp(β r_{π_i}) / Σ_{j>=i} exp(β r_{π_j}),

and trains the student so that its distribution (from its own rewards) matches the teacher's:

- PPD, probabilistic preference distillation: the Jensen–Shannon divergence between the two
  distributions over the n! rankings;
- VPD, vanilla preference distillation: the negative log-likelihood, under the student's
  Plackett–Luce model, of the one ranking the teacher's rewards sort into.

Shapes: scores are `[..., n]` (any leading batch dims: trials, groups, ...); a ranking is a permutation
of `range(n)`, best first; distributions over rankings are `[..., n!]` in the order of `ranking_table(n)`.

How the n! log-probabilities are computed without materialising anything larger than needed. Writing S_i(π)
for the suffix set {π_i, ..., π_n},

    log P(π) = β Σ_j r_j − Σ_i LSE_{k ∈ S_i(π)} β r_k,

because every ranking places every item once, so the numerators sum to the same constant. The denominators
depend only on which *set* remains, and there are only 2^n sets. So we compute the 2^n subset
log-sum-exps once per row (O(2^n·n)), then, position by position, gather the suffix set's value for
every ranking and add it into one `[..., n!]` accumulator. Peak memory is O(n!) per batch row (the output
itself, plus one gathered `[..., n!]` term) instead of the O(n!·n) of gathering scores into a
`[..., n!, n]` tensor and running a reverse cumulative log-sum-exp over it; time is O(n!·n) gathers.
`plackett_luce_log_probs_dense` is that direct O(n!·n) form, kept as the readable reference and tested
against the fast one.

Preference decomposition (PAD §4.4): n responses are split into groups of `group_size` and each group
is distilled on its own (group_size! rankings each instead of n!), averaging the group losses. It is
principled because Plackett–Luce is internally consistent (Luce's choice axiom): the distribution of the
relative order of any subset, marginalised from the full n! distribution, is exactly the Plackett–Luce
distribution of that subset's scores. So each group's loss is the loss between the *marginals* of the
full distributions; by the data-processing inequality a decomposed PPD never exceeds the undecomposed one.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..validation import require_positive

MAX_N = 10  # 10! = 3.6M rankings: beyond this a full distribution over rankings is not a sensible loss
LOSSES = ("ppd", "vpd")


def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
        raise ValueError(f"n (responses per group) = {n!r}: must be an int in 1..{MAX_N}")


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta = {beta!r}: must be > 0 (it scales rewards before Plackett–Luce)")


@lru_cache(maxsize=None)
def ranking_table(n: int) -> torch.Tensor:
    """All n! rankings of n items, `[n!, n]` int64, lexicographic (row 0 is the identity, best first)."""
    _check_n(n)
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long).reshape(math.factorial(n), n)


@lru_cache(maxsize=None)
def _suffix_set_table(n: int) -> torch.Tensor:
    """`[n, n!]`: bitmask of the suffix set S_i(π) for position i and ranking π (row i is contiguous)."""
    table = ranking_table(n)
    bits = (1 << table).flip(-1).cumsum(-1).flip(-1)  # suffix sums of one-hot bits = suffix set masks
    return bits.t().contiguous()


@lru_cache(maxsize=None)
def _subset_membership(n: int) -> torch.Tensor:
    """`[2^n, n]` bool: item k belongs to subset mask m."""
    masks = torch.arange(1 << n).unsqueeze(-1)
    return (masks >> torch.arange(n)) & 1 == 1


def subset_logsumexp(scores: torch.Tensor) -> torch.Tensor:
    """`[..., 2^n]`: log Σ_{k in m} exp(scores_k) for every subset mask m (−inf for the empty set)."""
    n = scores.shape[-1]
    _check_n(n)
    member = _subset_membership(n).to(scores.device)
    masked = scores.unsqueeze(-2).masked_fill(~member, float("-inf"))  # [..., 2^n, n]
    return torch.logsumexp(masked, dim=-1)


def plackett_luce_log_probs(scores: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """log P(π) for every ranking π of `ranking_table(n)`: `[..., n] -> [..., n!]`, differentiable.

    Peak memory O(n!) per row (see the module docstring); the probabilities sum to one per row.
    """
    _check_beta(beta)
    n = scores.shape[-1]
    _check_n(n)
    scaled = beta * scores
    subsets = subset_logsumexp(scaled)  # [..., 2^n]
    suffix_sets = _suffix_set_table(n).to(scores.device)  # [n, n!]
    flat = subsets.reshape(-1, subsets.shape[-1])
    # Position 0's suffix set is every item: one constant, folded into the numerator sum.
    log_probs = (scaled.sum(-1) - subsets[..., -1]).reshape(-1, 1).expand(-1, suffix_sets.shape[1]).clone()
    # In-place subtraction: autograd needs neither operand of a difference, so only one gathered
    # `[rows, n!]` term is alive next to the accumulator.
    for position in range(1, n - 1):  # the last position's term (a singleton) cancels its own numerator
        log_probs.sub_(torch.gather(flat, 1, suffix_sets[position].expand(flat.shape[0], -1)))
    if n > 1:
        last_items = ranking_table(n)[:, -1].to(scores.device).expand(flat.shape[0], -1)
        log_probs.sub_(torch.gather(scaled.reshape(-1, n), 1, last_items))
    return log_probs.reshape(*scores.shape[:-1], suffix_sets.shape[1])


def plackett_luce_log_probs_dense(scores: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """The same `[..., n!]` log-probabilities by the direct route: gather `[..., n!, n]`, reverse logcumsumexp.

    O(n!·n) memory per row; the reference implementation the fast one is tested against.
    """
    _check_beta(beta)
    n = scores.shape[-1]
    table = ranking_table(n).to(scores.device)
    ordered = (beta * scores)[..., table]  # [..., n!, n], scores in ranked order
    suffix_lse = torch.logcumsumexp(ordered.flip(-1), dim=-1).flip(-1)
    return (ordered - suffix_lse).sum(-1)


def plackett_luce_log_prob(scores: torch.Tensor, ranking: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """log P(ranking) for one ranking per row: scores `[..., n]`, ranking `[..., n]` (best first) -> `[...]`. O(n)."""
    _check_beta(beta)
    ordered = torch.gather(beta * scores, -1, ranking)
    suffix_lse = torch.logcumsumexp(ordered.flip(-1), dim=-1).flip(-1)
    return (ordered - suffix_lse).sum(-1)


def sorted_ranking(scores: torch.Tensor) -> torch.Tensor:
    """The ranking the scores sort into, best first (ties keep the original order): `[..., n]` int64."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices


class _JensenShannon(torch.autograd.Function):
    """JSD with its closed-form gradient, ∂JSD/∂log p_i = ½ p_i (log p_i − log m_i), so that backward
    keeps only the two input log-distributions instead of every `[..., n!]` intermediate autograd would save."""

    @staticmethod
    def forward(ctx, log_p, log_q):
        log_m = torch.logaddexp(log_p, log_q).sub_(math.log(2.0))
        kl_pm = (log_p - log_m).mul_(log_p.exp()).sum(-1)
        kl_qm = (log_q - log_m).mul_(log_q.exp()).sum(-1)
        ctx.save_for_backward(log_p, log_q)
        return 0.5 * (kl_pm + kl_qm)

    @staticmethod
    def backward(ctx, grad_out):
        log_p, log_q = ctx.saved_tensors
        log_m = torch.logaddexp(log_p, log_q).sub_(math.log(2.0))
        scale = 0.5 * grad_out.unsqueeze(-1)
        grad_p = (log_p - log_m).mul_(log_p.exp()).mul_(scale) if ctx.needs_input_grad[0] else None
        grad_q = (log_q - log_m).mul_(log_q.exp()).mul_(scale) if ctx.needs_input_grad[1] else None
        return grad_p, grad_q


def jensen_shannon(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """JSD(P, Q) = ½ KL(P‖M) + ½ KL(Q‖M), M = (P+Q)/2, over the last dim of two log-distributions. In [0, log 2].

    Differentiable in both arguments (first order).
    """
    return _JensenShannon.apply(log_p, log_q)


def decompose(scores: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """Split `[..., n]` into `[..., n // group_size, group_size]` groups of consecutive responses.

    Responses are i.i.d. samples, so consecutive groups are random groups. `None` means one group of n.
    """
    n = scores.shape[-1]
    if group_size is None:
        group_size = n
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1 or n % group_size:
        raise ValueError(f"group_size = {group_size!r}: must be an int >= 1 that divides n = {n}")
    return scores.reshape(*scores.shape[:-1], n // group_size, group_size)


def ppd_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor, beta: float = 1.0,
             group_size: int | None = None) -> torch.Tensor:
    """PPD: JSD between the student's and the teacher's Plackett–Luce distributions, per row `[...]`.

    With `group_size`, the mean over groups of the per-group JSD (preference decomposition).
    The teacher's scores carry no gradient.
    """
    student = decompose(student_scores, group_size)
    teacher = decompose(teacher_scores.detach(), group_size)
    divergence = jensen_shannon(plackett_luce_log_probs(student, beta), plackett_luce_log_probs(teacher, beta))
    return divergence.mean(-1)


def vpd_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor, beta: float = 1.0,
             group_size: int | None = None) -> torch.Tensor:
    """VPD: −log P_student(teacher's ranking), per row `[...]`; with `group_size`, the mean over groups.

    Needs only the one ranking, so it costs O(n log n), not O(n!).
    """
    student = decompose(student_scores, group_size)
    teacher = decompose(teacher_scores.detach(), group_size)
    return -plackett_luce_log_prob(student, sorted_ranking(teacher), beta).mean(-1)


STUDENT_INITS = ("fresh", "p_low")  # a new compact student, or p'' itself (the model K-A is trapped in)


@dataclass(frozen=True)
class PADObjective:
    """The settings PAD has in both testbeds (PAD, Gu et al. 2025, §4–5); `pad.mog.PADConfig` and
    `pad.lm.LMPADConfig` add their testbed's budget and student."""

    loss: str = "ppd"
    """"ppd" (Jensen–Shannon over all n! rankings, PAD's main loss) or "vpd" (NLL of the teacher's ranking)."""
    n_responses: int = 4
    """Responses per prompt n (PAD §5.1: 4); 2..8 here (n! rankings per group)."""
    group_size: int | None = None
    """Preference decomposition (PAD §4.4): rank groups of this size (must divide n); None = all n at once."""
    beta: float = 1.0
    """Plackett–Luce scale β on the rewards, for teacher and student alike."""
    tau: float = 0.8
    """Student sampling temperature τ (PAD §4.1: 0.8)."""
    student_init: str = "fresh"
    """"fresh": a new student initialised as KD initialises its students; "p_low": a copy of p''."""

    def __post_init__(self):
        check_pad_settings(self.loss, self.n_responses, self.group_size)
        require_positive(self, "beta", "tau")
        if self.student_init not in STUDENT_INITS:
            raise ValueError(f"student_init = {self.student_init!r}: must be one of {', '.join(STUDENT_INITS)}")


def check_pad_settings(loss: str, n_responses, group_size) -> None:
    """What every PAD config checks before compute: a known loss, 2 <= n <= 8 responses (n! rankings
    per group) and a group size >= 2 that divides n (or None for one group of n)."""
    if loss not in LOSSES:
        raise ValueError(f"loss = {loss!r}: must be one of {', '.join(LOSSES)}")
    n, g = n_responses, group_size
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= min(MAX_N, 8):
        raise ValueError(f"n_responses = {n!r}: must be an integer in 2..8")
    if g is not None and (isinstance(g, bool) or not isinstance(g, int) or g < 2 or n % g):
        raise ValueError(f"group_size = {g!r}: must be None or an integer >= 2 dividing n_responses = {n}")


def pad_loss(kind: str, student_scores: torch.Tensor, teacher_scores: torch.Tensor, beta: float = 1.0,
             group_size: int | None = None) -> torch.Tensor:
    """`ppd_loss` or `vpd_loss` by name; per row `[...]`."""
    if kind == "ppd":
        return ppd_loss(student_scores, teacher_scores, beta, group_size)
    if kind == "vpd":
        return vpd_loss(student_scores, teacher_scores, beta, group_size)
    raise ValueError(f"loss = {kind!r}: must be one of {', '.join(LOSSES)}")
