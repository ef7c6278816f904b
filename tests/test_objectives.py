"""Every objective of alignkd.objectives once, against a hand computation, a closed form or autograd."""

import math

import pytest
import torch

from alignkd import objectives as obj


pytestmark = pytest.mark.usefixtures("double_precision")


# --- DPO ---------------------------------------------------------------------------------------------

def test_dpo_loss_logit_decomposition_and_implicit_rewards_by_hand():
    beta = 0.7
    policy_w, policy_l = torch.tensor([-3.0, -10.0]), torch.tensor([-4.0, -2.0])
    ref_w, ref_l = torch.tensor([-3.5, -20.0]), torch.tensor([-3.5, -2.5])
    # z = β[(log π_w − log π_l) + (log π_ref,l − log π_ref,w)] = 0.7·[1 + 0, −8 + 17.5] = [0.7, 6.65]
    z = obj.dpo_logit(policy_w, policy_l, ref_w, ref_l, beta)
    torch.testing.assert_close(z, torch.tensor([0.7, 6.65]))
    model_term, offset = obj.dpo_decomposition(policy_w, policy_l, ref_w, ref_l, beta)
    torch.testing.assert_close(model_term, torch.tensor([0.7, -5.6]))
    torch.testing.assert_close(offset, torch.tensor([0.0, 12.25]))
    torch.testing.assert_close(obj.dpo_loss(policy_w, policy_l, ref_w, ref_l, beta),
                               torch.tensor([math.log1p(math.exp(-0.7)), math.log1p(math.exp(-6.65))]))
    # TRL's rewards/chosen and rewards/rejected: β log π/π_ref; their difference is z
    chosen, rejected = obj.dpo_implicit_reward(policy_w, ref_w, beta), obj.dpo_implicit_reward(policy_l, ref_l, beta)
    torch.testing.assert_close(chosen, torch.tensor([0.35, 7.0]))
    torch.testing.assert_close(chosen - rejected, z)


@pytest.mark.parametrize("beta", [0.1, 0.7, 2.0])
def test_dpo_gradient_wrt_the_model_logratio_is_minus_beta_sigma_minus_z(beta):
    policy_w = torch.tensor([[-0.3, -2.0], [-5.0, -0.1]], requires_grad=True)  # any leading dims
    policy_l = torch.tensor([[-0.9, -0.4], [-1.0, -3.0]])
    ref_w = torch.log(torch.tensor([[1e-6, 0.05], [0.3, 0.6]]))
    ref_l = torch.log(torch.tensor([[0.3, 0.3], [0.3, 0.1]]))
    (autograd,) = torch.autograd.grad(obj.dpo_loss(policy_w, policy_l, ref_w, ref_l, beta).sum(), policy_w)
    z = obj.dpo_logit(policy_w, policy_l, ref_w, ref_l, beta)
    torch.testing.assert_close(autograd, obj.dpo_gradient_wrt_model_logratio(z, beta))
    # by hand for the first pair: z = β[(−0.3 + 0.9) + log(0.3/1e-6)], gradient −β/(1 + e^z)
    z00 = beta * (0.6 + math.log(0.3 / 1e-6))
    assert float(autograd[0, 0]) == pytest.approx(-beta / (1 + math.exp(z00)), rel=1e-10)


# --- shaped reward and KL estimators ----------------------------------------------------------------

def test_shaped_reward_by_hand_and_its_policy_gradient_is_that_of_the_reverse_kl_objective():
    assert float(obj.shaped_reward(torch.tensor(5.0), torch.tensor(-1.0), torch.tensor(-4.0), 0.5)) == 3.5
    logits = torch.tensor([0.2, -1.0, 0.5], requires_grad=True)
    reference, reward, beta = torch.tensor([0.7, 0.29, 0.01]), torch.tensor([0.0, 1.0, 5.0]), 0.7
    policy = torch.softmax(logits, -1)
    objective = (policy * reward).sum() - beta * (policy * (policy.log() - reference.log())).sum()  # eq. 1
    (autograd,) = torch.autograd.grad(objective, logits)
    with torch.no_grad():  # Σ π (r' − E_π r') ∇log π is exact for a softmax policy
        shaped = obj.shaped_reward(reward, policy.log(), reference.log(), beta)
        torch.testing.assert_close(autograd, policy * (shaped - (policy * shaped).sum()))


