"""PAD losses: Plackett–Luce over all rankings, PPD (JSD), VPD (NLL), β, decomposition."""

import math

import pytest
import torch

from alignkd.pad.losses import (
    decompose,
    jensen_shannon,
    pad_loss,
    plackett_luce_log_prob,
    plackett_luce_log_probs,
    plackett_luce_log_probs_dense,
    ppd_loss,
    ranking_table,
    sorted_ranking,
    subset_logsumexp,
    vpd_loss,
)


def _scores(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _index_of(ranking, n):
    """Row of `ranking_table(n)` equal to `ranking`."""
    return int((ranking_table(n) == torch.as_tensor(ranking)).all(-1).nonzero().item())


def test_ranking_table_is_every_permutation_once():
    for n in range(1, 8):
        table = ranking_table(n)
        assert table.shape == (math.factorial(n), n)
        assert torch.equal(table.sort(-1).values, torch.arange(n).expand_as(table))
        assert len({tuple(r) for r in table.tolist()}) == math.factorial(n)
    assert ranking_table(3).tolist() == [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8])
def test_probabilities_over_all_rankings_sum_to_one(n):
    scores = 3.0 * _scores(4, n, seed=n)
    probs = plackett_luce_log_probs(scores, beta=0.8).exp()
    assert probs.shape == (4, math.factorial(n))
    assert torch.allclose(probs.sum(-1), torch.ones(4, dtype=torch.float64), atol=1e-12)
    assert (probs > 0).all()


def test_hand_computation_for_three_responses():
    # rewards 2, 1, 0.5: P(a>b>c) = e^2/(e^2+e^1+e^.5) · e^1/(e^1+e^.5), and so on for all six.
    e2, e1, eh = math.exp(2.0), math.exp(1.0), math.exp(0.5)
    total = e2 + e1 + eh
    expected = [
        e2 / total * e1 / (e1 + eh),  # 0 > 1 > 2
        e2 / total * eh / (e1 + eh),  # 0 > 2 > 1
        e1 / total * e2 / (e2 + eh),  # 1 > 0 > 2
        e1 / total * eh / (e2 + eh),  # 1 > 2 > 0
        eh / total * e2 / (e2 + e1),  # 2 > 0 > 1
        eh / total * e1 / (e2 + e1),  # 2 > 1 > 0
    ]
    probs = plackett_luce_log_probs(torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)).exp()
    assert probs.tolist() == pytest.approx(expected, abs=1e-14)
    assert probs[0].item() == pytest.approx(0.39123543357970543, abs=1e-12)


def test_fast_and_dense_agree_in_value_and_gradient():
    for n in (2, 3, 5, 6):
        scores = _scores(2, 3, n, seed=10 + n).requires_grad_(True)
        fast = plackett_luce_log_probs(scores, beta=1.7)
        dense = plackett_luce_log_probs_dense(scores, beta=1.7)
        assert torch.allclose(fast, dense, atol=1e-12)
        weights = _scores(*fast.shape, seed=99)
        (g_fast,) = torch.autograd.grad((fast * weights).sum(), scores)
        (g_dense,) = torch.autograd.grad((dense * weights).sum(), scores)
        assert torch.allclose(g_fast, g_dense, atol=1e-12)


def test_first_choice_marginal_is_softmax_and_single_ranking_matches_table():
    n, beta = 5, 1.3
    scores = _scores(3, n, seed=3)
    probs = plackett_luce_log_probs(scores, beta).exp()
    first = torch.stack([probs[:, ranking_table(n)[:, 0] == k].sum(-1) for k in range(n)], -1)
    assert torch.allclose(first, torch.softmax(beta * scores, -1), atol=1e-12)
    ranking = torch.tensor([3, 0, 4, 1, 2])
    one = plackett_luce_log_prob(scores, ranking.expand(3, n), beta)
    assert torch.allclose(one, plackett_luce_log_probs(scores, beta)[:, _index_of(ranking, n)], atol=1e-12)


