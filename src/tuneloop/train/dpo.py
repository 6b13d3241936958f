"""Direct preference optimisation: learn from pairs of a better and a worse answer.

The loss (`dpo_loss`) is a pure function of four sequence log-probabilities per pair; the rest
of this file turns pairs into tokens and batches, and computes those log-probabilities with the
policy (the model being trained) and the reference (what it started from). For adapter methods
the reference is the same model with its adapters switched off, so no second copy sits in
memory; for full fine-tuning it is a frozen copy taken before training.

A batch of P pairs holds 2P sequences in the order chosen_0, rejected_0, chosen_1, ...; only
each sequence's final assistant answer is scored (the prompt is shared and cancels out).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tuneloop.config import DpoConfig, Recipe
from tuneloop.data.preference import PreferencePair
from tuneloop.data.templates import (
    IGNORE_INDEX,
    TokenizedExample,
    apply_truncation,
    assistant_spans,
)
from tuneloop.errors import Problem, UserError
from tuneloop.train.batching import collate, shared_prefix_length
from tuneloop.train.forward import sequence_sums, supervised_logprobs
from tuneloop.train.objective import ObjectiveData


@dataclass
class DpoOutput:
    losses: torch.Tensor  # (P,) one loss per pair
    chosen_rewards: torch.Tensor  # (P,) beta * (log pi(chosen) - log ref(chosen)), detached
    rejected_rewards: torch.Tensor  # (P,)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> DpoOutput:
    """Per-pair preference losses from summed log-probabilities of the answers, all (P,).

    With the implicit rewards r_w = log pi(y_w|x) - log ref(y_w|x) for the chosen answer and
    r_l likewise for the rejected one, and h = r_w - r_l:

        sigmoid  (DPO, Rafailov et al. 2023, arXiv:2305.18290)
                 loss = -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h)
                 where e = label_smoothing is the assumed share of flipped labels
                 (conservative DPO, Mitchell 2023); e = 0 is plain DPO.
        robust   (rDPO, Chowdhury et al. 2024, arXiv:2403.00409), unbiased under label noise e:
                 loss = (-(1 - e) log sigmoid(beta h) + e log sigmoid(-beta h)) / (1 - 2e)
        ipo      (IPO, Azar et al. 2023, arXiv:2310.12036), a squared loss that does not
                 push h to infinity: loss = (h' - 1 / (2 beta))^2, where h' uses per-token
                 averages r / length (so beta means the same for short and long answers;
                 the form TRL uses, confirmed by the IPO authors).

    Rewards reported (and logged as margins and accuracy) are beta * r, detached.

        >>> out = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]),
        ...                torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
        >>> round(out.losses.item(), 4)   # h = 2, -log sigmoid(1) = 0.3133
        0.3133
    """
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    e = label_smoothing
    if loss_type == "sigmoid":
        losses = -(1 - e) * F.logsigmoid(beta * h) - e * F.logsigmoid(-beta * h)
    elif loss_type == "robust":
        losses = (-(1 - e) * F.logsigmoid(beta * h) + e * F.logsigmoid(-beta * h)) / (1 - 2 * e)
    elif loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("the ipo loss needs chosen_lengths and rejected_lengths")
        h = chosen_ratio / chosen_lengths.clamp(min=1) - rejected_ratio / rejected_lengths.clamp(
            min=1
        )
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss type {loss_type!r}: sigmoid, robust or ipo")
    return DpoOutput(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def sequence_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability, number of scored tokens) of each sequence: (S,), (S,)."""
    logps, seq = supervised_logprobs(model, batch)  # (N,)
    n = batch["n_seqs"]
    return sequence_sums(logps, seq, n), sequence_sums(torch.ones_like(logps), seq, n)


