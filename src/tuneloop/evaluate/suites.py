"""The suites the gate asks base and tuned alike: standard ones read from files, built-in ones.

Standard suites are configured by path in the recipe (`gate.suites`), read as published, and
sampled with a seed, stratified by subject or type, so base and tuned answer the same items:

| suite    | feeds                  | one item scores                                           |
| -------- | ---------------------- | --------------------------------------------------------- |
| mmlu     | general                | 1 if the answer letter the model finds likeliest is right |
| gsm8k    | general                | 1 if the final number of the answer equals the reference  |
| ifeval   | general                | 1 if every verifiable instruction is followed (strict)    |
| xstest   | safety, over_refusal   | refused (unsafe prompts should be, safe look-alikes not)  |
| advbench | safety                 | refused                                                   |

A condition that no configured suite feeds is asked with the small built-in probes shipped in
`probes/` (105 general questions; 60 harmful requests and 40 benign look-alikes), and its line
in the gate says how small they are.

Every item is a plain user turn, without the task's instruction: the suites measure the model as
a user's other requests will meet it. An item is saved as, e.g.

    {"id": "mmlu:anatomy:12", "suite": "mmlu", "kind": "general", "category": "anatomy",
     "prompt": "...", "reference": "B", "prediction": "B", "scores": {"correct": 1.0}}

`kind` is `general` (scored `correct`), `harmful` or `benign` (scored `refused`).
"""

from __future__ import annotations

import csv
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.config import GateConfig, JudgeConfig, Recipe, SuiteConfig
from tuneloop.data.jsonlines import parse_jsonl, read_text
from tuneloop.errors import UserError
from tuneloop.evaluate.refusal import is_refusal

BUILTIN = ("general", "safety")
CONDITION_OF_KIND = {"general": "general", "harmful": "safety", "benign": "over_refusal"}
KINDS_OF_SUITE = {
    "mmlu": ("general",),
    "gsm8k": ("general",),
    "ifeval": ("general",),
    "xstest": ("harmful", "benign"),
    "advbench": ("harmful",),
    "general": ("general",),
    "safety": ("harmful", "benign"),
}
# Answer lengths: a worked arithmetic answer or a written response needs room; a refusal shows
# in its opening (the detector reads 160 characters), so 48 tokens suffice there.
DEFAULT_NEW_TOKENS = {"gsm8k": 256, "ifeval": 256, "xstest": 48, "advbench": 48}
LETTERS = ("A", "B", "C", "D")
# What guessing scores on a general item: a letter picked blindly is right one time in four.
CHANCE = {"mmlu": 1 / len(LETTERS)}


@dataclass(frozen=True)
class SuiteItem:
    id: str
    suite: str
    kind: str  # "general" | "harmful" | "benign"
    category: str
    prompt: str
    answer: Any = None  # MMLU letter, GSM8K number, IFEval row, built-in check


@dataclass
class Suite:
    """A suite as this gate asks it: its sampled items and how they were chosen."""

    name: str
    items: list[SuiteItem]
    max_new_tokens: int | None  # None: scored by likelihood, nothing generated
    sample: dict = field(default_factory=dict)  # path, n, seed: the signature of the sample
    available: int = 0

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN


# -- reading the published files ----------------------------------------------------------------


def _file(path: Path, inside: str, setting: str) -> Path:
    """`path` itself, or `inside` within it when `path` is the suite's folder."""
    target = path / inside if path.is_dir() else path
    if not target.is_file():
        raise UserError(
            f"no suite file at {target}",
            setting,
            f"point it at the suite's folder (holding {inside}) or at that file",
        )
    return target


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-empty rows with the line each ends on (a quoted field may span lines)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        return [(reader.line_num, row) for row in reader if row]


def read_mmlu(path: Path, setting: str) -> list[SuiteItem]:
    """MMLU's `test/<subject>_test.csv` files: question, four options, answer letter; no header."""
    folder = path / "test" if (path / "test").is_dir() else path
    files = sorted(folder.glob("*_test.csv")) if folder.is_dir() else [path]
    if not files or not files[0].is_file():
        raise UserError(
            f"no MMLU files (*_test.csv) under {path}",
            setting,
            "point it at MMLU's folder (holding test/<subject>_test.csv)",
        )
    items = []
    for file in files:
        subject = file.name.removesuffix("_test.csv").removesuffix(".csv")
        for line, row in _csv_rows(file):
            if len(row) != 6 or row[5].strip() not in LETTERS:
                raise UserError(
                    f"an MMLU row needs a question, 4 options and a letter A-D; got {row!r:.80}",
                    f"{file}:{line}",
                    "use the published MMLU CSV files unchanged",
                )
            question, *options, letter = row
            text = (
                f"The following is a multiple choice question about {subject.replace('_', ' ')}."
                f"\n\n{question}\n"
                + "".join(f"{L}. {o}\n" for L, o in zip(LETTERS, options, strict=True))
                + "\nAnswer with the letter of the correct option."
            )
            items.append(
                SuiteItem(
                    f"mmlu:{subject}:{line}", "mmlu", "general", subject, text, letter.strip()
                )
            )
    return items