def test_beta_scales_scores_and_shifts_cancel():
    scores = _scores(2, 4, seed=4)
    assert torch.allclose(plackett_luce_log_probs(scores, 2.5), plackett_luce_log_probs(2.5 * scores), atol=1e-12)
    assert torch.allclose(plackett_luce_log_probs(scores + 7.0), plackett_luce_log_probs(scores), atol=1e-12)
    # β → large: the distribution concentrates on the sorted ranking; β → 0: uniform over 4! rankings.
    sharp = plackett_luce_log_probs(scores, 200.0).exp()
    for row in range(2):
        assert sharp[row, _index_of(sorted_ranking(scores[row]), 4)].item() > 0.999
    flat = plackett_luce_log_probs(scores, 1e-9).exp()
    assert torch.allclose(flat, torch.full_like(flat, 1 / 24), atol=1e-9)


def test_subset_logsumexp_by_hand():
    scores = torch.tensor([0.0, math.log(2.0), math.log(5.0)], dtype=torch.float64)
    lse = subset_logsumexp(scores).exp()  # subset masks 0..7: sums of {1, 2, 5}
    assert lse.tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 8.0], abs=1e-12)


def test_jsd_zero_for_equal_scores_symmetric_bounded_and_by_hand():
    scores = _scores(3, 4, seed=5)
    assert torch.allclose(ppd_loss(scores, scores.clone()), torch.zeros(3, dtype=torch.float64), atol=1e-14)
    other = _scores(3, 4, seed=6)
    assert torch.allclose(ppd_loss(scores, other, 1.5), ppd_loss(other, scores, 1.5), atol=1e-14)
    assert (ppd_loss(scores, other) > 1e-3).all()
    # Opposite orders at large β: the two distributions barely overlap, JSD → log 2.
    far = ppd_loss(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 3.0]), beta=40.0)
    assert far.item() == pytest.approx(math.log(2.0), abs=1e-6)
    # Hand: P = (1/2, 1/2), Q = (1/4, 3/4): M = (3/8, 5/8).
    p, q = torch.tensor([0.5, 0.5]).log(), torch.tensor([0.25, 0.75]).log()
    hand = 0.5 * (0.5 * math.log(0.5 / 0.375) + 0.5 * math.log(0.5 / 0.625)) + 0.5 * (
        0.25 * math.log(0.25 / 0.375) + 0.75 * math.log(0.75 / 0.625))
    assert jensen_shannon(p, q).item() == pytest.approx(hand, abs=1e-7)


def test_vpd_is_pl_nll_of_the_teachers_sorted_ranking():
    n, beta = 4, 0.9
    student, teacher = _scores(5, n, seed=7), _scores(5, n, seed=8)
    table_log_probs = plackett_luce_log_probs(student, beta)
    expected = torch.stack([-table_log_probs[i, _index_of(sorted_ranking(teacher[i]), n)] for i in range(5)])
    assert torch.allclose(vpd_loss(student, teacher, beta), expected, atol=1e-12)
    # A student whose scores sort the same way as the teacher's is most likely to produce that ranking.
    assert (vpd_loss(teacher, teacher, beta) < vpd_loss(student, teacher, beta) + 1e-12).all()


def test_decomposition_with_one_group_equals_undecomposed():
    student, teacher = _scores(3, 6, seed=9), _scores(3, 6, seed=10)
    for loss in ("ppd", "vpd"):
        assert torch.allclose(pad_loss(loss, student, teacher, 1.2, group_size=6),
                              pad_loss(loss, student, teacher, 1.2), atol=1e-14)
    assert torch.allclose(ppd_loss(student, teacher, group_size=1), torch.zeros(3, dtype=torch.float64))


