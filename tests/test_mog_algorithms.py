"""Alignment losses against hand computations, short runs, determinism and batched == lone."""

import math

import pytest
import torch

from alignkd.mog import dpo_online, grpo, ppo
from alignkd.mog.algorithms import ALGORITHMS, find_algorithm
from alignkd.mog.alignment import AlignConfig
from alignkd.mog.groundtruth import MODE_CENTERS
from alignkd.mog.metrics import evaluate
from alignkd.mog.mixture import Mixture
from alignkd.mog.pipelines import Setup, Sweep
from alignkd.mog.sft import SFTConfig, fit_p_star



def test_dpo_pairs_are_labelled_by_the_oracle_reward():
    near, far = MODE_CENTERS[7], MODE_CENTERS[0]
    x = torch.stack([near, far, far, near])[None]  # pairs (near, far) and (far, near)
    winners, losers = dpo_online.label_pairs(x, (7,))
    assert torch.equal(winners[0], torch.stack([near, near]))
    assert torch.equal(losers[0], torch.stack([far, far]))


@pytest.mark.parametrize("kl_form", ["k3", "reward"])
def test_grpo_kl_forms_have_the_gradients_of_their_closed_forms(kl_form):
    """The GRPO loss, on a batch that holds each outcome in exact proportion to π (so batch means are
    expectations), has the gradient of −(E_π[R] − β KL): the reverse KL(π ‖ π_ref) when the KL is folded
    into the reward, the forward KL(π_ref ‖ π) when k3 is in the loss (SPEC §3)."""
    probs = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    reference = torch.tensor([0.4, 0.4, 0.19, 0.01], dtype=torch.float64)
    reward = torch.tensor([0.0, 1.0, 3.0, 10.0], dtype=torch.float64)
    beta = 0.7
    x = torch.tensor([0, 0, 0, 0, 1, 1, 2, 3])  # 8 samples, π = (4, 2, 1, 1)/8
    logits = probs.log().requires_grad_()
    logp = torch.log_softmax(logits, -1)[x][None]
    loss = grpo.grpo_loss(logp, logp.detach(), reference.log()[x][None], reward[x][None], beta, kl_form)
    (gradient,) = torch.autograd.grad(loss.sum(), logits)
    pi = torch.softmax(logits, -1)
    if kl_form == "reward":
        kl = (pi * (pi.log() - reference.log())).sum()
    else:
        kl = (reference * (reference.log() - pi.log())).sum()
    (expected,) = torch.autograd.grad(-((pi * reward).sum() - beta * kl), logits)
    torch.testing.assert_close(gradient, expected)
    # and the loss value by hand for the k3 form: −mean(A) = 0 plus β E_π[k3] = β KL(π ‖ π_ref)
    if kl_form == "k3":
        assert float(loss.detach()) == pytest.approx(beta * float((pi * (pi / reference).log()).sum().detach()), rel=1e-10)


