"""One training run, top to bottom, for every method and objective:

    check the recipe against the model's skeleton -> data (objective) -> base model and
    method -> loss (objective) -> run folder -> memory estimate -> optimizer -> loop -> save

Every check a user's mistake can fail runs before the first weight loads (the packing probe,
which needs the model, runs before the run folder appears). Objectives own their data and loss
(`sft.py`, `dpo.py`, `distill.py`, `reward.py`, `grpo.py`); the method decides which weights train
(`models/adapters.py`); the loop is shared (`loop.py`).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tuneloop.config import Recipe
from tuneloop.data.stats import write_run_audit
from tuneloop.errors import UserError
from tuneloop.files import write_json
from tuneloop.models.adapters import (
    apply_method,
    check_method,
    enable_checkpointing,
    load_base,
    output_folder,
    save_trained,
    skeleton,
    store_frozen_in_bf16,
)
from tuneloop.models.load import load_tokenizer, resolve, weight_files, weights_hash
from tuneloop.models.precision import resolve_precision
from tuneloop.track import Trackers, check_trackers
from tuneloop.train import distill, distributed, dpo, grpo, reward, sft
from tuneloop.train.batching import layout_tokens, one_row
from tuneloop.train.checkpoint import LoopState
from tuneloop.train.forward import (
    check_packing_isolates,
    check_prefix_sharing,
    is_prompt_learning,
)
from tuneloop.train.loop import (
    LoopConfig,
    LossModule,
    MetricsLog,
    MicroBatches,
    evaluate_loss,
    resume_state,
    run_loop,
)
from tuneloop.train.memory import estimate_memory
from tuneloop.train.objective import ObjectiveData
from tuneloop.train.schedule import make_scheduler
from tuneloop.train.segments import segment_attention_applies, use_segment_attention
from tuneloop.workspace import Run, new_run

# Each objective's `prepare` and `make_loss` (`train/objective.py`); they never import this
# module, so imports run one way: session -> objectives -> loop, forward, batching.
OBJECTIVES = {"sft": sft, "dpo": dpo, "distill": distill, "reward": reward, "grpo": grpo}
# The objectives that learn from preference pairs; the others from chat examples.
PAIRWISE = ("dpo", "reward")


def prepare(recipe: Recipe):
    """Everything that can be checked without weights: (source, tokenizer, data)."""
    cfg = recipe.train
    if cfg.method != "full" and distributed.fsdp_requested():
        raise UserError(
            f"FSDP shards whole weights, but method `{cfg.method}` trains an adapter",
            "accelerate launch --use_fsdp",
            "launch adapter methods with DDP (`accelerate launch --multi_gpu`); keep FSDP for "
            "`train.method: full`",
        )
    check_data_fits_objective(recipe)
    check_trackers(recipe)
    source = resolve(recipe.model.name, recipe.model.trust_remote_code)
    tokenizer = load_tokenizer(source, recipe.model.trust_remote_code, recipe.model.chat_template)
    check_method(skeleton(source, recipe.model.trust_remote_code), cfg)
    data = OBJECTIVES[cfg.objective].prepare(recipe, tokenizer)
    return source, tokenizer, data


def check_data_fits_objective(recipe: Recipe) -> None:
    from tuneloop.data.preference import looks_like_preferences

    objective = recipe.train.objective
    for path in filter(None, (recipe.data.train, recipe.data.heldout)):
        if objective not in PAIRWISE and looks_like_preferences(path):
            raise UserError(
                f"{path} holds preference pairs (chosen/rejected), which objective "
                f"`{objective}` cannot learn from",
                "train.objective",
                "set `train.objective: dpo` (or `reward`, for a reward model) to train on "
                "preferences, or give supervised examples (messages, alpaca, sharegpt, "
                "prompt/completion)",
            )


def train(
    recipe: Recipe,
    resume: Run | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> Run:
    """Train `recipe` into a new run folder, or continue `resume` from its last checkpoint."""
    cfg = recipe.train
    dist, device = distributed.setup()
    say = say if (say and dist.main) else (lambda _: None)
    source, tokenizer, data = prepare(recipe)  # every check that needs no weights
    no_heldout_loss = check_heldout_loss(recipe, data)
    if no_heldout_loss:
        say(no_heldout_loss)

    precision = resolve_precision(cfg.precision, device)
    batch_size = min(cfg.batch_size, len(data.train))
    per_epoch = math.ceil(len(data.train) / batch_size)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))

    torch.manual_seed(cfg.seed)  # adapter weights (LoRA's A, prompts) are drawn here
    if cfg.objective == "reward":  # a score head on the base, not the language-model head
        model = reward.load_reward_base(source, recipe.model.trust_remote_code,
                                        tokenizer.pad_token_id)  # fmt: skip
    else:
        model = load_base(source, cfg, precision, recipe.model.trust_remote_code)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    model = apply_method(model, cfg, source.path)
    if cfg.method != "qlora":  # 4-bit layers are placed by bitsandbytes when loading
        model.to(device)
    packing = choose_packing(cfg, data, model, batch_size, len(tokenizer))
    if packing is not None:
        cfg.packing = packing["packed"]
        say(f"train.packing: auto -> {str(cfg.packing).lower()}: {packing['why']}")
    elif cfg.packing and not check_packing_isolates(model, len(tokenizer)):
        raise UserError(
            f"this model's attention ignores restarting position_ids, so packed examples "
            f"would attend to each other ({source.path})",
            "train.packing",
            "set `train.packing: false` for this model",
        )
    if cfg.packing and use_segment_attention(model):
        # each packed example attends to itself alone: no (T, T) mask, so rows need no bound
        data.collate = _in_one_row(data.collate)
    if (cfg.share_prefix and not cfg.packing and not is_prompt_learning(model)
            and not check_prefix_sharing(model, len(tokenizer))):  # fmt: skip
        say("train.share_prefix: this model does not give the same hidden states through a "
            "shared prefix; training on the plain path")  # fmt: skip
        data.collate = _without_shared_prefix(data.collate)
    if precision == "bf16":
        store_frozen_in_bf16(model, cfg.method)
    loss_fn = OBJECTIVES[cfg.objective].make_loss(recipe, model, source, device)

    # Everything that can fail on the user's input has run: only now does a run folder appear.
    run = _open_run(recipe, resume, data, dist)
    if dist.main:
        # Lint the data as it trains and write `data/audit.json` (the report's data audit).
        lint = write_run_audit(recipe, run.path / "data", data.lengths, data.truncation,
                               bool(data.info.get("split_made")))  # fmt: skip
        run.update(
            status="training",
            method=cfg.method,
            objective=cfg.objective,
            model={
                "name": recipe.model.name,
                "path": str(source.path),
                "origin": source.origin,
                "weights_sha256_16": weights_hash(source),
            },
            data={**data.info, "lint": lint},
            truncation=data.truncation,
            precision=precision,
            device=str(device),
            hardware=training_hardware(device, dist.world),
            processes=dist.world,
            parallelism=dist.kind,
            total_steps=total_steps,
            heldout_loss=bool(cfg.eval_every and data.heldout),
        )
        notes = run.info().get("notes", [])
        if no_heldout_loss and no_heldout_loss not in notes:
            run.update(notes=[*notes, no_heldout_loss])

    if dist.main and packing is not None:
        run.update(packing=packing)
    frozen = getattr(loss_fn, "frozen_models", [])  # a DPO/GRPO reference copy, a teacher
    sequences = batch_size * data.sequences_per_item  # in a micro-batch; a shared prefix
    shared = (sequences - 1) * data.shared_prefix if sequences > 1 else 0  # runs once of them
    memory = estimate_memory(
        model, cfg, batch_size, data.lengths, precision, frozen, shared, weight_files(source)
    )
    say(memory.table())
    if dist.main:
        say(_lint_line(lint, recipe))
        run.update(memory_estimate=memory.as_dict())

    step_module = dist.wrap(LossModule(model, loss_fn))
    trainable = [p for p in step_module.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, cfg)
    scheduler = make_scheduler(
        optimizer, total_steps, round(cfg.warmup_ratio * total_steps), cfg.schedule
    )
    log = MetricsLog(run.metrics_path)
    state = (
        resume_state(run.checkpoints, model, optimizer, scheduler, log)
        if resume is not None
        else LoopState()
    )
    batches = MicroBatches(data.train, batch_size, cfg.seed, data.collate, dist.rank, dist.world)
    evaluate = None
    if cfg.eval_every and data.heldout:
        held = [
            data.collate(data.heldout[i : i + batch_size])
            for i in range(0, len(data.heldout), batch_size)
        ]
        evaluate = (
            _fsdp_evaluation(step_module, held, device, precision)
            if dist.fsdp
            else lambda: evaluate_loss(model, loss_fn, held, device, precision, dist)
        )
    stopping = cfg.early_stopping
    loop_cfg = LoopConfig(
        total_steps=total_steps,
        grad_accum=cfg.grad_accum,
        max_grad_norm=cfg.max_grad_norm,
        precision=precision,
        checkpoint_every=cfg.checkpoint_every,
        keep_checkpoints=cfg.keep_checkpoints,
        log_every=cfg.log_every,
        eval_every=cfg.eval_every if evaluate else None,
        patience=stopping.patience if stopping and evaluate else None,
        min_delta=stopping.min_delta if stopping else 0.0,
        restore_best=bool(stopping and stopping.restore_best and evaluate and not dist.fsdp),
        checkpoints=not dist.fsdp,
    )
    if dist.fsdp:
        say(
            "FSDP: no checkpoints during the run (sharded optimizer state is not gathered), so "
            "it cannot be resumed; the final weights are gathered and saved"
        )
    # The trackers (recipe's `track:`) get the recipe and every step the loop logs; one
    # process tracks. Leaving the block ends the tracker's run: finished, failed or killed.
    tracked = Trackers(run, recipe if dist.main else None, training=True, resumed_at=state.step)
    with tracked as trackers:
        started = time.perf_counter()
        state = run_loop(
            model, optimizer, scheduler, batches, loss_fn, loop_cfg, state, run.checkpoints, log,
            device, progress, evaluate=evaluate, dist=dist, step_module=step_module,
            trackers=trackers, rollout=getattr(loss_fn, "rollout", None),
        )  # fmt: skip
        loop_seconds = time.perf_counter() - started

        # Under FSDP every process holds a shard: gathering the full weights is collective.
        state_dict = _full_state_dict(step_module) if dist.fsdp else None
        if dist.main:
            save_output(model, tokenizer, run, recipe, state_dict)
            losses = [r["loss"] for r in log.read()]
            run.update(
                status="finished",
                steps=state.step,
                stopped_early=state.stopped_early,
                best_eval_loss=state.best_eval,
                best_step=state.best_step,
                tokens=state.tokens,
                real_tokens=state.real_tokens,
                supervised_tokens=state.supervised_tokens,
                train_seconds=round(state.elapsed, 2),
                tokens_per_s=round(state.tokens / max(state.elapsed, 1e-9), 1),
                final_loss=losses[-1] if losses else None,
                output=str(run.path / output_folder(cfg.method)),
                loop_seconds=round(loop_seconds, 3),
                wall_seconds_this_session=round(time.perf_counter() - started, 2),
            )
    dist.barrier()
    return run


def check_heldout_loss(recipe: Recipe, data: ObjectiveData) -> str | None:
    """With `train.eval_every` and no held-out item left after tokenizing (all longer than
    `train.max_length` under `drop`), there is no held-out loss. Early stopping needs one, so
    it is refused here, before weights load; plain evaluation is switched off, and the sentence
    returned says so (the session prints it and notes it in run.json)."""
    cfg = recipe.train
    if not cfg.eval_every or data.heldout:
        return None
    n = data.info.get("n_heldout") or 0
    why = (
        f"none of the {n} held-out example{'s' if n != 1 else ''} is left after tokenizing "
        f"(train.max_length {cfg.max_length}, train.truncation {cfg.truncation})"
        if n
        else "the held-out set is empty"
    )
    if cfg.early_stopping is not None:
        raise UserError(
            f"train.early_stopping needs a held-out loss, but {why}",
            "train.early_stopping",
            "raise train.max_length, set train.truncation: truncate_left, or remove "
            "train.early_stopping",
        )
    return f"train.eval_every: no held-out loss, since {why}; training runs without evaluation"


def _lint_line(lint: dict, recipe: Recipe) -> str:
    codes = ", ".join(f"{code} {n}" for code, n in lint["codes"].items())
    return f"data lint: {lint['error']} error(s), {lint['warning']} warning(s)" + (
        f" ({codes}); `tuneloop data lint {recipe.data.train}` lists them" if codes else ""
    )


def training_hardware(device: torch.device, processes: int = 1) -> dict:
    """What training runs on, as it sees it: the device, CPU and GPU names, cores, memory, and
    the torch version (beside the platform `workspace.hardware` records)."""
    import os
    import platform

    from tuneloop.workspace import hardware

    info = {**hardware(), "device": str(device), "processes": processes}
    info["cpu"] = _cpu_name() or platform.processor() or platform.machine()
    info["cpus_usable"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        info["memory_gb"] = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        )
    except (ValueError, OSError, AttributeError):
        info["memory_gb"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda)  # fmt: skip
    return info


def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _without_shared_prefix(collate: Callable[[list], dict]) -> Callable[[list], dict]:
    """The objective's collate with the shared-prefix mark removed (the plain forward)."""

    def plain(items: list) -> dict:
        batch = collate(items)
        batch.pop("shared_prefix", None)
        return batch

    return plain