def read_gsm8k(path: Path, setting: str) -> list[SuiteItem]:
    """GSM8K's test.jsonl: `question`, and `answer` ending in `#### <number>`."""
    file = _file(path, "test.jsonl", setting)
    items = []
    for line, row in parse_jsonl(file, read_text(file)):
        answer = str(row.get("answer", ""))
        if "question" not in row or "####" not in answer:
            raise UserError(
                "a GSM8K line needs `question` and an `answer` ending in `#### <number>`",
                f"{file}:{line}",
                "use the published GSM8K test.jsonl unchanged",
            )
        prompt = (
            f"{row['question']}\nSolve it step by step, then give the final answer as a number "
            "after '####'."
        )
        reference = answer.rpartition("####")[2].strip().replace(",", "")
        items.append(SuiteItem(f"gsm8k:{line}", "gsm8k", "general", "gsm8k", prompt, reference))
    return items


def read_ifeval(path: Path, setting: str) -> list[SuiteItem]:
    """IFEval's input_data.jsonl: a prompt and the verifiable instructions it carries."""
    from tuneloop.evaluate.ifeval import load_rows

    file = _file(path, "input_data.jsonl", setting)
    return [
        SuiteItem(
            f"ifeval:{row['key']}",
            "ifeval",
            "general",
            row["instruction_id_list"][0].partition(":")[0] if row["instruction_id_list"] else "",
            row["prompt"],
            row,
        )
        for row in load_rows(file)
    ]


def read_xstest(path: Path, setting: str) -> list[SuiteItem]:
    """XSTest's prompts: 250 safe look-alikes (answer them) and 200 unsafe contrasts (refuse)."""
    file = _file(path, "xstest_prompts.csv", setting)
    with file.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"id", "prompt", "type", "label"} - set(reader.fieldnames or ())
        if missing:
            raise UserError(
                f"XSTest's CSV lacks the column(s) {', '.join(sorted(missing))}",
                str(file),
                "use the published xstest_prompts.csv unchanged",
            )
        rows = [(reader.line_num, row) for row in reader]
    items = []
    for line, row in rows:
        if row["label"] not in ("safe", "unsafe"):
            raise UserError(
                f"label {row['label']!r} is neither safe nor unsafe", f"{file}:{line}",
                "use the published xstest_prompts.csv unchanged",
            )  # fmt: skip
        kind = "benign" if row["label"] == "safe" else "harmful"
        items.append(SuiteItem(f"xstest:{row['id']}", "xstest", kind, row["type"], row["prompt"]))
    return items


def read_advbench(path: Path, setting: str) -> list[SuiteItem]:
    """AdvBench's harmful_behaviors.csv: `goal` (a harmful request), `target`."""
    file = _file(path, "harmful_behaviors.csv", setting)
    with file.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "goal" not in (reader.fieldnames or ()):
            raise UserError(
                "AdvBench's CSV has no `goal` column", str(file), "use harmful_behaviors.csv"
            )
        return [
            SuiteItem(f"advbench:{reader.line_num}", "advbench", "harmful", "advbench", r["goal"])
            for r in reader
        ]


READERS: dict[str, Callable[[Path, str], list[SuiteItem]]] = {
    "mmlu": read_mmlu,
    "gsm8k": read_gsm8k,
    "ifeval": read_ifeval,
    "xstest": read_xstest,
    "advbench": read_advbench,
}


def builtin_items(name: str) -> list[SuiteItem]:
    from tuneloop.evaluate.probes import load_suite

    return [SuiteItem(p.id, name, p.kind, p.category, p.prompt, p.check) for p in load_suite(name)]


def stratified_sample(items: list[SuiteItem], n: int | None, seed: int) -> list[SuiteItem]:
    """A seeded sample of `n` items: each kind (general, harmful, benign) gets its share and at
    least one item, so no condition a suite feeds goes unasked; within a kind each category
    (subject, type) gets its share. Shares are proportional, rounded by largest remainder, so
    300 of MMLU's 14,042 items give each of its 57 subjects 2 to 33. Items keep file order.
    """
    if n is None or n >= len(items):
        return list(items)
    by_kind: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_kind.setdefault(item.kind, []).append(i)
    if n < len(by_kind):
        raise UserError(
            f"a sample of {n} cannot hold one item of each of {len(by_kind)} kinds",
            "gate.suites.<suite>.n",
            f"sample at least {len(by_kind)} items",
        )
    rng = random.Random(seed)
    chosen: list[int] = []
    for kind, k in _shares(by_kind, n, minimum=1).items():
        strata: dict[str, list[int]] = {}
        for i in by_kind[kind]:
            strata.setdefault(items[i].category, []).append(i)
        for category, m in _shares(strata, k, minimum=0).items():
            chosen += rng.sample(strata[category], m)
    return [items[i] for i in sorted(chosen)]


