"""The run-batched Llama (`alignkd.lm.batched`) equals the same runs made one at a time with transformers.

Each test builds R = 3 tiny Llamas of one shape from different seeds and compares, run by run, the batched
computation with the per-model one: logits, response log-probs, sampled tokens (same seeds) and a DPO update
with Adam. Tolerances are float32 rounding: the batched matmuls are other kernels than transformers', so the
logits agree to ~1e-6, not bitwise.
"""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from alignkd import objectives
from alignkd.lm import training
from alignkd.lm.batched import BatchedLlama, KVCache, RunAdam, optimizer_step, stack_samples
from alignkd.lm.dpo import response_logprobs
from alignkd.lm.generation import sample
from alignkd.lm.models import suppress_tokens
from alignkd.lm.students import make_student, tiny_llama

FLOAT32 = dict(rtol=1e-5, atol=1e-5)
BOS, EOS, PAD = 0, 1, 2


def gqa_untied(seed: int) -> LlamaForCausalLM:
    """A student shape the CPU sizes do not cover: grouped-query attention (4 heads, 2 kv heads), untied head."""
    config = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    with torch.random.fork_rng(devices=[]):  # as students.make_student: leave the global generator alone
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def padded_batch(runs: int, n: int, width: int, vocab: int, seed: int):
    """Right-padded `prompt + response` rows of different lengths, per run: tokens, mask, response mask [R, n, ·]."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, vocab, (runs, n, width), generator=g)
    tokens[..., 0] = BOS
    lengths = torch.randint(2, width + 1, (runs, n), generator=g)
    mask = torch.arange(width) < lengths[..., None]
    tokens = torch.where(mask, tokens, PAD)
    response = (mask & (torch.arange(width) >= 1))[..., 1:].float()
    return tokens, mask, response


@pytest.mark.parametrize("build", [lambda s: make_student("tiny", 64, bos_id=BOS, eos_id=EOS, pad_id=PAD, seed=s),
                                   gqa_untied], ids=["tiny", "gqa-untied"])
def test_batched_logits_equal_each_models_logits(build):
    models = [build(seed) for seed in (0, 1, 2)]
    vocab = models[0].config.vocab_size
    tokens, mask, _ = padded_batch(3, 5, 9, vocab, seed=0)
    batch = BatchedLlama.from_models(models)
    with torch.no_grad():
        logits = batch.logits(tokens, mask)
        for run, model in enumerate(models):
            expected = model(input_ids=tokens[run], attention_mask=mask[run].long()).logits
            real = mask[run]  # padding positions' logits are whatever each implementation leaves there
            torch.testing.assert_close(logits[run][real], expected[real], **FLOAT32)


def test_batched_llama_refuses_models_of_different_shapes():
    with pytest.raises(ValueError, match="one shape"):
        BatchedLlama.from_models([tiny_llama(32), tiny_llama(40)])


def test_batched_cache_continues_the_forward():
    """Feeding a prefix, then one token at a time through the cache, gives the full forward's logits."""
    models = [tiny_llama(32, seed=seed) for seed in (0, 1, 2)]
    tokens, mask, _ = padded_batch(3, 4, 7, 32, seed=1)
    mask = torch.ones_like(mask)
    batch = BatchedLlama.from_models(models)
    with torch.no_grad():
        full = batch.logits(tokens, mask)
        cache = KVCache(layers=1, capacity=7)
        steps = [batch.logits(tokens[..., :3], mask[..., :3], cache)]
        for t in range(3, 7):
            steps.append(batch.logits(tokens[..., t:t + 1], mask[..., :t + 1], cache))
    torch.testing.assert_close(torch.cat(steps, 2), full, **FLOAT32)


def test_batched_response_logprobs_equal_per_model():
    models = [tiny_llama(64, seed=seed) for seed in (0, 1, 2)]
    tokens, mask, response = padded_batch(3, 6, 10, 64, seed=2)
    batch = BatchedLlama.from_models(models)
    with torch.no_grad():
        batched = batch.response_logprobs(tokens, mask, response)
        for run, model in enumerate(models):
            torch.testing.assert_close(batched[run], response_logprobs(model, tokens[run], mask[run], response[run]),
                                       **FLOAT32)