def test_ppo_value_baseline_enters_the_advantage():
    returns = torch.tensor([[1.0, 3.0, 5.0], [1.0, 3.0, 5.0]])  # r' per row; batch std 2
    value = torch.tensor([[3.0], [0.0]])  # a learned V = E[r'] and no critic
    advantage = ppo.advantages(returns, value, whiten=True)
    torch.testing.assert_close(advantage, torch.tensor([[-1.0, 0.0, 1.0], [0.5, 1.5, 2.5]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ppo.advantages(returns, value, whiten=False), returns - value)
    # why no mean shift: batch whitening with one state makes every V give the same advantages
    from alignkd.objectives import whiten
    torch.testing.assert_close(whiten(returns - value, dim=-1)[0], whiten(returns - value, dim=-1)[1])


def test_ppo_critic_on_and_off_give_different_updates(start):
    """Same seed and samples: with the critic on, V has moved after the first update and the second
    update differs from the one without a critic (V stays 0). With the mean-shifted whitening this
    module used before, the two differed only by float rounding (5e-7 after five iterations)."""
    on = ppo.train(start, start, ppo.PPOConfig(n_iterations=2, beta=0.5), seed=1, trials=[0, 1],
                  checkpoints=[1])
    off = ppo.train(start, start, ppo.PPOConfig(n_iterations=2, beta=0.5, vf_coef=0.0), seed=1, trials=[0, 1],
                   checkpoints=[1])
    for a, b in zip(on[1].parameters(), off[1].parameters()):
        assert torch.equal(a, b)  # the first update: V = 0 in both
    assert (on[2].means - off[2].means).abs().max() > 1e-4


@pytest.fixture(scope="module")
def start():
    """A quickly fitted broad model (2 trials), the alignment starting point of the short runs."""
    return fit_p_star(SFTConfig(n_components=4, n_iterations=150), seed=5, trials=[0, 1])


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_short_alignment_raises_reward(name, start):
    entry = ALGORITHMS[name]
    extra = {"n_pairs": 2560} if name == "dpo_offline" else {}
    snaps = entry.train(start, start, entry.config(beta=0.5, n_iterations=40, **extra), seed=1, trials=[0, 1],
                        checkpoints=[0])
    before = evaluate(snaps[0], (7,), 0, [0, 1], 4000)
    after = evaluate(snaps[40], (7,), 0, [0, 1], 4000)
    assert (after.reward > before.reward + 0.3).all(), (before.reward.tolist(), after.reward.tolist())
    assert (after.target_precision > before.target_precision).all()


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_batched_rows_equal_a_lone_trial_and_runs_repeat_exactly(name, start):
    entry = ALGORITHMS[name]
    extra = {"n_pairs": 512} if name == "dpo_offline" else {}
    config = entry.config(n_iterations=15, **extra)
    # 2 β settings × 2 trials in one batch ...
    rows = start.repeat(2)
    batched = entry.train(rows, rows, config, seed=3, trials=[0, 1], betas=[0.3, 0.3, 2.0, 2.0])[15]
    again = entry.train(rows, rows, config, seed=3, trials=[0, 1], betas=[0.3, 0.3, 2.0, 2.0])[15]
    # ... against trial 1 at β = 2 run alone with the same stream
    lone = entry.train(start.rows([1]), start.rows([1]), config, seed=3, trials=[1], betas=[2.0])[15]
    for a, b in zip(batched.parameters(), again.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(batched.rows([3]).parameters(), lone.parameters()):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert not torch.allclose(batched.rows([1]).means, batched.rows([3]).means)  # β matters


def test_sft_batched_equals_lone_and_recovers_a_single_gaussian():
    config = SFTConfig(n_components=2, n_iterations=30)
    batched = fit_p_star(config, seed=9, trials=[0, 1, 2])
    lone = fit_p_star(config, seed=9, trials=[2])
    for a, b in zip(batched.rows([2]).parameters(), lone.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    # a fit to samples of one Gaussian recovers its mean and scale
    from alignkd.mog.sft import fit
    target = Mixture(torch.zeros(1, 1), torch.tensor([[[1.0, -0.5]]]), torch.log(torch.full((1, 1, 2), 0.3)))
    fitted = fit(lambda n, g: target.sample(n, g), SFTConfig(n_components=1, n_iterations=1000), 0, "g", [0])
    assert fitted.means[0, 0].tolist() == pytest.approx([1.0, -0.5], abs=0.03)
    assert fitted.log_scales[0, 0].exp().tolist() == pytest.approx([0.3, 0.3], abs=0.02)


def test_bad_alignment_parameters_fail_before_compute():
    with pytest.raises(ValueError, match=r"beta = 0.0: must be > 0"):
        AlignConfig(beta=0.0)
    with pytest.raises(ValueError, match=r"beta = -1.0"):
        Sweep(betas=(0.5, -1.0))
    with pytest.raises(ValueError, match="algorithm = 'sac': unknown.*allowed: ppo, grpo, grpo_reward, dpo_online, "
                                         "dpo_offline"):
        find_algorithm("sac")
    with pytest.raises(ValueError, match="unknown"):
        Sweep(algorithm="sac")
    with pytest.raises(ValueError, match="unknown target mode 9"):
        Sweep(targets=(7, 9))
    with pytest.raises(ValueError, match="n_high_recall = 10: must be <= 8"):
        Setup(n_high_recall=10)
    with pytest.raises(ValueError, match="n_low_recall = 7"):
        Setup(n_low_recall=7)
    with pytest.raises(ValueError, match=r"PPOConfig.epsilon = 1.5"):
        ppo.PPOConfig(epsilon=1.5)
    with pytest.raises(TypeError):
        Sweep(config={"not_a_field": 1})
    with pytest.raises(ValueError, match=r"GRPOConfig.kl_form = 'forward': must be one of k3, reward"):
        grpo.GRPOConfig(kl_form="forward")
    with pytest.raises(ValueError, match=r"GRPOConfig.kl_form = 'reward': algorithm 'grpo' fixes it to 'k3'"):
        Sweep(algorithm="grpo", config={"kl_form": "reward"})
    with pytest.raises(ValueError, match="needs 'reward'"):
        ALGORITHMS["grpo_reward"].check_config(grpo.GRPOConfig())