def _marginal(full_log_probs, n, group):
    """Distribution of the relative order of `group` under a distribution over all n! rankings."""
    table = ranking_table(n)
    position = torch.argsort(table, -1)[:, list(group)]  # where each group member lands in each ranking
    relative = torch.argsort(position, -1)  # the group's relative ranking, in group-local indices
    index = torch.tensor([_index_of(r, len(group)) for r in relative.tolist()])
    out = torch.zeros(full_log_probs.shape[:-1] + (math.factorial(len(group)),), dtype=full_log_probs.dtype)
    return out.index_add_(-1, index, full_log_probs.exp()).log()


def test_decomposed_ppd_is_jsd_of_marginals_and_never_exceeds_full():
    n, beta = 6, 1.1
    student, teacher = 2 * _scores(4, n, seed=11), 2 * _scores(4, n, seed=12)
    full_s, full_t = plackett_luce_log_probs(student, beta), plackett_luce_log_probs(teacher, beta)
    for group in ((0, 1, 2), (3, 4, 5)):  # Luce consistency: marginals of the full PL are the group's PL
        assert torch.allclose(_marginal(full_s, n, group), plackett_luce_log_probs(student[:, group], beta), atol=1e-12)
    by_marginals = 0.5 * sum(jensen_shannon(_marginal(full_s, n, g), _marginal(full_t, n, g)) for g in ((0, 1, 2), (3, 4, 5)))
    decomposed = ppd_loss(student, teacher, beta, group_size=3)
    assert torch.allclose(decomposed, by_marginals, atol=1e-12)
    assert (decomposed <= ppd_loss(student, teacher, beta) + 1e-12).all()
    assert decompose(student, 3).shape == (4, 2, 3)


def test_ppd_and_vpd_gradients_pass_gradcheck_and_skip_the_teacher():
    student = _scores(2, 4, seed=13).requires_grad_(True)
    teacher = _scores(2, 4, seed=14).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: ppd_loss(s, teacher, 0.7, 2).sum() + ppd_loss(s, teacher, 0.7).sum(), (student,))
    assert torch.autograd.gradcheck(lambda s: vpd_loss(s, teacher, 0.7).sum(), (student,))
    ppd_loss(student, teacher).sum().backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


def test_vpd_gradient_by_hand_for_two_responses():
    # n = 2, teacher prefers item 0: loss = −log σ(β(s0 − s1)); d/ds0 = −β σ(−β(s0 − s1)).
    student = torch.tensor([0.3, 1.0], requires_grad=True)
    vpd_loss(student, torch.tensor([5.0, 1.0]), beta=2.0).backward()
    slope = -2.0 * torch.sigmoid(torch.tensor(-2.0 * (0.3 - 1.0))).item()
    assert student.grad.tolist() == pytest.approx([slope, -slope], abs=1e-6)


def test_bad_inputs_fail_with_the_parameter_named():
    scores = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="beta"):
        plackett_luce_log_probs(scores, beta=0.0)
    with pytest.raises(ValueError, match="group_size"):
        ppd_loss(scores, scores, group_size=3)
    with pytest.raises(ValueError, match="loss"):
        pad_loss("kl", scores, scores)
    with pytest.raises(ValueError, match="n "):
        plackett_luce_log_probs(torch.zeros(11))


def test_jsd_closed_form_gradient_matches_autograd_of_the_definition():
    log_p = torch.log_softmax(_scores(3, 24, seed=15), -1).requires_grad_(True)
    log_q = torch.log_softmax(_scores(3, 24, seed=16), -1).requires_grad_(True)
    weights = _scores(3, seed=17)
    (jensen_shannon(log_p, log_q) * weights).sum().backward()
    p, q = log_p.detach().clone().requires_grad_(True), log_q.detach().clone().requires_grad_(True)
    m = 0.5 * (p.exp() + q.exp())
    plain = 0.5 * (p.exp() * (p - m.log())).sum(-1) + 0.5 * (q.exp() * (q - m.log())).sum(-1)
    (plain * weights).sum().backward()
    assert torch.allclose(log_p.grad, p.grad, atol=1e-12) and torch.allclose(log_q.grad, q.grad, atol=1e-12)
    assert torch.allclose(jensen_shannon(log_p, log_q), plain, atol=1e-12)