@pytest.mark.parametrize("vocab, temperature, max_new_tokens, sharpen", [(8, 1.0, 20, 1.0), (64, 0.7, 12, 20.0)])
def test_batched_sampling_equals_per_model_sample(vocab, temperature, max_new_tokens, sharpen):
    """Same seeds, same tokens. With 8 tokens (5 in the language) every response ends with EOS and the runs stop at
    different steps (their widths differ); with 64 tokens and sharpened logits (so the runs' distributions
    differ more than an untrained model's near-uniform ones) most responses reach the length cap."""
    suppressed = [BOS, PAD, 3]
    models = [tiny_llama(vocab, seed=seed) for seed in (0, 1, 2)]
    for model in models:
        with torch.no_grad():
            model.model.norm.weight.mul_(sharpen)
    seeds = [11, 12, 13]
    batch = BatchedLlama.from_models(models, suppress_ids=suppressed)
    batched = batch.sample([BOS], 16, max_new_tokens, temperature, eos_id=EOS, pad_id=PAD, seeds=seeds)
    widths = set()
    for run, model in enumerate(models):
        suppress_tokens(model, suppressed)
        alone = sample(model, [BOS], 16, max_new_tokens, temperature, eos_id=EOS, pad_id=PAD, batch_size=16,
                       seed=seeds[run])
        assert torch.equal(batched[run].tokens, alone.tokens)
        assert torch.equal(batched[run].mask, alone.mask)
        assert not torch.isin(alone.tokens[alone.response_mask], torch.tensor(suppressed)).any()
        widths.add(alone.tokens.shape[1])
    stacked = stack_samples(batched, PAD)
    assert stacked.tokens.shape == (3 * 16, max(widths))
    assert torch.equal(stacked.tokens.view(3, 16, -1)[1, :, :batched[1].tokens.shape[1]], batched[1].tokens)
    if vocab == 8:
        assert len(widths) > 1, "the runs should end at different steps"


@pytest.mark.parametrize("max_grad_norm, sits_out", [(0.0, False), (0.05, False), (0.0, True)])
def test_batched_dpo_steps_equal_each_model_with_its_own_adam(max_grad_norm, sits_out):
    """Three DPO steps on each run's fixed pairs: the batched Adam leaves every run's weights where the same steps
    leave each model alone with its own `torch.optim.Adam` (with and without per-run gradient clipping; and with run
    1 sitting the second step out, as a run with every pair tied does alone: no update, no step count)."""
    models = [tiny_llama(32, seed=seed) for seed in (0, 1, 2)]
    reference = tiny_llama(32, seed=9).requires_grad_(False)
    alone = [copy.deepcopy(m) for m in models]
    tokens, mask, response = padded_batch(3, 8, 9, 32, seed=3)
    g = torch.Generator().manual_seed(4)
    order = torch.stack([torch.randperm(8, generator=g) for _ in range(3)])
    chosen, rejected = order[:, :4], order[:, 4:]  # a different fixed pairing per run
    beta, lr = 0.5, 1e-2
    with torch.no_grad():
        ref_logprob = torch.stack([response_logprobs(reference, tokens[r], mask[r], response[r]) for r in range(3)])

    batch = BatchedLlama.from_models(models)
    optimizer = RunAdam(batch.parameters(), lr=lr)
    skipped = {(1, 1)} if sits_out else set()  # (run, step)
    for step in range(3):
        logprob = batch.response_logprobs(tokens, mask, response)
        loss = objectives.dpo_loss(logprob.gather(1, chosen), logprob.gather(1, rejected),
                                   ref_logprob.gather(1, chosen), ref_logprob.gather(1, rejected), beta)
        active = torch.tensor([(run, step) not in skipped for run in range(3)])
        optimizer_step(optimizer, loss, max_grad_norm, active=active)

    for run, model in enumerate(alone):
        adam = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
        w, l = chosen[run], rejected[run]
        for step in range(3):
            if (run, step) in skipped:
                continue
            logprob = response_logprobs(model, tokens[run], mask[run], response[run])
            loss = objectives.dpo_loss(logprob[w], logprob[l], ref_logprob[run, w], ref_logprob[run, l], beta)
            training.optimizer_step(model, adam, loss, max_grad_norm)
        trained, start = batch.state_dict(run), models[run].state_dict()
        for name, value in model.state_dict().items():
            if name.endswith("inv_freq"):
                continue
            assert not torch.equal(value, start[name]), f"{name} did not move: the test would prove nothing"
            torch.testing.assert_close(trained[name], value, **FLOAT32, msg=lambda m: f"run {run} {name}: {m}")

    batch.load_into(models)  # the trained runs go back into transformers models
    for model, model_alone in zip(models, alone):
        torch.testing.assert_close(model.state_dict(), model_alone.state_dict(), **FLOAT32)


