"""MCQ-calibrated teacher rewards for language models (PAD §4.2).

A language model's average log-likelihood over-rewards frequent phrasing. PAD calibrates it with the
teacher's *selection probability*: the n responses to a prompt are shown to the teacher as a multiple-
choice question with options "A", "B", ..., and p_sel(y) is the probability the teacher puts on y's letter
as the next token after "Answer:". The calibrated reward is

    r̂(y) = (1 − α) r(y) + α log p_sel(y)           (PAD eq. 9; α = 0.8 worked best there)

Position bias. Small models prefer some letters whatever the options say (SmolLM2-135M-Instruct puts
~0.85 on "A" for two options in either order). If the letter logits are content terms plus a bias b_j per
position j, then averaging the log-probabilities over a set of orders in which every response appears in
every position equally often (the n cyclic shifts; for n = 2, both orders) adds the same Σ_j b_j / n to
every response, and the renormalised average cancels the bias exactly. `order="random"` draws one
random order per group instead (unbiased on average, n times cheaper); `"fixed"` keeps the bias.

The prompt-building and the language model are separate from the aggregation: `aggregate_orders` works on
any `[groups, orders, n]` table of letter log-probabilities, `letter_log_probs` gets that table from a
causal LM and its tokenizer (objects, never a hub name).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

ORDERS = ("cyclic", "random", "fixed")
LETTERS = "ABCDEFGH"
TEMPLATE = "{question}\n\nWhich response is best?\n{options}\nAnswer:"
"""The MCQ prompt; `{options}` becomes one line "A. <response>" per option."""


def calibrate(rewards: torch.Tensor, log_p_sel: torch.Tensor, alpha: float) -> torch.Tensor:
    """r̂ = (1 − α) r + α log p_sel, elementwise; α in [0, 1] (α = 0: the rewards unchanged)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha = {alpha!r}: must be in [0, 1] (0 = no calibration, PAD's best: 0.8)")
    if alpha == 0.0:
        return rewards
    return (1.0 - alpha) * rewards + alpha * log_p_sel


def option_orders(n: int, order: str, n_groups: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """`[n_groups, n_orders, n]`: entry j of an order is the response shown at position j (letter j).

    cyclic: the n shifts (n = 2: both orders); random: one uniformly random order per group; fixed: identity.
    """
    if order not in ORDERS:
        raise ValueError(f"order = {order!r}: must be one of {', '.join(ORDERS)}")
    if not 1 <= n <= len(LETTERS):
        raise ValueError(f"n = {n}: MCQ calibration supports 1..{len(LETTERS)} options ({LETTERS})")
    base = torch.arange(n)
    if order == "cyclic":
        orders = torch.stack([base.roll(-shift) for shift in range(n)])
    elif order == "fixed":
        orders = base[None]
    else:
        return torch.stack([torch.randperm(n, generator=generator) for _ in range(n_groups)])[:, None]
    return orders.expand(n_groups, -1, -1)


def aggregate_orders(position_log_probs: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Per-response log p_sel `[groups, n]` from letter log-probabilities `[groups, orders, n]`.

    `position_log_probs[g, o, j]` is log P(letter j) when order `orders[g, o]` was shown. Each response's
    log-probability is averaged over the orders (in log space, so an additive position bias cancels when
    every response visits every position equally often), then renormalised over the n responses.
    """
    positions = torch.argsort(orders, -1)  # positions[g, o, i] = where response i was shown
    per_response = torch.gather(position_log_probs, -1, positions)
    return torch.log_softmax(per_response.mean(-2), -1)


def mcq_prompt(question: str, responses: Sequence[str], template: str = TEMPLATE) -> str:
    """The MCQ prompt with options "A. ..." in the given order."""
    if len(responses) > len(LETTERS):
        raise ValueError(f"{len(responses)} responses: MCQ calibration supports at most {len(LETTERS)}")
    options = "\n".join(f"{LETTERS[j]}. {text.strip()}" for j, text in enumerate(responses))
    return template.format(question=question, options=options)


def letter_token_ids(tokenizer, n: int) -> list[int]:
    """The token id of each letter as it follows "Answer:" (" A" if that is one token, else "A")."""
    ids = []
    for letter in LETTERS[:n]:
        for spelling in (" " + letter, letter):
            encoded = tokenizer(spelling, add_special_tokens=False).input_ids
            if len(encoded) == 1 and encoded[0] != tokenizer.unk_token_id:
                ids.append(encoded[0])
                break
        else:
            raise ValueError(f"the teacher's tokenizer has no single token for the option letter {letter!r}: MCQ "
                             f"calibration needs a natural-language teacher (use alpha = 0 otherwise)")
    if len(set(ids)) != n:
        raise ValueError(f"option letters {LETTERS[:n]} do not map to distinct tokens: {ids}")
    return ids


@torch.no_grad()
def letter_log_probs(model, tokenizer, prompts: Sequence[str], n: int, batch_size: int = 16) -> torch.Tensor:
    """`[len(prompts), n]`: log-softmax over the n option letters of the next-token logits after each prompt.

    Prompts are left-padded so that the last position is the answer position in every row.
    """
    letters = torch.tensor(letter_token_ids(tokenizer, n))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(prompts), batch_size):
        encoded = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts[start:start + batch_size]]
        width = max(len(e) for e in encoded)
        tokens = torch.tensor([[pad_id] * (width - len(e)) + e for e in encoded], device=device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the real positions
        logits = model(input_ids=tokens, attention_mask=mask, position_ids=positions).logits[:, -1].float()
        out.append(torch.log_softmax(logits[:, letters.to(device)], -1).cpu())
    model.train(was_training)
    return torch.cat(out)


def selection_log_probs(model, tokenizer, question: str, groups: Sequence[Sequence[str]], order: str = "cyclic",
                        generator: torch.Generator | None = None, template: str = TEMPLATE,
                        batch_size: int = 16) -> torch.Tensor:
    """log p_sel `[len(groups), n]` of every response of every group of n, position bias cancelled by `order`."""
    if not groups:
        raise ValueError("groups is empty")
    n = len(groups[0])
    if any(len(g) != n for g in groups):
        raise ValueError("every group must have the same number of responses")
    orders = option_orders(n, order, len(groups), generator)  # [G, O, n]
    prompts = [mcq_prompt(question, [group[i] for i in o.tolist()], template)
               for group, group_orders in zip(groups, orders) for o in group_orders]
    table = letter_log_probs(model, tokenizer, prompts, n, batch_size).reshape(len(groups), orders.shape[1], n)
    return aggregate_orders(table, orders)


__all__ = ["ORDERS", "LETTERS", "TEMPLATE", "calibrate", "option_orders", "aggregate_orders", "mcq_prompt",
           "letter_token_ids", "letter_log_probs", "selection_log_probs"]
