"""Group relative policy optimisation (GRPO): learn from graded samples of the model itself.

For each prompt of a micro-batch the policy samples a group of G completions (batched, with the
KV cache, seeded per micro-batch: `models/sampling.py`); the task's grader (`task.metric`,
`evaluate/graders.py`) scores each in [0, 1]; each completion's advantage is its reward against
its own group's (`group_advantages`); and the clipped policy-gradient loss with a KL penalty to
the reference (`grpo_token_losses`) is taken over the completion tokens only. The reference is
the model with its adapter switched off (no second copy of the weights), or a frozen copy for
`method: full`.

In the shared loop this is one more objective with one extra stage: `GrpoLoss.rollout` turns a
micro-batch of prompts into prompt+completion rows (the loop calls it for every micro-batch of
a step before the first backward pass, so the step's token count is known), and `GrpoLoss`
itself is the loss of those rows. A batch of P prompts holds P * G rows, prompt by prompt:

    row  p * G + g   prompt p's tokens, then its g-th completion (labels on the completion)

Each step samples from the weights as they are, so the probability ratio of the clipped loss is
1 in value (one policy update per generation, TRL's default `num_iterations=1`); the pure
`grpo_token_losses` takes the old log-probabilities as an argument and clips when they differ.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch

from tuneloop.config import GrpoConfig, Recipe
from tuneloop.data.templates import IGNORE_INDEX, TokenizedExample, render_prompt
from tuneloop.errors import UserError
from tuneloop.models.precision import autocast
from tuneloop.models.sampling import sample
from tuneloop.train.batching import collate
from tuneloop.train.dpo import disable_dropout
from tuneloop.train.forward import supervised_logprobs
from tuneloop.train.objective import ObjectiveData

# Added to the std before dividing, as TRL does: a group whose rewards are all equal has
# advantages 0 (nothing to learn from it), not 0/0.
STD_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """Each reward against its group's, (P * G,) -> (P * G,), groups of G consecutive rows.

        A_i = (r_i - mean(r of i's group)) / (std + 1e-4)

    with std the group's (`group`, as in DeepSeekMath's GRPO, Shao et al. 2024,
    arXiv:2402.03300), the whole batch's (`batch`), or 1 (`none`, Dr. GRPO, Liu et al. 2025,
    arXiv:2503.20783, which finds that dividing by the group's std favours too easy and too hard
    prompts). Standard deviations are unbiased (n - 1), as TRL's.

        >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0]), 3).round(decimals=3)
        tensor([ 1.1550, -0.5770, -0.5770,  0.0000,  0.0000,  0.0000])
    """
    grouped = rewards.view(-1, group_size)  # (P, G)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    if scale == "none":
        return centred
    if scale == "group":
        std = grouped.std(dim=1).repeat_interleave(group_size)
    else:
        std = rewards.std().expand_as(rewards)
    return centred / (std + STD_EPS)


@dataclass
class TokenLosses:
    losses: torch.Tensor  # (N,) per completion token
    kl: torch.Tensor  # (N,) the k3 estimate of KL(policy || reference) per token, detached
    clipped: torch.Tensor  # (N,) 1.0 where the clipped branch was taken, detached


def grpo_token_losses(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    beta: float = 0.04,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
) -> TokenLosses:
    """The clipped surrogate with a KL penalty, per completion token; all (N,), where
    `advantages` holds each token's completion's advantage.

    With the probability ratio rho_t = pi(y_t | ...) / pi_old(y_t | ...) (PPO, Schulman et al.
    2017, arXiv:1707.06347; GRPO, Shao et al. 2024, arXiv:2402.03300):

        loss_t = -min(rho_t A, clip(rho_t, 1 - eps_low, 1 + eps_high) A) + beta KL_t
        KL_t   = exp(r_t - l_t) - (r_t - l_t) - 1        (Schulman's k3 estimator, >= 0)

    where l_t and r_t are the policy's and the reference's log-probabilities of the token. The
    old log-probabilities are those the completions were sampled with (equal to the policy's
    when each generation is used for one update: then rho = 1 and the gradient is -A grad l_t).

        >>> out = grpo_token_losses(torch.tensor([-1.0]), torch.tensor([-1.0]),
        ...                         torch.tensor([-1.5]), torch.tensor([2.0]), beta=0.1)
        >>> round(out.losses.item(), 4)   # -2 + 0.1 * (e^-0.5 + 0.5 - 1) = -2 + 0.1 * 0.1065
        -1.9893
    """
    ratio = torch.exp(logps - old_logps)
    clipped_ratio = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    losses = -torch.min(ratio * advantages, clipped_ratio * advantages)
    clipped = ((ratio < 1 - epsilon_low) & (advantages < 0)) | (
        (ratio > 1 + epsilon_high) & (advantages > 0)
    )
    kl = torch.zeros_like(logps)
    if ref_logps is not None and beta != 0.0:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        losses = losses + beta * kl
    return TokenLosses(losses, kl.detach(), clipped.float())


def sequence_means(values: torch.Tensor, seq: torch.Tensor, n_seqs: int) -> torch.Tensor:
    """Mean over each sequence's tokens: values (N,), seq (N,) -> (n_seqs,)."""
    sums = torch.zeros(n_seqs, dtype=values.dtype, device=values.device).index_add(0, seq, values)
    counts = torch.zeros(n_seqs, dtype=values.dtype, device=values.device).index_add(
        0, seq, torch.ones_like(values)
    )
    return sums / counts.clamp(min=1)


@dataclass
class Prompt:
    """A training prompt: its tokens (the chat template's generation prompt included), the
    reference answer the grader compares with, and the question as text (for a judge)."""

    ids: list[int]
    reference: str
    question: str
    source: str = ""


class GrpoLoss:
    """The objective: `rollout` samples and grades a micro-batch; calling it gives the loss."""

    def __init__(self, cfg: GrpoConfig, grader, tokenizer, seed: int, precision: str,
                 reference: torch.nn.Module | None = None):  # fmt: skip
        self.cfg, self.grader, self.tokenizer = cfg, grader, tokenizer
        self.seed, self.precision = seed, precision
        self.reference = reference  # None: the policy with its adapter disabled
        self.frozen_models = [reference] if reference is not None else []
        from tuneloop.models.generate import stop_token_ids

        self.stop_ids = stop_token_ids(tokenizer)
        self.model: torch.nn.Module | None = None  # set by make_loss: the policy to sample from

    def generator(self, index: int, device: torch.device) -> torch.Generator:
        """The sampling seed of micro-batch `index`: a function of (train.seed, index) only, so a
        resumed run samples what the uninterrupted one sampled."""
        seed = random.Random(f"grpo:{self.seed}:{index}").getrandbits(63)
        return torch.Generator(device=device).manual_seed(seed)

    def rollout(self, batch: dict, index: int) -> dict:
        """Prompts -> G graded completions each -> the rows the loss trains on."""
        model, cfg, group = self.model, self.cfg, self.cfg.group_size
        prompts: list[Prompt] = batch["prompts"]
        rows = [p.ids for p in prompts for _ in range(group)]
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()  # sample without dropout
        with autocast(self.precision, device):
            completions = sample(model, [p.ids for p in prompts], cfg.max_completion_tokens,
                                 cfg.temperature, self.stop_ids, self.generator(index, device),
                                 repeats=group)  # fmt: skip
        model.train(was_training)
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        expand = [p for p in prompts for _ in range(group)]
        rewards = self.grader([t.strip() for t in texts], [p.reference for p in expand],
                              [p.question for p in expand])  # fmt: skip
        out = self.graded_rows(rows, completions, rewards, bool(batch.get("shared_prefix")))
        if "weight" in batch:
            out["weight"] = batch["weight"]
        return out

    def graded_rows(self, rows: list[list[int]], completions: list[list[int]],
                    rewards: list[float], share_prefix: bool = False) -> dict:  # fmt: skip
        """The batch the loss reads: each prompt's tokens and its completion (labels on the
        completion only), every completion's group-normalised advantage, and what to log."""
        cfg, group = self.cfg, self.cfg.group_size
        reward = torch.tensor(rewards, dtype=torch.float32)  # (P * G,)
        seqs = [
            TokenizedExample(ids + c, [IGNORE_INDEX] * len(ids) + c)
            for ids, c in zip(rows, completions, strict=True)
        ]
        # A group's rows share their whole prompt: run it once (`train.share_prefix`).
        out = collate(seqs, self.tokenizer.pad_token_id, share_prefix=share_prefix)
        tokens = out["n"]
        # The loop divides the step's summed loss by the sum of `n` (`loss` in GrpoConfig).
        out["n"] = {"dapo": tokens, "grpo": len(seqs),
                    "dr_grpo": len(seqs) * cfg.max_completion_tokens}[cfg.loss]  # fmt: skip
        out["advantages"] = group_advantages(reward, group, cfg.scale_rewards)
        cut = sum(1 for c in completions if not c or c[-1] not in self.stop_ids)
        out["stats"] = {
            "reward": reward.mean().item(),
            "reward_std": reward.view(-1, group).std(dim=1).mean().item(),  # within groups
            "completion_length": sum(map(len, completions)) / len(completions),
            "completions_cut": cut / len(completions),  # reached max_completion_tokens
        }
        return out

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logps, seq = supervised_logprobs(model, batch)  # (N,), (N,)
        ref_logps = None
        if self.cfg.beta != 0.0:
            with torch.no_grad():
                ref_logps = self.reference_logps(model, batch)
        eps_high = self.cfg.epsilon_high if self.cfg.epsilon_high is not None else self.cfg.epsilon
        advantages = batch["advantages"].to(logps.device)[seq]  # each token its completion's
        out = grpo_token_losses(logps, logps.detach(), ref_logps, advantages, self.cfg.beta,
                                self.cfg.epsilon, eps_high)  # fmt: skip
        if self.cfg.loss == "grpo":  # each completion's mean, summed over completions
            loss = sequence_means(out.losses, seq, batch["n_seqs"]).sum()
        else:
            loss = out.losses.sum()
        extras = {
            **batch.get("stats", {}),
            "kl": out.kl.mean().item(),
            "clip_fraction": out.clipped.mean().item(),
        }
        return loss, extras

    def reference_logps(self, model, batch: dict) -> torch.Tensor:
        if self.reference is not None:
            return supervised_logprobs(self.reference, batch)[0]
        with model.disable_adapter():  # PEFT: the base model, for this forward only
            return supervised_logprobs(model, batch)[0]


def make_loss(recipe: Recipe, model, source, device) -> GrpoLoss:
    """Dropout off (the KL compares policy and reference on the same tokens); the grader of
    `task.metric`; for full fine-tuning with a KL penalty, a frozen copy as the reference."""
    # The reward must be the very function evaluation gates on (task.metric), and graders live
    # layer-exception: beside the metrics they wrap, in evaluate/
    from tuneloop.evaluate.graders import build_grader
    from tuneloop.models.load import load_tokenizer
    from tuneloop.models.precision import resolve_precision

    disable_dropout(model)
    cfg = recipe.train
    tokenizer = load_tokenizer(source, recipe.model.trust_remote_code, recipe.model.chat_template)
    grader = build_grader(reward_spec(recipe), recipe.task.json_schema, recipe.eval.judge, device)
    reference = None
    if cfg.method == "full" and cfg.grpo.beta != 0.0:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    loss = GrpoLoss(cfg.grpo, grader, tokenizer, cfg.seed,
                    resolve_precision(cfg.precision, device), reference)  # fmt: skip
    loss.model = model
    return loss


DEFAULT_REWARD = {"label": "exact_match", "json": "json_exact"}


def reward_spec(recipe: Recipe):
    """`task.metric` (a metric's name or a grader); with none, the task kind's default metric,
    which GRPO needs a known kind for (text's default, ROUGE-L, is a poor reward: say so)."""
    if recipe.task.metric is not None:
        return recipe.task.metric
    if recipe.task.kind in DEFAULT_REWARD:
        return DEFAULT_REWARD[recipe.task.kind]
    raise UserError(
        "objective `grpo` rewards completions with the task's grader, and the recipe names none"
        + (" (task.kind is auto)" if recipe.task.kind == "auto" else ""),
        "task.metric",
        "set `task.metric` to the grader to train on and gate on, e.g. `json_exact`, "
        "`{regex: '-?\\d+', compare: reference}` or `{python: package.module:function}`",
    )


def prepare(recipe: Recipe, tokenizer) -> ObjectiveData:
    """Chat examples -> prompts (everything before the final assistant turn, with the task
    instruction) and references (that turn). A prompt longer than train.max_length minus
    max_completion_tokens is dropped.

        {"messages": [{"role": "user", "content": "What is 17 + 25?"},
                      {"role": "assistant", "content": "42"}]}
        -> Prompt(ids=<'<|im_start|>user\\nWhat is 17 + 25?<|im_end|>\\n<|im_start|>assistant\\n'>,
                  reference="42", question="What is 17 + 25?")
    """
    from tuneloop.data.prepare import load_datasets
    from tuneloop.data.split import write_split

    cfg = recipe.train
    reward_spec(recipe)  # no grader is a mistake to hear about before any weights load
    data = load_datasets(recipe)
    room = cfg.max_length - cfg.grpo.max_completion_tokens
    if room < 1:
        raise UserError(
            f"train.max_length ({cfg.max_length}) leaves no room for a prompt beside "
            f"train.grpo.max_completion_tokens ({cfg.grpo.max_completion_tokens})",
            "train.max_length",
            "raise train.max_length above train.grpo.max_completion_tokens",
        )
    prompts, dropped = [], []
    for ex in data.train:
        text = render_prompt(tokenizer, ex.prompt_messages, ex.tools)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > room:
            dropped.append(ex.source)
            continue
        prompts.append(Prompt(ids, ex.reference, ex.prompt_messages[-1]["content"], ex.source))
    if not prompts:
        raise UserError(
            f"every prompt is longer than {room} tokens (train.max_length minus "
            "train.grpo.max_completion_tokens)",
            "train.max_length",
            "raise train.max_length",
        )

    def save_split(folder) -> None:
        write_split(folder, data.train, data.heldout, seed=recipe.data.split.seed,
                    heldout_fraction=recipe.data.split.heldout_fraction,
                    sources=[str(recipe.data.train)])  # fmt: skip

    group, new = cfg.grpo.group_size, cfg.grpo.max_completion_tokens
    return ObjectiveData(
        train=prompts,
        heldout=[],  # no held-out loss: the held-out grader score is `tuneloop eval`'s
        # `rollout` makes the rows; `shared_prefix` here only says whether they may share one
        # (the session drops the key for a model that cannot)
        collate=lambda items: {"prompts": items, "shared_prefix": cfg.share_prefix},
        info={**data.info, "kind": "prompts"},
        truncation={
            "policy": "drop",
            "max_length": cfg.max_length,
            "total": len(data.train),
            "kept": len(prompts),
            "dropped": len(dropped),
            "dropped_sources": dropped,
        },  # fmt: skip
        write_split=save_split if data.split_made else None,
        lengths=[(group * (len(p.ids) + new), group * new) for p in prompts],
        sequences_per_item=group,
    )
