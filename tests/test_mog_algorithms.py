"""Alignment losses against hand computations, short runs, determinism and batched == lone."""

import math

import pytest
import torch

from alignkd.mog import dpo_offline, dpo_online, grpo, ppo
from alignkd.mog.alignment import AlignConfig, check_algorithm
from alignkd.mog.groundtruth import MODE_CENTERS
from alignkd.mog.metrics import evaluate
from alignkd.mog.mixture import Mixture
from alignkd.mog.pipelines import Setup, Sweep
from alignkd.mog.sft import SFTConfig, fit_p_star

MODULES = {"ppo": (ppo, ppo.PPOConfig), "grpo": (grpo, grpo.GRPOConfig),
           "dpo_online": (dpo_online, dpo_online.DPOOnlineConfig),
           "dpo_offline": (dpo_offline, dpo_offline.DPOOfflineConfig)}


def test_dpo_pairs_are_labelled_by_the_oracle_reward():
    near, far = MODE_CENTERS[7], MODE_CENTERS[0]
    x = torch.stack([near, far, far, near])[None]  # pairs (near, far) and (far, near)
    winners, losers = dpo_online.label_pairs(x, (7,))
    assert torch.equal(winners[0], torch.stack([near, near]))
    assert torch.equal(losers[0], torch.stack([far, far]))


def test_grpo_loss_by_hand():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    logp_ref = torch.tensor([[-1.5, -1.0]])
    adv = torch.tensor([[1.0, -1.0]])
    k3 = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]
    loss = grpo.grpo_loss(logp, logp.detach(), logp_ref, adv, 0.1)
    assert loss.item() == pytest.approx((-1.0 + 1.0 + 0.1 * sum(k3)) / 2, abs=1e-6)
    loss.sum().backward()
    # d/dlogπ of [−A ρ + β k3]/2 = [−A + β(1 − π_ref/π)]/2
    assert logp.grad[0].tolist() == pytest.approx(
        [(-1 + 0.1 * (1 - math.exp(-0.5))) / 2, (1 + 0.1 * (1 - math.exp(1.0))) / 2], abs=1e-6)


@pytest.fixture(scope="module")
def start():
    """A quickly fitted broad model (2 trials), the alignment starting point of the short runs."""
    return fit_p_star(SFTConfig(n_components=4, n_iterations=150), seed=5, trials=[0, 1])


@pytest.mark.parametrize("name", list(MODULES))
def test_short_alignment_raises_reward(name, start):
    module, config_cls = MODULES[name]
    extra = {"n_pairs": 2560} if name == "dpo_offline" else {}
    snaps = module.train(start, start, config_cls(beta=0.5, n_iterations=40, **extra), seed=1, trials=[0, 1],
                         checkpoints=[0])
    before = evaluate(snaps[0], (7,), 0, [0, 1], 4000)
    after = evaluate(snaps[40], (7,), 0, [0, 1], 4000)
    assert (after.reward > before.reward + 0.3).all(), (before.reward.tolist(), after.reward.tolist())
    assert (after.target_precision > before.target_precision).all()


@pytest.mark.parametrize("name", list(MODULES))
def test_batched_rows_equal_a_lone_trial_and_runs_repeat_exactly(name, start):
    module, config_cls = MODULES[name]
    extra = {"n_pairs": 512} if name == "dpo_offline" else {}
    config = config_cls(n_iterations=15, **extra)
    # 2 β settings × 2 trials in one batch ...
    rows = start.repeat(2)
    batched = module.train(rows, rows, config, seed=3, trials=[0, 1], betas=[0.3, 0.3, 2.0, 2.0])[15]
    again = module.train(rows, rows, config, seed=3, trials=[0, 1], betas=[0.3, 0.3, 2.0, 2.0])[15]
    # ... against trial 1 at β = 2 run alone with the same stream
    lone = module.train(start.rows([1]), start.rows([1]), config, seed=3, trials=[1], betas=[2.0])[15]
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
    with pytest.raises(ValueError, match="unknown.*allowed: ppo, grpo, dpo_online, dpo_offline"):
        check_algorithm("sac")
    with pytest.raises(ValueError, match="unknown"):
        Sweep(algorithm="sac")
    with pytest.raises(ValueError, match="unknown target mode 9"):
        Sweep(targets=(7, 9))
    with pytest.raises(ValueError, match="n_high_recall = 10: must be <= 8"):
        Setup(n_high_recall=10)
    with pytest.raises(ValueError, match="n_low_recall = 7"):
        Setup(n_low_recall=7)
    with pytest.raises(ValueError, match="clip"):
        ppo.PPOConfig(clip=1.5)
    with pytest.raises(TypeError):
        Sweep(config={"not_a_field": 1})
