"""Logit distillation: the student learns the teacher's whole next-token distribution, mixed with
the ordinary SFT loss on the reference answers.

Teacher and student must share a tokenizer: the KL divergence compares distributions over the
same vocabulary at the same positions. (A teacher with another tokenizer, or behind an
endpoint, can still teach through its text: `tuneloop distill generate` writes an SFT dataset.)
Both models score the same batch; only the supervised positions are compared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuneloop.config import DistillConfig, Recipe
from tuneloop.errors import UserError
from tuneloop.train import sft
from tuneloop.train.forward import supervised_logits
from tuneloop.train.objective import ObjectiveData


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, kl, ce), each summed over the N supervised positions; logits (N, V), targets (N,).

    With p = softmax(teacher / T) and q = softmax(student / T) at each position,

        loss = alpha * T^2 * KL(p || q) + (1 - alpha) * CE(student, target)

    KL(p || q) = sum_v p_v (log p_v - log q_v). The T^2 keeps the KL gradients on the scale of
    the CE's as T grows (Hinton, Vinyals and Dean 2015, arXiv:1503.02531).

        >>> s = torch.tensor([[2.0, 0.0]]); t = torch.tensor([[2.0, 0.0]])
        >>> loss, kl, ce = distill_loss(s, t, torch.tensor([0]), temperature=1.0, alpha=1.0)
        >>> float(kl), float(loss)   # identical distributions: nothing to learn
        (0.0, 0.0)
    """
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="sum")
    ce = F.cross_entropy(student_logits.float(), targets, reduction="sum")
    return alpha * temperature**2 * kl + (1 - alpha) * ce, kl.detach(), ce.detach()


class DistillLoss:
    def __init__(self, teacher: torch.nn.Module, cfg: DistillConfig):
        self.teacher, self.cfg = teacher, cfg
        self.frozen_models = [teacher]

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        student, targets, _ = supervised_logits(model, batch)
        with torch.no_grad():
            teacher, _, _ = supervised_logits(self.teacher, batch)
        loss, kl, ce = distill_loss(student, teacher, targets, self.cfg.temperature, self.cfg.alpha)
        n = max(int(targets.numel()), 1)
        return loss, {"kl": float(kl) / n, "ce": float(ce) / n}


def prepare(recipe: Recipe, tokenizer) -> ObjectiveData:
    """The SFT data, after checking that the teacher speaks the student's tokenizer."""
    check_teacher(recipe, tokenizer)
    return sft.prepare(recipe, tokenizer)


def check_teacher(recipe: Recipe, tokenizer) -> None:
    """Same vocabulary, same output size: checked on tokenizer and config, no weights read."""
    from transformers import AutoConfig

    from tuneloop.models.load import load_tokenizer, resolve

    name = recipe.train.distill.teacher
    source = resolve(name, recipe.model.trust_remote_code)
    theirs = load_tokenizer(source, recipe.model.trust_remote_code)
    if theirs.get_vocab() != tokenizer.get_vocab():
        raise UserError(
            f"the teacher `{name}` and the student `{recipe.model.name}` have different "
            "tokenizers, so their next-token distributions cannot be compared",
            "train.distill.teacher",
            "pick a teacher of the student's family (same tokenizer), or distill through text: "
            "`tuneloop distill generate --teacher MODEL`, then train with objective `sft`",
        )
    ours = resolve(recipe.model.name, recipe.model.trust_remote_code)
    sizes = [
        AutoConfig.from_pretrained(s.path, trust_remote_code=recipe.model.trust_remote_code)
        .get_text_config()
        .vocab_size
        for s in (source, ours)
    ]
    if sizes[0] != sizes[1]:
        raise UserError(
            f"the teacher's output layer has {sizes[0]} entries, the student's {sizes[1]}",
            "train.distill.teacher",
            "pick a teacher with the student's vocabulary size",
        )
    adapter = recipe.train.distill.teacher_adapter
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise UserError(
            f"{adapter} holds no adapter_config.json",
            "train.distill.teacher_adapter",
            "point it at the `adapter` folder of a finished run",
        )


def make_loss(recipe: Recipe, model, source, device) -> DistillLoss:
    """Load the teacher (with its adapter, if any), frozen, on the student's device."""
    from tuneloop.models.adapters import load_adapter
    from tuneloop.models.load import load_model, resolve

    cfg = recipe.train.distill
    teacher = load_model(resolve(cfg.teacher, recipe.model.trust_remote_code),
                         recipe.model.trust_remote_code)  # fmt: skip
    if cfg.teacher_adapter is not None:
        teacher = load_adapter(teacher, cfg.teacher_adapter)
    teacher = teacher.to(device).eval().requires_grad_(False)
    return DistillLoss(teacher, cfg)