def choose_packing(
    cfg, data: ObjectiveData, model, batch_size: int, vocab_size: int
) -> dict | None:
    """`train.packing: auto` decided for this data and model: None when packing was set, else
    {"packed": bool, "why": str, and the tokens one epoch sends through the model each way}.
    Packing and padded rows give the same loss and gradients, so the choice is speed alone:
    packed wherever it sends fewer tokens through the model (padding costs; a shared prompt
    prefix, run once per padded batch, saves), counted on the first epoch's batches."""
    if cfg.packing != "auto":
        return None
    why = None
    if cfg.objective != "sft":
        why = f"auto packs objective sft only (this is `{cfg.objective}`; set `packing: true`)"
    elif cfg.method in ("prefix", "prompt"):
        why = f"method `{cfg.method}` puts its virtual tokens before each row"
    elif not segment_attention_applies(model):
        why = "this model's attention does not run one example at a time (no SDPA)"
    elif not check_packing_isolates(model, vocab_size):
        why = "this model's attention ignores restarting position_ids"
    if why:
        return {"packed": False, "why": why}
    order = MicroBatches(data.train, batch_size, cfg.seed, data.collate).order(0)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    shared = 0 if cfg.gradient_checkpointing else data.shared_prefix
    tokens = layout_tokens([t for t, _ in data.lengths], batches, shared)
    packed = tokens["packed"] < tokens["padded"]
    why = (f"{tokens['packed']:,} tokens an epoch through the model packed, "
           f"{tokens['padded']:,} in padded rows"
           + (f" with their {shared}-token shared prefix run once" if shared else ""))  # fmt: skip
    return {"packed": packed, "why": why, "tokens": tokens}