def test_run_adamw_with_a_learning_rate_per_run_equals_torch_adamw_per_model():
    """KD's optimiser: AdamW (decoupled weight decay, β = (0.9, 0.95)) with each run's own learning rate, changed
    between steps as a per-run schedule changes it, and run 2 sitting the third step out (a KD run that has
    finished): each run's weights equal the same steps of `torch.optim.AdamW` on that model alone."""
    models = [tiny_llama(32, seed=seed) for seed in (0, 1, 2)]
    alone = [copy.deepcopy(m) for m in models]
    tokens, mask, response = padded_batch(3, 6, 9, 32, seed=5)
    lrs = torch.tensor([[1e-2, 5e-3, 2e-2], [8e-3, 5e-3, 1e-2], [4e-3, 2e-3, 5e-3]], dtype=torch.float64)  # [step, run]
    skipped = {(2, 2)}  # (run, step)
    betas, weight_decay = (0.9, 0.95), 0.1

    batch = BatchedLlama.from_models(models)
    optimizer = RunAdam(batch.parameters(), lr=0.0, betas=betas, weight_decay=weight_decay)
    for step in range(3):
        optimizer.lr = lrs[step]
        loss = -batch.response_logprobs(tokens, mask, response).mean(-1)
        optimizer_step(optimizer, loss, 0.0, active=torch.tensor([(run, step) not in skipped for run in range(3)]))

    for run, model in enumerate(alone):
        adamw = torch.optim.AdamW(model.parameters(), lr=float(lrs[0, run]), betas=betas, weight_decay=weight_decay,
                                  foreach=True)
        for step in range(3):
            if (run, step) in skipped:
                continue
            adamw.param_groups[0]["lr"] = float(lrs[step, run])
            loss = -response_logprobs(model, tokens[run], mask[run], response[run]).mean()
            training.optimizer_step(model, adamw, loss, 0.0)
        trained = batch.state_dict(run)
        for name, value in model.state_dict().items():
            if not name.endswith("inv_freq"):
                torch.testing.assert_close(trained[name], value, **FLOAT32, msg=lambda m: f"run {run} {name}: {m}")


def test_load_state_dict_sets_one_run_and_leaves_the_others():
    models = [tiny_llama(32, seed=seed) for seed in (0, 1, 2)]
    batch = BatchedLlama.from_models(models)
    others = [batch.state_dict(run) for run in (0, 2)]
    others = [{name: tensor.clone() for name, tensor in state.items()} for state in others]
    batch.load_state_dict(1, tiny_llama(32, seed=7).state_dict())
    for name, value in tiny_llama(32, seed=7).state_dict().items():
        if not name.endswith("inv_freq"):
            assert torch.equal(batch.state_dict(1)[name], value)
            assert torch.equal(batch.state_dict(0)[name], others[0][name])
            assert torch.equal(batch.state_dict(2)[name], others[1][name])