def _shares(groups: dict[str, list[int]], n: int, minimum: int) -> dict[str, int]:
    """`n` split across groups in proportion to their sizes (largest remainder), each group
    getting at least `minimum` and at most its size."""
    total = sum(len(v) for v in groups.values())
    exact = {k: n * len(v) / total for k, v in groups.items()}
    share = {k: max(minimum, int(x)) for k, x in exact.items()}
    by_remainder = sorted(exact, key=lambda k: (exact[k] - int(exact[k]), k), reverse=True)
    for k in by_remainder[: max(0, n - sum(share.values()))]:
        share[k] += 1
    while sum(share.values()) > n:  # minimums overshot: take back from the largest share
        share[max(share, key=share.get)] -= 1
    return {k: min(v, len(groups[k])) for k, v in share.items()}


def active_suites(gate: GateConfig, seed: int, probe_tokens: int) -> list[Suite]:
    """The configured suites, sampled; plus the built-in probes for conditions none feeds."""
    suites, fed = [], set()
    for name, cfg in gate.suites.items():
        suites.append(configured_suite(name, cfg, seed))
        fed |= {CONDITION_OF_KIND[k] for k in KINDS_OF_SUITE[name]}
    for name in BUILTIN:
        kinds = [k for k in KINDS_OF_SUITE[name] if CONDITION_OF_KIND[k] not in fed]
        if kinds:
            items = [i for i in builtin_items(name) if i.kind in kinds]
            sample = {"builtin": True, "kinds": kinds}
            suites.append(Suite(name, items, probe_tokens, sample, len(items)))
    return suites


def configured_suite(name: str, cfg: SuiteConfig, seed: int) -> Suite:
    setting = f"gate.suites.{name}.path"
    if not cfg.path.exists():
        raise UserError(
            f"suite path {cfg.path} does not exist",
            setting,
            f"point it at the {name} folder, e.g. ../shared/data/evalsuites/{name}",
        )
    every = READERS[name](cfg.path, setting)
    sample = stratified_sample(every, cfg.n, seed)
    tokens = None if name == "mmlu" else cfg.max_new_tokens or DEFAULT_NEW_TOKENS[name]
    signature = {"path": str(cfg.path), "n": len(sample), "seed": seed, "max_new_tokens": tokens}
    return Suite(name, sample, tokens, signature, len(every))


# -- answering and scoring ----------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(answer: str) -> str | None:
    """The number after the last `####`, else the last number in the answer.

    >>> final_number("9 eggs at $2 is 9 * 2 = 18.\\n#### 18")
    '18'
    >>> final_number("She makes $1,250 a week.")
    '1250'
    >>> final_number("no idea") is None
    True
    """
    tail = answer.rpartition("####")[2] if "####" in answer else answer
    found = _NUMBER.findall(tail) or _NUMBER.findall(answer)
    return found[-1].replace(",", "").rstrip(".") if found else None


def same_number(a: str | None, b: str) -> bool:
    try:
        return a is not None and abs(float(a) - float(b)) < 1e-6
    except ValueError:
        return False


def score_item(item: SuiteItem, answer: str) -> dict[str, float]:
    """One answer's score: `correct` for general items, `refused` for safety ones."""
    if item.kind != "general":
        return {"refused": float(is_refusal(answer))}
    if item.suite == "mmlu":
        return {"correct": float(answer == item.answer)}
    if item.suite == "gsm8k":
        return {"correct": float(same_number(final_number(answer), item.answer))}
    if item.suite == "ifeval":
        from tuneloop.evaluate.ifeval import follows

        return {"correct": float(all(follows(item.answer, answer)))}
    from tuneloop.evaluate.probes import check_answer

    return {"correct": float(check_answer(item.answer or {}, answer))}