def test_kl_estimators_k1_k2_k3():
    pi, ref = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.2, 0.6])
    kl = float((pi * (pi / ref).log()).sum())  # KL(π ‖ π_ref) = 0.2332...
    assert float((pi * obj.k1(pi.log(), ref.log())).sum()) == pytest.approx(kl, rel=1e-12)  # unbiased
    assert float((pi * obj.k3(pi.log(), ref.log())).sum()) == pytest.approx(kl, rel=1e-12)  # unbiased
    # by hand at one sample: log π − log π_ref = log 2.5
    r = math.log(2.5)
    assert float(obj.k1(pi.log(), ref.log())[0]) == pytest.approx(r)
    assert float(obj.k2(pi.log(), ref.log())[0]) == pytest.approx(0.5 * r * r)
    assert float(obj.k3(pi.log(), ref.log())[0]) == pytest.approx(0.4 + r - 1)  # π_ref/π − log(π_ref/π) − 1
    assert float(obj.k3(torch.tensor(-1.0), torch.tensor(-1.0))) == 0.0
    assert torch.all(obj.k3(torch.randn(100), torch.randn(100)) >= 0)


# --- advantages and whitening -----------------------------------------------------------------------

def test_group_advantages_batch_mean_groups_and_std_scaling():
    rewards = torch.tensor([[1.0, 2.0, 6.0, 3.0], [0.0, 0.0, 4.0, 4.0]])
    # one group per row: the batch-mean baseline of App. A.2
    torch.testing.assert_close(obj.group_advantages(rewards), torch.tensor([[-2.0, -1.0, 3.0, 0.0],
                                                                           [-2.0, -2.0, 2.0, 2.0]]))
    # groups of two: [1, 2] [6, 3] / [0, 0] [4, 4]
    torch.testing.assert_close(obj.group_advantages(rewards, group_size=2),
                               torch.tensor([[-0.5, 0.5, 1.5, -1.5], [0.0, 0.0, 0.0, 0.0]]))
    # scaled: divided by the unbiased group std + 1e-4 (TRL); std of [1, 2] is √½
    scaled = obj.group_advantages(rewards, group_size=2, scale=True)
    assert float(scaled[0, 0]) == pytest.approx(-0.5 / (math.sqrt(0.5) + 1e-4))
    assert float(scaled[1, 0]) == 0.0


def test_masked_mean_and_whiten():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert float(obj.masked_mean(values, mask)) == 2.0
    # mean 2 and unbiased variance 1 over the three kept entries; the padded one is zeroed
    torch.testing.assert_close(obj.whiten(values, mask), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-7, rtol=0)
    # per row along a dim, and without the mean shift: x / sqrt(var + eps)
    rows = torch.tensor([[1.0, 3.0], [10.0, 14.0]])  # variances 2 and 8
    torch.testing.assert_close(obj.whiten(rows, dim=-1, shift_mean=False, eps=0.0),
                               torch.tensor([[1.0, 3.0], [10.0, 14.0]]) / torch.tensor([[2.0], [8.0]]).sqrt())
    torch.testing.assert_close(obj.masked_mean(rows, dim=-1), torch.tensor([2.0, 12.0]))


# --- policy and value losses ------------------------------------------------------------------------

def test_clipped_policy_loss_by_hand_and_its_gradient():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]])).requires_grad_()  # ratios 1.5, 0.5, 1.1 (π_old = 1)
    logp_old = torch.zeros(1, 3)
    adv = torch.tensor([[2.0, 1.0, -1.0]])
    # max(−ρA, −clip(ρ)A): 1.5·2 → clipped 1.2·2 → −2.4; 0.5·1 → max(−0.5, −0.8) = −0.5; 1.1·(−1) → 1.1
    loss = obj.policy_loss(logp, logp_old, adv, 0.2)
    torch.testing.assert_close(loss, torch.tensor([[-2.4, -0.5, 1.1]]))
    loss.sum().backward()
    # the clipped entry has no gradient; the others −A·ρ (∂ρ/∂log π = ρ)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.5, 1.1]]))
    # without ε: −ρA, the plain policy gradient at ρ = 1
    torch.testing.assert_close(obj.policy_loss(logp_old, logp_old, adv), -adv)


def test_value_loss_by_hand_plain_and_clipped():
    values, old_values = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])
    returns = torch.tensor([2.0, 1.0])
    torch.testing.assert_close(obj.value_loss(values, returns), torch.tensor([0.5, 0.5]))
    # clipped values 0.7, 0.3: max((1−2)², (0.7−2)²) = 1.69; max((0−1)², (0.3−1)²) = 1
    torch.testing.assert_close(obj.value_loss(values, returns, old_values, 0.2), torch.tensor([0.5 * 1.69, 0.5]))
