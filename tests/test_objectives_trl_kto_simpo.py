"""KTO and SimPO (SPEC §8): closed forms by hand, and values and gradients pinned on a fixed batch to TRL 1.16's own
loss code (`KTOTrainer._compute_loss` with loss_type "kto"; `CPOTrainer.get_batch_loss_metrics` / `cpo_loss` with
loss_type "simpo", cpo_alpha 0), called unbound on a stand-in `self` that carries exactly the attributes they read."""

import functools
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from alignkd.objectives import kto_loss, kto_reference_point, masked_mean, simpo_loss

# a fixed batch of 6 sequence log-probs: 3 desirable, 3 undesirable; example 0 is desirable with π_ref(y) ≈ 0
POLICY_LOGP = [-4.0, -2.5, -7.0, -3.0, -5.5, -1.2]
REF_LOGP = [-30.0, -3.0, -6.0, -2.0, -6.5, -1.0]
DESIRABLE = [True, True, True, False, False, False]
# the KL completions: other samples of the current policy (policy and reference log-probs)
KL_POLICY_LOGP = [-3.1, -2.2, -5.0, -4.4, -0.9, -6.3]
KL_REF_LOGP = [-3.9, -2.0, -7.5, -4.0, -1.6, -6.0]


def identity_accelerator():
    return SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x)


def trl_kto_loss(policy_logp, ref_logp, desirable, kl_policy_logp, kl_ref_logp, beta, desirable_weight,
                 undesirable_weight):
    """TRL 1.16's `KTOTrainer._compute_loss` on sequences whose summed log-probs are the given ones.

    The stand-in model returns per-token log-probs that are 0 except at the last position, which holds the
    sequence's log-prob, so TRL's own sum over tokens gives back `policy_logp` (with its gradient) and, for the
    KL completions (a narrower batch), `kl_policy_logp`; reference log-probs come precomputed in the batch."""
    from trl import KTOTrainer

    n, width, kl_width = len(desirable), 4, 3

    def model(input_ids, **kwargs):
        logp = policy_logp if input_ids.shape[1] == width else kl_policy_logp
        zeros = torch.zeros(n, input_ids.shape[1] - 2, dtype=logp.dtype)
        per_token = torch.cat([zeros, logp[:, None]], 1)
        return SimpleNamespace(log_probs=per_token, entropy=torch.zeros_like(per_token.detach()),
                               mean_logits=torch.zeros_like(per_token.detach()))

    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=identity_accelerator(), aux_loss_enabled=False,
        precompute_ref_logps=True, calculate_KL=True, ref_model=None, loss_type="kto", beta=beta,
        desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    trainer._compute_kl_logps = functools.partial(KTOTrainer._compute_kl_logps, trainer)
    ones = torch.ones(n, width, dtype=torch.long)
    kl_ones = torch.ones(n, kl_width, dtype=torch.long)
    batch = {"input_ids": ones, "attention_mask": ones, "completion_mask": ones, "label": desirable,
             "ref_logps": ref_logp, "ref_KL_logps": kl_ref_logp,
             "KL_input_ids": kl_ones, "KL_attention_mask": kl_ones, "KL_completion_mask": kl_ones}
    loss = KTOTrainer._compute_loss(trainer, model, batch, return_outputs=False)
    return loss, trainer._metrics["train"]["kl"][0]


@pytest.mark.parametrize("beta, desirable_weight, undesirable_weight, kl_shift", [
    (0.1, 1.0, 1.0, 0.0),     # TRL's defaults
    (0.5, 1.33, 0.7, 0.0),    # unequal weights (KTO's recipe for imbalanced labels)
    (2.0, 1.0, 1.0, -3.0),    # a negative KL estimate: z_ref clamps at 0
])
def test_kto_matches_trl_kto_trainer_values_and_gradients(beta, desirable_weight, undesirable_weight, kl_shift):
    ref_logp = torch.tensor(REF_LOGP)
    desirable = torch.tensor(DESIRABLE)
    kl_policy = torch.tensor(KL_POLICY_LOGP) + kl_shift
    kl_ref = torch.tensor(KL_REF_LOGP)

    theirs_logp = torch.tensor(POLICY_LOGP, requires_grad=True)
    theirs, trl_kl = trl_kto_loss(theirs_logp, ref_logp, desirable, kl_policy, kl_ref, beta, desirable_weight,
                                  undesirable_weight)
    theirs.backward()

    ours_logp = torch.tensor(POLICY_LOGP, requires_grad=True)
    z_ref = kto_reference_point(kl_policy, kl_ref)
    ours = kto_loss(ours_logp, ref_logp, desirable, z_ref, beta, desirable_weight, undesirable_weight).mean()
    ours.backward()

    assert float(z_ref) == pytest.approx(trl_kl, rel=1e-6, abs=0)
    if kl_shift < 0:
        assert float(z_ref) == 0.0
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours_logp.grad, theirs_logp.grad, rtol=1e-6, atol=0)