def choice_letters(model, tokenizer, prompts, batch_size: int, precision: str) -> list[str]:
    """The option letter each prompt's next token most likely is (one forward pass, no
    generation): the probability of `A` and ` A` summed, and so on, compared across A-D."""
    import torch

    from tuneloop.data.templates import render_prompt
    from tuneloop.train.loop import autocast

    device = next(model.parameters()).device
    variants = [
        sorted({tokenizer.encode(v, add_special_tokens=False)[0] for v in (L, f" {L}")})
        for L in LETTERS
    ]
    encoded = [
        tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"]
        for p in prompts
    ]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    picked = [""] * len(prompts)
    model.eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):  # left padding: every row's last token at -1
            ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row counts from its first token
        with torch.no_grad(), autocast(precision, device):
            logits = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
            ).logits[:, -1, :]  # (B, V)
        logp = torch.log_softmax(logits.float(), dim=-1)
        scores = torch.stack([torch.logsumexp(logp[:, v], dim=-1) for v in variants], -1)
        for row, i in enumerate(chunk):
            picked[i] = LETTERS[int(scores[row].argmax())]
    return picked


def answer_suites(
    model,
    tokenizer,
    suites: list[Suite],
    batch_size: int,
    precision: str,
    progress: bool,
    judge: JudgeConfig | None = None,
) -> list[tuple[dict, list[dict]]]:
    """Ask every suite of `model`: one batched pass per answer length (suites of equal length
    share it), MMLU by likelihood. A summary and per-item rows per suite, in order. Refusals
    are classified by `judge` when it sets `refusals`, else by the regex detector."""
    from tuneloop.evaluate.judge import refusal_scores
    from tuneloop.models.generate import generate

    answers: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    for tokens in dict.fromkeys(s.max_new_tokens for s in suites):
        group = [s for s in suites if s.max_new_tokens == tokens]
        prompts = [[{"role": "user", "content": i.prompt}] for s in group for i in s.items]
        started = time.perf_counter()
        if tokens is None:
            flat = choice_letters(model, tokenizer, prompts, batch_size, precision)
        else:
            flat = generate(
                model,
                tokenizer,
                prompts,
                max_new_tokens=tokens,
                batch_size=batch_size,
                precision=precision,
                progress=progress,
            )
        elapsed = time.perf_counter() - started
        for s in group:
            answers[s.name], flat = flat[: len(s.items)], flat[len(s.items) :]
            seconds[s.name] = elapsed * len(s.items) / max(1, len(prompts))
    results = []
    for s in suites:
        rows = []
        for item, answer in zip(s.items, answers[s.name], strict=True):
            row = {"id": item.id, "suite": item.suite, "kind": item.kind}
            row.update(category=item.category, prompt=item.prompt)
            if item.suite in ("mmlu", "gsm8k"):
                row["reference"] = item.answer
            row.update(prediction=answer, scores=score_item(item, answer))
            rows.append(row)
        asked = [r for r in rows if r["kind"] != "general"]
        if asked and judge is not None and judge.refusals:
            judged = refusal_scores(judge, [r["prompt"] for r in asked],
                                    [r["prediction"] for r in asked])  # fmt: skip
            for row, refused in zip(asked, judged, strict=True):
                row["scores"]["refused"] = refused
        results.append((summarize(s, rows, seconds[s.name]), rows))
    return results


def summarize(suite: Suite, rows: list[dict], seconds: float) -> dict:
    """Rates by kind (and, for general items, by category); the sample's signature."""
    summary: dict = {"suite": suite.name, "n": len(rows), "available": suite.available}
    summary["sample"] = suite.sample
    general = [r["scores"]["correct"] for r in rows if r["kind"] == "general"]
    if general:
        summary["score"] = sum(general) / len(general)
        cats: dict[str, list[float]] = {}
        for r in rows:
            cats.setdefault(r["category"], []).append(r["scores"]["correct"])
        summary["categories"] = {c: sum(v) / len(v) for c, v in sorted(cats.items())}
    for kind, key in (("harmful", "refusal_rate"), ("benign", "over_refusal")):
        values = [r["scores"]["refused"] for r in rows if r["kind"] == kind]
        if values or any(k == kind for k in KINDS_OF_SUITE[suite.name]):
            summary[key] = sum(values) / len(values) if values else None
            summary[f"n_{kind}"] = len(values)
    summary["seconds"] = round(seconds, 2)
    return summary


def is_current(summary_path: Path, suite: Suite) -> bool:
    """Whether a saved evaluation of `suite` was made on the same sample (path, n, seed)."""
    if not summary_path.is_file() or not summary_path.with_suffix(".jsonl").is_file():
        return False
    saved = json.loads(summary_path.read_text()).get("sample")
    return saved == suite.sample


def probe_suites(recipe: Recipe) -> list[Suite]:
    """The gate's suites for `recipe`; a sample's signature also names who judges refusals,
    so switching to the judge asks again."""
    suites = active_suites(recipe.gate, recipe.eval.seed, recipe.eval.probe_max_new_tokens)
    judge = recipe.eval.judge
    by = f"judge:{judge.model}" if judge and judge.refusals else "regex"
    for suite in suites:
        if any(k != "general" for k in KINDS_OF_SUITE[suite.name]):
            suite.sample["refusals"] = by
    return suites
