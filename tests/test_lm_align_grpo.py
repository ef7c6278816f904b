"""GRPO (App. A, B.1): advantages and loss by hand, both KL forms, and trl.GRPOTrainer with β > 0,
whose own loss on a fixed batch takes exactly our loop's update."""

import tempfile

import pytest
import torch

from alignkd.lm.generation import token_logprobs
from alignkd.lm.groundtruth import markov_tokenizer
from alignkd.lm.grpo import (GRPOConfig, batch_loss, completion_samples, grpo_loss, optimizer_for, policy_logprobs,
                             score_batch, train_grpo, trl_reward, trl_trainer, unsuppress_head)
from alignkd.objectives import k3
from alignkd.lm.models import HFLanguageModel
from alignkd.lm.reward import RewardOracle
from alignkd.lm.students import tiny_llama

V = 16


def fives_logprob(tokens, mask):
    return (torch.where(tokens == 5, -0.1, -3.0) * mask).sum(1) / mask.sum(1)


def test_loss_and_its_gradient_by_hand():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    logprob = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -9.0, -9.0]], requires_grad=True)
    ref_logprob = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, 0.0, 0.0]])
    advantages = torch.tensor([2.0, -1.0])
    beta, length = 0.3, 4
    loss = grpo_loss(logprob, logprob.detach(), ref_logprob, advantages, mask, beta, "reward", 0.2, length)
    # ratio 1: loss = −Σ_i A_i·(number of tokens of i) / (B·L); its gradient is REINFORCE's −A_i/(B·L) per token
    assert float(loss) == pytest.approx(-(2.0 * 2 - 1.0 * 1) / (2 * length))
    loss.backward()
    torch.testing.assert_close(logprob.grad, -advantages[:, None] * mask / (2 * length))
    logprob.grad = None
    loss = grpo_loss(logprob, logprob.detach(), ref_logprob, advantages, mask, beta, "k3", 0.2, length)
    penalty = beta * (k3(logprob.detach(), ref_logprob) * mask).sum() / (2 * length)
    assert float(loss) == pytest.approx(-(2.0 * 2 - 1.0 * 1) / (2 * length) + float(penalty))
    loss.backward()  # ∂k3/∂θ = 1 − e^{ref−θ}
    expected = (-advantages[:, None] + beta * (1 - torch.exp(ref_logprob - logprob.detach()))) * mask / (2 * length)
    torch.testing.assert_close(logprob.grad, expected)


def test_clipping_stops_the_gradient_of_a_moved_ratio():
    mask = torch.ones(1, 1)
    logprob = torch.tensor([[0.5]], requires_grad=True)  # ρ = e^0.5 > 1.2 with A > 0: clipped, no gradient
    grpo_loss(logprob, torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([1.0]), mask, 0.1, "reward", 0.2, 1).backward()
    assert float(logprob.grad) == 0.0


def toy_run(seed=0, tokenizer=None, **overrides):
    settings = dict(n_iterations=12, batch_size=32, learning_rate=1e-2, beta=0.05, max_new_tokens=12,
                    eval_every=4, device="cpu")
    policy, reference = (HFLanguageModel(tiny_llama(V, seed=1), tokenizer, [0], eos_id=1, pad_id=2) for _ in range(2))
    return train_grpo(policy, reference, RewardOracle(fives_logprob), GRPOConfig(**{**settings, **overrides}),
                      seed=seed, progress=False)


@pytest.mark.parametrize("kl_form", ["k3", "reward"])
def test_short_run_raises_reward_and_is_reproducible(kl_form):
    run = toy_run(kl_form=kl_form)
    trajectory = run.trajectory
    assert list(trajectory.iteration) == [0, 4, 8, 12]
    assert trajectory.reward_mean.iloc[-1] > trajectory.reward_mean.iloc[0] + 1.0
    assert toy_run(kl_form=kl_form, n_iterations=4).trajectory.equals(trajectory.iloc[:2])


def test_trl_grpo_trainer_with_beta_raises_reward():
    tokenizer = markov_tokenizer(V)  # <bos>=0 <eos>=1 <pad>=2, as tiny_llama's ids
    run = toy_run(backend="trl", tokenizer=tokenizer, n_iterations=8)
    trajectory = run.trajectory
    assert list(trajectory.iteration) == [0, 4, 8]
    assert trajectory.reward_mean.iloc[-1] > trajectory.reward_mean.iloc[0] + 1.0
    assert trajectory.kl.iloc[-1] > 0
    assert toy_run(backend="trl", tokenizer=tokenizer, n_iterations=8).trajectory.equals(trajectory)  # same seed


# A fixed batch from the prompt <bos>: EOS-ended and truncated completions, none of the suppressed tokens.
LENGTH = 6
COMPLETIONS = [[5, 6, 1], [7, 1], [4] * LENGTH, [9, 10, 11, 1], [5] * 5 + [1], [12, 5, 1], [13, 14, 15, 4, 1],
               [5, 8, 5, 8, 5, 8]]
SUPPRESSED = [0, 2, 3]  # <bos> <pad> <unk>, as in the chapter's language


