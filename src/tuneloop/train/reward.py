"""Reward models: a scalar score head on the base model, learned from preference pairs.

The model is the base with a sequence-classification head (`AutoModelForSequenceClassification`,
one label: a linear `score` layer reading the hidden state of the last token); an adapter method
trains its adapter and the head (PEFT's `SEQ_CLS` task saves the head with the adapter), `full`
trains everything. The loss (`bradley_terry_loss`) is a pure function of the two scores of each
pair. Data, batches and the held-out split are DPO's (`train/dpo.py`): a batch of P pairs holds
2P sequences, chosen_0, rejected_0, chosen_1, ...

A trained reward model is a grader (`reward_model_scorer`, `{reward_model: <run>}` in
`task.metric`): sigmoid(score) of the prompt and answer, in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from tuneloop.config import Recipe
from tuneloop.data.templates import render_chat
from tuneloop.errors import UserError
from tuneloop.train import dpo
from tuneloop.train.objective import ObjectiveData


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Per-pair loss from the scores of the chosen and the rejected answer, (P,), (P,) -> (P,).

    The Bradley-Terry model (Bradley and Terry 1952) says the chosen answer wins with
    probability sigmoid(r_chosen - r_rejected); the loss is its negative log-likelihood, as in
    InstructGPT's reward model (Ouyang et al. 2022, arXiv:2203.02155):

        loss = -log sigmoid(r_chosen - r_rejected)

        >>> round(bradley_terry_loss(torch.tensor([1.0]), torch.tensor([-1.0])).item(), 4)
        0.1269
        >>> round(bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0])).item(), 4)  # ln 2
        0.6931
    """
    return -F.logsigmoid(chosen - rejected)


def score_parts(model):
    """(the transformer body, the score head) of a (possibly PEFT-wrapped) reward model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix), base.score


def sequence_scores(model, batch: dict) -> torch.Tensor:
    """The score head at each row's last real token (right padding): (B,)."""
    body, head = score_parts(model)
    mask = batch["attention_mask"]
    hidden = body(
        input_ids=batch["input_ids"], attention_mask=mask, use_cache=False
    ).last_hidden_state  # fmt: skip  (B, T, H)
    last = mask.sum(dim=1) - 1  # (B,)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return head(hidden[rows, last]).squeeze(-1).float()  # (B,)


def reward_loss(model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Summed Bradley-Terry loss over the batch's pairs, with accuracy and margin to log."""
    scores = sequence_scores(model, batch)  # (2P,) chosen_0, rejected_0, ...
    chosen, rejected = scores[0::2], scores[1::2]
    margins = (chosen - rejected).detach()
    extras = {
        "accuracy": (margins > 0).float().mean().item(),
        "margin": margins.mean().item(),
        "score_chosen": chosen.detach().mean().item(),
        "score_rejected": rejected.detach().mean().item(),
    }
    return bradley_terry_loss(chosen, rejected).sum(), extras


def prepare(recipe: Recipe, tokenizer) -> ObjectiveData:
    """Preference pairs read, split, linted and tokenized as for DPO; packing and a shared
    prefix do not apply (each row's score is read at its own last token)."""
    data = dpo.prepare(recipe, tokenizer)
    pad = tokenizer.pad_token_id
    data.collate = lambda items: dpo.collate_pairs(items, pad)
    data.shared_prefix = 0
    return data


def make_loss(recipe: Recipe, model, source, device):
    return reward_loss


def load_reward_base(source, trust_remote_code: bool, pad_token_id: int | None,
                     fresh_head: bool = True):  # fmt: skip
    """The base model with a one-label score head, in float32. A fresh head starts at zero:
    every answer scores 0, the first loss is ln 2 (no preference yet), and the head's gradient
    is what moves first."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the head is missing from the checkpoint: that is the point
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source.path, num_labels=1, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    finally:
        logging.set_verbosity(verbosity)
    model.config.pad_token_id = pad_token_id
    if fresh_head:
        with torch.no_grad():
            model.score.weight.zero_()
    return model


# ------------------------------------------------------------------------------------------
# A trained reward model as a grader, and its held-out ranking


def load_reward_run(run_path: Path, device=None):
    """(model, tokenizer) of a finished run of objective `reward`, in eval mode."""
    import json

    from peft import PeftModel

    from tuneloop.models.load import resolve

    run_path = Path(run_path)
    recipe_file = run_path / "recipe.yaml"
    folder = next((run_path / n for n in ("adapter", "model") if (run_path / n).is_dir()), None)
    info = json.loads((folder / "tuneloop.json").read_text()) if folder else {}
    if folder is None or info.get("objective") != "reward":
        raise UserError(
            f"{run_path} is not a finished run of objective `reward`"
            + (f" (its objective is `{info['objective']}`)" if info.get("objective") else ""),
            "task.metric.reward_model",
            "train a reward model (`train.objective: reward` on preference pairs) and name its "
            "run folder, .tuneloop/runs/<id>",
        )
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)  # saved with the run, chat template too
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if (folder / "adapter_config.json").is_file():
        from tuneloop.config import load_recipe

        recipe = load_recipe(recipe_file)
        source = resolve(recipe.model.name, recipe.model.trust_remote_code)
        base = load_reward_base(source, recipe.model.trust_remote_code, tokenizer.pad_token_id,
                                fresh_head=False)  # fmt: skip
        model = PeftModel.from_pretrained(base, folder)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
    return model.to(device or "cpu").eval(), tokenizer


@torch.no_grad()
def score_chats(model, tokenizer, chats: list[list[dict]], batch_size: int = 16) -> list[float]:
    """The reward model's score of each whole chat (prompt and final answer)."""
    from tuneloop.data.templates import TokenizedExample
    from tuneloop.train.batching import pad

    device = next(model.parameters()).device
    out: list[float] = []
    for i in range(0, len(chats), batch_size):
        ids = [tokenizer(render_chat(tokenizer, c), add_special_tokens=False)["input_ids"]
               for c in chats[i : i + batch_size]]  # fmt: skip
        batch = pad([TokenizedExample(x, x) for x in ids], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        out += sequence_scores(model, batch).tolist()
    return out


def reward_model_scorer(run_path: Path, device=None):
    """A grader's score function: sigmoid of the reward model's score of prompt + answer."""
    model, tokenizer = load_reward_run(run_path, device)

    def score(preds, refs, prompts) -> list[float]:
        chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": p}]
                 for p, q in zip(preds, prompts, strict=True)]  # fmt: skip
        return [float(torch.sigmoid(torch.tensor(s))) for s in score_chats(model, tokenizer, chats)]

    return score