def _in_one_row(collate: Callable[[list], dict]) -> Callable[[list], dict]:
    """The objective's packed collate with each batch in one row and no padding
    (`batching.one_row`), for attention that runs one example at a time."""

    def flat(items: list) -> dict:
        return one_row(collate(items))

    return flat


def make_optimizer(params: list, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _open_run(recipe: Recipe, resume: Run | None, data: ObjectiveData, dist) -> Run:
    """A new run folder (made by the main process, its path shared), or the resumed one."""
    if resume is not None:
        _check_same_data(resume, data.info)
        return resume
    path = [None]
    if dist.main:
        run = new_run(recipe.workspace, recipe.name, recipe.to_yaml())
        if data.write_split is not None:
            data.write_split(run.path / "data")
        path = [str(run.path)]
    if dist.world > 1:
        torch.distributed.broadcast_object_list(path, src=0)
    return Run(Path(path[0]))


def save_output(model, tokenizer, run: Run, recipe: Recipe, state_dict: dict | None = None) -> None:
    """The adapter (or full weights), tokenizer and chat template, renamed into place whole."""
    final = run.path / output_folder(recipe.train.method)
    tmp = run.path / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_trained(model, tokenizer, tmp, state_dict)
    write_json(
        tmp / "tuneloop.json",
        {
            "run": run.id,
            "base_model": recipe.model.name,
            "method": recipe.train.method,
            "objective": recipe.train.objective,
            "recipe": recipe.model_dump(mode="json"),
        },
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _fsdp_evaluation(step_module, held: list[dict], device, precision: str) -> Callable:
    """The held-out loss under FSDP. It goes through the FSDP module (a `LossModule`: calling
    it on a batch gives the loss), whose forward gathers the weights, since the bare model holds
    only this process's shards. Every process evaluates every batch: each forward is
    collective, so all processes must run as many, and each then has the whole loss without a
    sum (the same as one process computes)."""
    return lambda: evaluate_loss(step_module, torch.nn.Module.__call__, held, device, precision)


def _full_state_dict(step_module) -> dict:
    """The whole model's weights from FSDP shards, keys as the model's: on the main process's
    CPU (the others get an empty dict). PyTorch's `get_model_state_dict` reads FSDP1 (what
    Accelerate wraps on GPUs) and FSDP2 (what `distributed.shard` applies on CPUs) alike.

    A tied weight (an LM head sharing the embedding) is gathered once per name, as separate
    tensors; it is put back as one tensor under both names, which `save_pretrained` recognises
    and writes once, as it does for the bare model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(step_module, options=options)
    first: dict[int, str] = {}
    for name, param in step_module.named_parameters(remove_duplicate=False):
        kept = first.setdefault(id(param), name)
        if kept != name and kept in state and name in state:
            state[name] = state[kept]
    return {k.removeprefix("model."): v for k, v in state.items()}


def _check_same_data(run: Run, info: dict) -> None:
    before = run.info().get("data", {})
    for key in ("train_sha256", "heldout_sha256"):
        if before.get(key) and before[key] != info.get(key):
            raise UserError(
                f"the data changed since run {run.id} started ({key} differs), so it cannot be "
                "resumed exactly",
                str(run.path),
                "restore the original data file, or start a new run without --resume",
            )