def on_a_fixed_batch(num_ppo_epochs=1):
    """Our loop's first batch and TRL's GRPOTrainer (as backend "trl" builds it) on the same fixed
    completions, both policies equal, π_ref another random model. TRL's sampler is the one seam replaced."""
    tokenizer = markov_tokenizer(V)
    ours, theirs, reference = (HFLanguageModel(tiny_llama(V, seed=seed), tokenizer, [0], eos_id=1, pad_id=2,
                                               suppress_ids=SUPPRESSED) for seed in (1, 1, 2))
    reference.model.eval().requires_grad_(False)
    oracle = RewardOracle(fives_logprob)
    config = GRPOConfig(batch_size=len(COMPLETIONS), max_new_tokens=LENGTH, beta=0.3, learning_rate=3e-2,
                        epsilon=0.1, num_ppo_epochs=num_ppo_epochs, device="cpu")
    samples = completion_samples([0], COMPLETIONS, pad_id=2)
    batch, logprob = score_batch(ours.model, reference.model, samples, oracle.reward(samples), config)
    with tempfile.TemporaryDirectory() as folder:
        trainer = trl_trainer(theirs, reference, trl_reward(oracle, [0], 2), config, seed=0, folder=folder)
    trainer._generate_single_turn = lambda *args, **kwargs: ([list(c) for c in COMPLETIONS], None)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # Trainer.train sets it
    inputs = trainer._generate_and_score_completions([{"prompt": "<bos>"}] * len(COMPLETIONS))
    return config, ours.model, batch, logprob, trainer, inputs


def assert_same_gradients(ours, theirs):
    for (name, mine), other in zip(ours.named_parameters(), theirs.parameters()):
        scale = float(mine.grad.abs().max())
        assert scale > 0, name
        torch.testing.assert_close(other.grad, mine.grad, rtol=1e-5, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("num_ppo_epochs", [1, 2])
def test_trl_grpo_trainer_takes_our_update_on_a_fixed_batch(num_ppo_epochs):
    config, ours, batch, logprob, trainer, inputs = on_a_fixed_batch(num_ppo_epochs)
    # TRL's own advantages (scale_rewards="none": R − mean R), reference log-probs and completion mask
    torch.testing.assert_close(inputs["advantages"], batch.advantages, rtol=0, atol=1e-6)
    assert inputs["advantages"].abs().min() > 0.05
    response = batch.mask.bool()
    torch.testing.assert_close(inputs["completion_mask"].bool(), response[:, :LENGTH])
    torch.testing.assert_close(inputs["ref_per_token_logps"], batch.ref_logprob[:, :LENGTH] * response[:, :LENGTH],
                               rtol=0, atol=1e-5)
    optimizer, theirs = optimizer_for(ours, config), trainer.model
    trainer.create_optimizer()  # TRL's AdamW, weight_decay 0
    before = [p.detach().clone() for p in ours.parameters()]
    for update in range(num_ppo_epochs):  # μ = 2: the second update has ρ ≠ 1 and clips
        if update > 0:
            logprob = policy_logprobs(ours, batch.samples, config)
        loss = batch_loss(logprob, batch, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.zero_grad(set_to_none=True)
        trl_loss = trainer.compute_loss(theirs, inputs)
        trl_loss.backward()
        torch.testing.assert_close(trl_loss.detach(), loss.detach(), rtol=1e-6, atol=1e-7)
        assert_same_gradients(ours, theirs)
        optimizer.step()
        trainer.optimizer.step()
        for start, mine, other in zip(before, ours.parameters(), theirs.parameters()):
            step = (mine - start).abs().max()
            assert step > 0.5 * config.learning_rate  # Adam's first steps are ≈ lr per coordinate
            torch.testing.assert_close(other - start, mine - start, rtol=0, atol=1e-3 * config.learning_rate)
    if num_ppo_epochs == 2:
        assert trainer._metrics["train"]["clip_ratio/region_mean"][-1] > 0  # the clip did bind


def test_trl_default_kl_is_ratio_weighted_and_its_loss_ignores_the_suppression_hook():
    config, ours, batch, logprob, trainer, inputs = on_a_fixed_batch()
    theirs = trainer.model
    # TRL's default use_bias_correction_kl multiplies k3 by ρ: its gradient gains β·k3·∇log π (reverse KL)
    trainer.args.use_bias_correction_kl = True
    trainer.compute_loss(theirs, inputs).backward()
    weighted = batch.mask * k3(logprob.detach(), batch.ref_logprob) * (logprob - logprob.detach())
    (batch_loss(logprob, batch, config) + config.beta * weighted.sum() / (len(COMPLETIONS) * LENGTH)).backward()
    assert_same_gradients(ours, theirs)
    # TRL's fused head bypasses the forward hook of suppress_tokens: only the output-layer bias reaches it
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        suppressed = trainer._get_per_token_logps_and_entropies(theirs, ids, attention, LENGTH)[0]
        unsuppress_head(theirs)
        hook_only = trainer._get_per_token_logps_and_entropies(theirs, ids, attention, LENGTH)[0]
        hooked = token_logprobs(theirs, ids, attention.bool())[:, -LENGTH:]
    mask = inputs["completion_mask"].bool()
    torch.testing.assert_close(suppressed[mask], hooked[mask], rtol=0, atol=1e-5)
    assert (hook_only[mask] - hooked[mask]).max() < -0.05  # mass on <bos> <pad> <unk> renormalised in
    assert all(torch.isfinite(torch.tensor(trainer._metrics["train"]["entropy"])))


def test_trl_backend_inputs_fail_before_work():
    with pytest.raises(ValueError, match="kl_form"):
        GRPOConfig(backend="trl", kl_form="reward")
    with pytest.raises(ValueError, match="tokenizer"):
        toy_run(backend="trl", tokenizer=None)


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 1, "batch_size"),
    ("beta", 0.0, "beta"),
    ("scale_rewards", "batch", "scale_rewards"),
    ("backend", "vllm", "backend"),
])
def test_bad_config_fails_on_construction_naming_the_field(field, value, message):
    if torch.cuda.is_available() and field == "bf16":
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match=message):
        GRPOConfig(**{field: value})
