"""What a dataset holds before it trains: examples and labels per side, token lengths with the
model's tokenizer (a histogram in the terminal and as a PNG), what truncation would do, and the
tokens and time a recipe's training would take.

    >>> stats = compute_stats(train, heldout, tokenizer, recipe.train)      # doctest: +SKIP
    >>> print(format_stats(stats))                                          # doctest: +SKIP
    examples     10003 train, 3080 held-out
    labels       77 in train (largest 'card_payment_fee_charged' 187, smallest ... 35)
      card_payment_fee_charged      187 train     40 held-out
      ...
    tokens       min 38  mean 52.3  median 50  p90 65  p99 89  max 136  (per example, ...)
        38-47    ████████████████████████████             3421
        48-57    ████████████████████████████████████████ 4815
        ...
    truncation   all 10003 examples fit in max_length=512
    training     2502 optimizer steps (2502 micro-batches) over 10003 examples: ~1.38M tokens
                 with padding, 149k answer tokens
                 ~58 min at 400 tokens/s (a rough constant, not measured on this machine ...)

(banking77 with the SmolLM2 tokenizer and the default recipe: 2 epochs, batch 8.)
Steps and padded tokens follow the training loop: micro-batches of `batch_size` in a seeded
shuffled order per epoch, each padded to its longest example (the loop's tokens/s counts those
padded tokens, so the time estimate uses the same count). `tuneloop data stats` takes the
throughput from --tokens-per-second, else from the workspace registry's latest finished run of
the same model and method (`registry.queries.measured_throughput`).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import random
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tuneloop.config import DEFAULT_MODEL, TrainConfig
from tuneloop.data.records import Example
from tuneloop.data.templates import TruncationReport, apply_truncation
from tuneloop.data.tokens import measure

# Measured once: LoRA r=16, bf16 autocast, batch 8 on the quickstart data, 2 CPU cores
# (docs/quickstart.md: 396-416 tokens/s). Only for the embedded default model, and only when
# neither --tokens-per-second nor a run in the workspace registry gives a measured figure; the
# estimate then calls it a rough constant.
EMBEDDED_CPU_TOKENS_PER_S = 400.0


@dataclass
class Estimate:
    examples: int  # kept after truncation
    steps: int  # optimizer steps
    micro_batches: int
    tokens: int  # padded tokens the loop processes
    supervised_tokens: int
    tokens_per_second: float | None
    basis: str  # where the throughput comes from

    @property
    def seconds(self) -> float | None:
        return self.tokens / self.tokens_per_second if self.tokens_per_second else None


@dataclass
class DatasetStats:
    n_train: int
    n_heldout: int
    labels: dict[str, int]
    heldout_labels: dict[str, int]
    lengths: list[int] | None = None  # tokens per training example, before truncation
    truncation: TruncationReport | None = None
    estimate: Estimate | None = None


def compute_stats(
    train: list[Example],
    heldout: list[Example] | None = None,
    tokenizer=None,
    train_config: TrainConfig | None = None,
    *,
    instruction: str | None = None,
    model_name: str | None = None,
    tokens_per_second: float | None = None,
    throughput_basis: str = "given",
) -> DatasetStats:
    """Counts always; token lengths, truncation and a training estimate with a tokenizer.

    The time estimate uses `tokens_per_second` (`throughput_basis` says where it comes from: the
    command line, a run that measured it); without one, the embedded default model falls back
    to a rough constant, said as such, and any other model gets no time."""
    heldout = heldout or []
    stats = DatasetStats(len(train), len(heldout), _labels(train), _labels(heldout))
    if tokenizer is None or not train:
        return stats
    cfg = train_config or TrainConfig()
    measured = measure(tokenizer, train, cfg.max_length, cfg.truncation, instruction)
    stats.lengths = measured.lengths
    stats.truncation = measured.report
    kept, _ = apply_truncation(measured.items, cfg.max_length, cfg.truncation)
    if tokens_per_second is not None:
        basis = throughput_basis
    elif model_name == DEFAULT_MODEL:
        tokens_per_second = EMBEDDED_CPU_TOKENS_PER_S
        basis = (
            "a rough constant, not measured on this machine: the embedded model with LoRA on "
            "2 CPU cores once gave 396-416 tokens/s (docs/quickstart.md); train once, or pass "
            "--tokens-per-second, for a measured figure"
        )
    else:
        basis = "unknown: pass --tokens-per-second, or train once in this workspace"
    stats.estimate = estimate_training(
        [len(i.input_ids) for i in kept], [i.n_supervised for i in kept], cfg, tokens_per_second
    )
    stats.estimate.basis = basis
    return stats


def estimate_training(
    lengths: list[int],
    supervised: list[int],
    cfg: TrainConfig,
    tokens_per_second: float | None = None,
) -> Estimate:
    """Optimizer steps and padded tokens for `cfg`, as the training loop would batch them.

    >>> e = estimate_training([10, 20, 30, 40], [2, 2, 2, 2], TrainConfig(batch_size=2, epochs=1))
    >>> e.steps, e.micro_batches, e.supervised_tokens
    (2, 2, 8)
    """
    n = len(lengths)
    if n == 0:
        return Estimate(0, 0, 0, 0, 0, tokens_per_second, "")
    per_epoch = math.ceil(n / cfg.batch_size)
    steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))
    micro = steps * cfg.grad_accum
    tokens = supervised_tokens = 0
    order: list[int] = []
    for index in range(micro):
        epoch, j = divmod(index, per_epoch)
        if j == 0:
            order = list(range(n))
            random.Random(f"{cfg.seed}:{epoch}").shuffle(order)
        chosen = order[j * cfg.batch_size : (j + 1) * cfg.batch_size]
        tokens += len(chosen) * max(lengths[i] for i in chosen)
        supervised_tokens += sum(supervised[i] for i in chosen)
    return Estimate(n, steps, micro, tokens, supervised_tokens, tokens_per_second, "")


def length_summary(lengths: list[int]) -> dict[str, float]:
    """min, mean, median, p90, p99 and max of the token lengths."""
    import numpy as np

    a = np.asarray(lengths)
    q = np.percentile(a, [50, 90, 99])
    return {
        "min": int(a.min()),
        "mean": round(float(a.mean()), 1),
        "median": float(q[0]),
        "p90": float(q[1]),
        "p99": float(q[2]),
        "max": int(a.max()),
    }


def terminal_histogram(lengths: list[int], bins: int = 10, width: int = 40) -> str:
    """Token lengths as horizontal bars, one line per bin.

    >>> print(terminal_histogram([1, 2, 2, 3, 3, 3, 10], bins=3, width=6))
       1-4    ██████ 6
       5-7           0
      8-10    █      1
    """
    import numpy as np

    lo, hi = min(lengths), max(lengths)
    edges = np.linspace(lo, hi + 1, min(bins, hi - lo + 1) + 1)
    counts, edges = np.histogram(lengths, bins=edges)
    top = max(int(counts.max()), 1)
    labels = []
    for k in range(len(counts)):
        a, b = math.ceil(edges[k]), math.ceil(edges[k + 1]) - 1
        labels.append(f"{a}-{b}" if b > a else f"{a}")
    pad = max(len(label) for label in labels)
    lines = []
    for label, count in zip(labels, counts, strict=True):
        bar = "█" * round(width * int(count) / top)
        lines.append(f"  {label.rjust(pad)}    {bar.ljust(width)} {int(count)}")
    return "\n".join(lines)


def save_histogram(
    lengths: list[int], path: str | Path, max_length: int | None = None, title: str = ""
) -> Path:
    """A PNG histogram of token lengths, with the max_length line; written atomically."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=120)
    ax = fig.subplots()
    ax.hist(lengths, bins=min(50, max(1, len(set(lengths)))), color="#4477aa")
    if max_length is not None and max_length <= 1.5 * max(lengths):
        ax.axvline(max_length, color="#cc3311", linestyle="--", label=f"max_length {max_length}")
        ax.legend()
    elif max_length is not None:  # far to the right: a line there would squash the bars
        ax.text(0.98, 0.95, f"max_length {max_length}: all fit", transform=ax.transAxes,
                ha="right", va="top", color="#cc3311")  # fmt: skip
    ax.set_xlabel("tokens per example (chat template applied)")
    ax.set_ylabel("examples")
    ax.set_title(title or f"token lengths of {len(lengths)} examples")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    _write_bytes(path, buf.getvalue())
    return path