def test_kto_closed_forms_and_the_saturated_desirable_sample():
    beta, lam_d, lam_u = 0.7, 1.5, 0.5
    r = torch.tensor([0.4, 0.4, 0.4 + 2.0, 0.4 - 2.0], dtype=torch.float64, requires_grad=True)
    desirable = torch.tensor([True, False, True, False])
    z_ref = torch.tensor(0.4, dtype=torch.float64)
    loss = kto_loss(r, torch.zeros(4, dtype=torch.float64), desirable, z_ref, beta, lam_d, lam_u)
    # r = z_ref: 1 − σ(0) = ½, times the label's weight
    assert loss[:2].tolist() == pytest.approx([0.5 * lam_d, 0.5 * lam_u], rel=1e-7)
    s = float(torch.sigmoid(torch.tensor(beta * 2.0, dtype=torch.float64)))
    assert loss[2:].tolist() == pytest.approx([lam_d * (1 - s), lam_u * (1 - s)], rel=1e-6)
    loss.sum().backward()
    # ∂/∂r: −λ_D β σ(1 − σ) for desirable, +λ_U β σ(1 − σ) for undesirable
    expected = torch.tensor([-lam_d * beta / 4, lam_u * beta / 4, -lam_d * beta * s * (1 - s), lam_u * beta * s * (1 - s)],
                            dtype=torch.float64)
    torch.testing.assert_close(r.grad, expected)
    # the trap (§3.4): a desirable y the reference has lost (log π_ref = −30) has r ≫ z_ref and no gradient
    # while the same sample under a reference that covers it (log π_ref = −4) gets the full −β/4
    policy = torch.tensor([-4.0, -4.0], requires_grad=True)
    kto_loss(policy, torch.tensor([-30.0, -4.0]), torch.tensor([True, True]), 0.0, 1.0).sum().backward()
    assert abs(float(policy.grad[0])) < 1e-10 and float(policy.grad[1]) == pytest.approx(-0.25)


def test_kto_reference_point_is_a_detached_clamped_mean_per_row():
    policy = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]], requires_grad=True)
    ref = torch.tensor([[-2.0, -2.5, -4.5], [0.0, -0.5, -1.0]])
    per_row = kto_reference_point(policy, ref, dim=-1, keepdim=True)
    assert per_row.shape == (2, 1) and not per_row.requires_grad
    torch.testing.assert_close(per_row, torch.tensor([[1.0], [0.0]]))  # row 2's mean is −0.5: clamped
    assert float(kto_reference_point(policy, ref)) == pytest.approx(0.25)  # all elements: (3 − 1.5)/6


def trl_simpo_loss(avg_w, avg_l, beta, gamma):
    """TRL 1.16's CPO `get_batch_loss_metrics` with loss_type "simpo", cpo_alpha 0, label smoothing 0 (AlphaPO
    alpha 0): the stand-in forward returns the given average log-probs and a non-zero NLL that cpo_alpha 0 drops."""
    from trl.experimental.cpo import CPOTrainer

    trainer = SimpleNamespace(loss_type="simpo", beta=beta, simpo_gamma=gamma, label_smoothing=0.0, alpha=0.0,
                              cpo_alpha=0.0, aux_loss_enabled=False, accelerator=identity_accelerator())
    trainer.cpo_loss = functools.partial(CPOTrainer.cpo_loss, trainer)
    trainer.concatenated_forward = lambda model, batch: (avg_w, avg_l, torch.zeros(1), torch.zeros(1),
                                                         torch.tensor(3.7))
    loss, _ = CPOTrainer.get_batch_loss_metrics(trainer, None, {})
    return loss, trainer.cpo_loss(avg_w, avg_l)[0]