class DpoLoss:
    """The objective's loss: policy and reference log-probabilities, then `dpo_loss`."""

    def __init__(self, cfg: DpoConfig, reference: torch.nn.Module | None = None):
        self.cfg = cfg
        self.reference = reference  # None: the policy with its adapters disabled
        self.frozen_models = [reference] if reference is not None else []

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logps, lengths = sequence_logps(model, batch)
        with torch.no_grad():
            ref_logps, _ = self.reference_logps(model, batch)
        out = dpo_loss(
            logps[0::2], logps[1::2], ref_logps[0::2], ref_logps[1::2],
            beta=self.cfg.beta, loss_type=self.cfg.loss, label_smoothing=self.cfg.label_smoothing,
            chosen_lengths=lengths[0::2], rejected_lengths=lengths[1::2],
        )  # fmt: skip
        margins = out.chosen_rewards - out.rejected_rewards
        extras = {
            "reward_chosen": out.chosen_rewards.mean().item(),
            "reward_rejected": out.rejected_rewards.mean().item(),
            "reward_margin": margins.mean().item(),
            "reward_accuracy": (margins > 0).float().mean().item(),
        }
        return out.losses.sum(), extras

    def reference_logps(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reference is not None:
            return sequence_logps(self.reference, batch)
        with model.disable_adapter():  # PEFT: the base model, for this forward only
            return sequence_logps(model, batch)


def make_loss(recipe: Recipe, model, source, device) -> DpoLoss:
    """Dropout off (`train.dpo.dropout_off`); for full fine-tuning, freeze a copy of the model
    as it is now as the reference."""
    if recipe.train.dpo.dropout_off:
        disable_dropout(model)
    reference = None
    if recipe.train.method == "full":
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    return DpoLoss(recipe.train.dpo, reference)


def disable_dropout(model: torch.nn.Module) -> None:
    """Every dropout of `model` to 0, kept so by `model.train()`: the `nn.Dropout` layers
    (LoRA's among them) and the attention dropout a layer applies only in training.

    The loss is a difference of the policy's and the reference's log-probabilities of the same
    answers. With dropout each forward drops different units (the reference of an adapter
    method is the training model itself, adapters off, in train mode), so every implicit reward
    carries noise that has nothing to do with the preference, and the loss of a batch changes
    from one forward to the next. TRL turns dropout off in DPO for the same reason
    (`disable_dropout_in_model`).
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


# ------------------------------------------------------------------------------------------
# Data: pairs -> token sequences -> batches


@dataclass
class TokenizedPair:
    chosen: TokenizedExample
    rejected: TokenizedExample
    source: str = ""


def tokenize_answer(
    tokenizer, messages: list[dict[str, str]], source: str = ""
) -> TokenizedExample:
    """Token ids of a chat whose labels cover only its final assistant answer (and its
    end-of-turn token); earlier assistant turns belong to the shared prompt."""
    text, spans = assistant_spans(tokenizer, messages)
    start, end = spans[-1]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = [
        tok if s < end and e > start else IGNORE_INDEX
        for tok, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
    ]
    return TokenizedExample(list(enc["input_ids"]), labels, source)


def tokenize_pairs(
    tokenizer, pairs: list[PreferencePair], max_length: int, policy: str
) -> tuple[list[TokenizedPair], dict]:
    """Both sides of every pair; a pair either side of which the policy drops is dropped."""
    out: list[TokenizedPair] = []
    summary = {"policy": policy, "max_length": max_length, "total": len(pairs), "kept": 0,
               "dropped": 0, "truncated": 0, "lost_target": 0, "dropped_sources": []}  # fmt: skip
    for p in pairs:
        sides = [
            tokenize_answer(tokenizer, p.chosen_messages, p.source),
            tokenize_answer(tokenizer, p.rejected_messages, p.source),
        ]
        kept, report = apply_truncation(sides, max_length, policy)
        summary["truncated"] += report.truncated
        summary["lost_target"] += report.lost_target
        if len(kept) == 2:
            out.append(TokenizedPair(kept[0], kept[1], p.source))
        else:
            summary["dropped"] += 1
            summary["dropped_sources"].append(p.source)
    summary["kept"] = len(out)
    return out, summary


def collate_pairs(
    pairs: list[TokenizedPair],
    pad_id: int,
    packing: bool = False,
    capacity: int = 0,
    share_prefix: bool = False,
) -> dict:
    """2P sequences (chosen_0, rejected_0, ...) in one batch; its loss terms are the P pairs.
    With `share_prefix`, the prompt a whole batch starts with runs once (for one pair, all of
    its prompt: chosen and rejected answer the same one)."""
    seqs = [s for p in pairs for s in (p.chosen, p.rejected)]
    batch = collate(seqs, pad_id, packing, capacity, share_prefix)
    batch["n"] = len(pairs)
    return batch


def prepare(recipe: Recipe, tokenizer) -> ObjectiveData:
    """Read preference pairs, split off held-out pairs if needed, lint, tokenize."""
    from tuneloop.data.preference import (
        lint_pairs,
        pair_with_instruction,
        read_preferences,
        write_preferences,
    )
    from tuneloop.data.prepare import data_info, read_or_split

    cfg = recipe.train
    train, heldout, split_made = read_or_split(recipe.data, read_preferences, split_pairs)
    _refuse_leaks(train, heldout)
    errors = [f for f in lint_pairs(train) + lint_pairs(heldout) if f.severity == "error"]
    if errors:
        raise UserError.many(
            [Problem(f.message, f.where, "fix or drop this pair") for f in errors],
            title=f"{len(errors)} preference pair(s) cannot be trained on",
        )
    instruction = recipe.task.instruction
    train = [pair_with_instruction(p, instruction) for p in train]
    heldout = [pair_with_instruction(p, instruction) for p in heldout]
    tok_train, truncation = tokenize_pairs(tokenizer, train, cfg.max_length, cfg.truncation)
    tok_heldout, _ = tokenize_pairs(tokenizer, heldout, cfg.max_length, cfg.truncation)
    if not tok_train:
        raise UserError(
            f"no preference pair is left after truncation ({truncation['dropped']} dropped)",
            "train.max_length",
            "raise train.max_length, or use train.truncation: truncate_left",
        )

    def save_split(folder) -> None:
        write_preferences(folder / "train.jsonl", train)
        write_preferences(folder / "heldout.jsonl", heldout)

    pad = tokenizer.pad_token_id
    return ObjectiveData(
        train=tok_train,
        heldout=tok_heldout,
        collate=lambda items: collate_pairs(
            items, pad, cfg.packing, cfg.max_length, cfg.share_prefix
        ),
        info={
            **data_info(recipe.data, len(train), len(heldout), split_made),
            "kind": "preference",
        },
        truncation=truncation,
        write_split=save_split if split_made else None,
        lengths=[
            (
                len(p.chosen.input_ids) + len(p.rejected.input_ids),
                p.chosen.n_supervised + p.rejected.n_supervised,
            )
            for p in tok_train
        ],  # fmt: skip
        sequences_per_item=2,
        shared_prefix=(
            shared_prefix_length([s for p in tok_train for s in (p.chosen, p.rejected)])
            if cfg.share_prefix
            else 0
        ),
    )


def split_pairs(
    pairs: list[PreferencePair], heldout_fraction: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Seeded split; pairs sharing a prompt stay on one side (the data layer's splitter)."""
    from tuneloop.data.split import split_examples

    examples = [p.as_example() for p in pairs]
    by_id = {id(ex): p for ex, p in zip(examples, pairs, strict=True)}
    train, heldout = split_examples(examples, heldout_fraction, seed, stratify=None)
    return [by_id[id(ex)] for ex in train], [by_id[id(ex)] for ex in heldout]


def _refuse_leaks(train: list[PreferencePair], heldout: list[PreferencePair]) -> None:
    from tuneloop.data.split import check_no_leakage

    check_no_leakage([p.as_example() for p in train], [p.as_example() for p in heldout])


@torch.no_grad()
def answer_logps(model, tokenizer, pairs: list[PreferencePair], batch_size: int = 8,
                 precision: str = "fp32") -> torch.Tensor:  # fmt: skip
    """Summed log-probabilities of each pair's answers under `model`, (P, 2): column 0 the
    chosen answer, column 1 the rejected one. Every pair is scored whole (no truncation)."""
    from tuneloop.models.precision import autocast

    device = next(model.parameters()).device
    tokenized, _ = tokenize_pairs(tokenizer, pairs, 10**9, "drop")
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(tokenized), batch_size):
        batch = collate_pairs(tokenized[i : i + batch_size], tokenizer.pad_token_id)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with autocast(precision, device):
            logps, _ = sequence_logps(model, batch)  # (2B,) chosen_0, rejected_0, ...
        out.append(logps.float().view(-1, 2).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 2)


def preference_margins(model, tokenizer, pairs: list[PreferencePair], batch_size: int = 8,
                       precision: str = "fp32") -> list[float]:  # fmt: skip
    """log p(chosen) - log p(rejected) of each pair under `model`: positive when the model
    prefers the chosen answer. Compare before and after training on held-out pairs."""
    logps = answer_logps(model, tokenizer, pairs, batch_size, precision)
    return (logps[:, 0] - logps[:, 1]).tolist()