def format_stats(stats: DatasetStats, max_labels: int = 20) -> str:
    lines = [f"examples     {stats.n_train} train, {stats.n_heldout} held-out"]
    if stats.labels:
        counts = Counter(stats.labels)
        (top, most), (bottom, least) = counts.most_common()[0], counts.most_common()[-1]
        lines.append(
            f"labels       {len(counts)} in train (largest {top!r} {most}, "
            f"smallest {bottom!r} {least})"
        )
        width = max(len(label) for label in counts)
        shown = counts.most_common()
        if len(shown) > max_labels:
            half = max_labels // 2
            shown = [*shown[:half], ("...", None), *shown[-half:]]
        for label, n in shown:
            held = stats.heldout_labels.get(label, 0) if n is not None else None
            right = "" if n is None else f"{n:>6} train  {held:>5} held-out"
            lines.append(f"  {label.ljust(width)}  {right}")
    if stats.lengths:
        s = length_summary(stats.lengths)
        lines.append(
            f"tokens       min {s['min']}  mean {s['mean']}  median {s['median']:g}  "
            f"p90 {s['p90']:g}  p99 {s['p99']:g}  max {s['max']}  (per example, chat template)"
        )
        lines.append(terminal_histogram(stats.lengths))
    if stats.truncation is not None:
        t = stats.truncation
        lines.append(f"truncation   {t.summary()}")
        if t.lost_target:
            lines.append(f"             {t.lost_target} would lose their whole answer")
    if (e := stats.estimate) is not None:
        line = (
            f"training     {e.steps} optimizer steps ({e.micro_batches} micro-batches) over "
            f"{e.examples} examples: ~{_si(e.tokens)} tokens with padding, "
            f"{_si(e.supervised_tokens)} answer tokens"
        )
        lines.append(line)
        if e.seconds is not None:
            lines.append(
                f"             ~{_duration(e.seconds)} at {e.tokens_per_second:g} tokens/s "
                f"({e.basis})"
            )
        else:
            lines.append(f"             time: {e.basis}")
    return "\n".join(lines)