@pytest.mark.parametrize("beta, gamma", [(0.1, 0.5), (2.0, 0.5), (2.5, 1.4)])  # TRL's defaults; SimPO paper's range
def test_simpo_matches_trl_cpo_simpo_values_and_gradients(beta, gamma):
    avg_w = [-1.2, -0.7, -2.9, -0.4, -1.8, -3.3]
    avg_l = [-1.5, -0.6, -3.4, -2.0, -1.8, -0.2]
    theirs_w, theirs_l = torch.tensor(avg_w, requires_grad=True), torch.tensor(avg_l, requires_grad=True)
    theirs, theirs_per_pair = trl_simpo_loss(theirs_w, theirs_l, beta, gamma)
    theirs.backward()
    ours_w, ours_l = torch.tensor(avg_w, requires_grad=True), torch.tensor(avg_l, requires_grad=True)
    ours_per_pair = simpo_loss(ours_w, ours_l, beta, gamma)
    ours = ours_per_pair.mean()
    ours.backward()
    torch.testing.assert_close(ours_per_pair, theirs_per_pair.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours_w.grad, theirs_w.grad, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours_l.grad, theirs_l.grad, rtol=1e-6, atol=0)


def test_simpo_length_normalisation_is_trl_get_batch_logps_average():
    """What SimPO's `avg` arguments are: TRL's `get_batch_logps(average_log_prob=True)` (the per-token mean over the
    completion mask) equals our masked mean of token log-probs, in value and gradient through the whole loss."""
    from trl.experimental.cpo import CPOTrainer

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 11, generator=generator, requires_grad=True)
    labels = torch.randint(0, 11, (4, 6), generator=generator)
    labels[:, :2] = -100  # the prompt
    labels[1, 4:] = -100  # padding: a shorter completion
    labels[3, 3:] = -100
    theirs = CPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)
    targets, mask = labels[:, 1:], (labels[:, 1:] != -100).float()
    token_logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    ours = masked_mean(token_logp, mask, dim=-1)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    (g_theirs,) = torch.autograd.grad(CPOTrainer.cpo_loss(
        SimpleNamespace(loss_type="simpo", beta=2.0, simpo_gamma=0.5, label_smoothing=0.0, alpha=0.0,
                        accelerator=identity_accelerator()), theirs[:2], theirs[2:])[0].sum(), logits)
    (g_ours,) = torch.autograd.grad(simpo_loss(ours[:2], ours[2:], 2.0, 0.5).sum(), logits)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=1e-7)


def test_simpo_closed_form_and_no_reference():
    beta, gamma = 2.0, 0.5
    w = torch.tensor([-1.0, -1.0 + gamma / beta], requires_grad=True)
    loss = simpo_loss(w, torch.tensor([-1.0, -1.0]), beta, gamma)
    # margin Δ = 0: −log σ(−γ); Δ = γ/β (the target margin met): −log σ(0) = log 2
    assert loss.tolist() == pytest.approx([float(-torch.nn.functional.logsigmoid(torch.tensor(-gamma))),
                                           float(torch.log(torch.tensor(2.0)))], rel=1e-6)
    loss.sum().backward()
    # ∂/∂avg_w = −β σ(−(βΔ − γ))
    torch.testing.assert_close(w.grad, -beta * torch.sigmoid(-torch.tensor([-gamma, 0.0])))
    # no reference enters: the signature has none, and shifting both averages by the same amount (what any
    # per-pair constant such as a reference offset would do to a log-ratio margin) leaves the loss unchanged
    import inspect
    assert not any("ref" in name for name in inspect.signature(simpo_loss).parameters)
    shifted = simpo_loss(w.detach() - 25.0, torch.tensor([-26.0, -26.0]), beta, gamma)
    torch.testing.assert_close(shifted, loss.detach())