def lint_counts(findings: list) -> dict:
    """Lint findings counted by severity and by code: what the registry keeps of a data lint.

    >>> from tuneloop.data.findings import Finding
    >>> lint_counts([Finding("duplicate", "warning", "t:2", "..."),
    ...              Finding("leakage", "error", "h:1", "...")])
    {'error': 1, 'warning': 1, 'codes': {'duplicate': 1, 'leakage': 1}}
    """
    severities = Counter(f.severity for f in findings)
    codes = Counter(f.code for f in findings)
    return {"error": severities["error"], "warning": severities["warning"], "codes": dict(codes)}


AUDIT_FINDINGS = 20  # findings listed in full in audit.json; all are counted


def data_audit(
    train: list[Example],
    heldout: list[Example],
    findings: list,
    lengths: list[tuple[int, int]],
    truncation: dict,
    split_made: bool,
) -> dict:
    """What a run's data audit (`<run>/data/audit.json`, shown by `tuneloop report`) holds:
    split sizes, label balance, lint counts and the first findings, token lengths of the train
    items as trained (`lengths`: (tokens, answer tokens) per item, after the max_length
    policy), and what that policy did.

        {"split": {"train": 24, "heldout": 6, "split_made": false},
         "labels": {"train": {"alpha": 8, ...}, "heldout": {...}},
         "lint": {"error": 0, "warning": 1, "codes": {"too-few-examples": 1}},
         "findings": [{"code": "too-few-examples", "severity": "warning", ...}],
         "tokens": {"train": {"min": 21, "mean": 23.4, ...}, "answer_mean": 2.0},
         "truncation": {"policy": "drop", "max_length": 512, "dropped": 0, ...}}
    """
    tokens: dict = {}
    if lengths:
        tokens["train"] = length_summary([t for t, _ in lengths])
        tokens["answer_mean"] = round(sum(a for _, a in lengths) / len(lengths), 1)
    return {
        "split": {"train": len(train), "heldout": len(heldout), "split_made": split_made},
        "labels": {"train": _labels(train), "heldout": _labels(heldout)},
        "lint": lint_counts(findings),
        "findings": [f.to_json() for f in findings[:AUDIT_FINDINGS]],
        "tokens": tokens,
        "truncation": truncation,
    }


def write_run_audit(
    recipe,
    folder: Path,
    lengths: list[tuple[int, int]],
    truncation: dict,
    split_made: bool,
) -> dict:
    """Lint a run's data as it trains (the split saved in `folder`, the run's `data/`, else the
    recipe's files), write `folder/audit.json` (`data_audit`) and return the lint counts, which
    run.json and the registry keep. Near-duplicates are searched at the split's threshold, as
    the split searched them; token lengths are not linted again (`truncation` has them).
    Preference pairs are linted as pairs (`preference.lint_pairs`)."""
    from tuneloop.data.lint import LintOptions, lint_examples
    from tuneloop.data.prepare import run_examples, run_pairs
    from tuneloop.files import write_json

    if recipe.train.objective == "dpo":
        from tuneloop.data.preference import lint_pairs

        pairs = [run_pairs(recipe, folder, side) for side in ("train", "heldout")]
        findings = sorted(lint_pairs(pairs[0]) + lint_pairs(pairs[1]),
                          key=lambda f: f.severity != "error")  # fmt: skip
        train, heldout = ([p.as_example() for p in side] for side in pairs)
    else:
        train, heldout = (run_examples(recipe, folder, side) for side in ("train", "heldout"))
        options = LintOptions(near_threshold=recipe.data.split.near_threshold or None,
                              instruction=recipe.task.instruction)  # fmt: skip
        findings = lint_examples(train, heldout, options)
    audit = data_audit(train, heldout, findings, lengths, truncation, split_made)
    write_json(folder / "audit.json", audit)
    return audit["lint"]


def _labels(examples: list[Example]) -> dict[str, int]:
    return dict(Counter(str(ex.label) for ex in examples if ex.label is not None))


def _si(n: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _write_bytes(path: Path, data: bytes) -> None:
    """Like `files.write_text`, for bytes: a temporary file in the folder, then `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
