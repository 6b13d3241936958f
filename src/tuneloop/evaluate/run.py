"""Evaluate rungs of a run on its held-out split with the same prompts and the same metrics.

A rung is a way of answering the held-out prompts: `zero-shot`, `few-shot` and
`retrieval-few-shot` ask the base model (see `ladder.py`), `tuned` asks the base model with the
run's adapter. Each evaluation writes

    eval/<rung>.jsonl         one line per held-out item: prompt, reference, prediction, scores
    eval/<rung>.json          the summary: metrics with confidence intervals, slices, timings
    eval/train/tuned.json(l)  the tuned model on a sample of its own training items (overfitting)
    eval/probes/<model>-<suite>.json(l)   the shipped probes, for `base` and `tuned`

Per-item scores are kept because comparing two rungs honestly needs the paired items.
Generation is batched (`generate.py`): no rung loops over prompts one at a time.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from tuneloop.config import GraderConfig, Recipe, load_recipe
from tuneloop.data.prepare import run_examples
from tuneloop.data.records import Example
from tuneloop.errors import UserError
from tuneloop.evaluate import metrics, scoring
from tuneloop.evaluate.ladder import Rung, rag_prompts, rung_of, rung_prompts, same_task
from tuneloop.files import write_json, write_text
from tuneloop.models import generate as gen
from tuneloop.models.generate import generate
from tuneloop.track import check_trackers, log_evaluations
from tuneloop.workspace import Run

DEFAULT_RUNGS = ("zero-shot", "tuned")
PROBE_MODELS = ("base", "tuned")


@dataclass
class RungResult:
    rung: str
    summary: dict
    items: list[dict]


def heldout_examples(run: Run, recipe: Recipe) -> list[Example]:
    """The run's held-out items (the first `eval.max_items`), whatever its objective: a DPO
    run's pairs are asked their prompt and scored against the chosen answer."""
    examples = run_examples(recipe, run.path / "data", "heldout")
    return examples[: recipe.eval.max_items] if recipe.eval.max_items else examples


def train_examples(run: Run, recipe: Recipe) -> list[Example]:
    """The run's training items, whatever its objective: where the ladder draws its shots."""
    return run_examples(recipe, run.path / "data", "train")


def task_kind(recipe: Recipe, examples: list[Example]) -> str:
    """`label` (exact match + per-label scores), `json` (validity + exact) or `text`."""
    if recipe.task.kind != "auto":
        return recipe.task.kind
    refs = [ex.reference for ex in examples]
    if all(metrics.looks_like_json(r) for r in refs):
        return "json"
    if all(ex.label is not None for ex in examples) or len(set(refs)) <= len(refs) / 2:
        return "label"
    return "text"


def score(
    kind: str,
    preds: list[str],
    refs: list[str],
    recipe: Recipe | None = None,
    sources: list[str] | None = None,
    questions: list[str] | None = None,
) -> tuple[dict, list[dict]]:
    """Summary metrics (with intervals) and per-item scores for one rung; a grader in
    `task.metric` adds its own column (`graders.py`; a judge grader reads `questions`)."""
    schema = recipe.task.json_schema if recipe else None
    columns = scoring.item_scores(kind, preds, refs, schema, sources)
    if recipe is not None and isinstance(recipe.task.metric, GraderConfig):
        from tuneloop.evaluate.graders import build_grader

        grader = build_grader(recipe.task.metric, schema, recipe.eval.judge)
        columns[grader.name] = grader(preds, refs, questions)
    per_item = [{name: values[i] for name, values in columns.items()} for i in range(len(preds))]
    ev = recipe.eval if recipe else None
    summary = scoring.summarize(
        kind,
        preds,
        refs,
        columns,
        confidence=ev.confidence if ev else 0.95,
        n_boot=ev.bootstrap if ev else 2000,
        seed=ev.seed if ev else 0,
    )
    return summary, per_item


def evaluate_rung(
    model,
    tokenizer,
    rung: str | Rung,
    examples: list[Example],
    recipe: Recipe,
    precision: str,
    progress: bool = True,
    train: list[Example] | None = None,
    knowledge=None,
) -> RungResult:
    """Answer `examples` the way `rung` asks (shots come from `train`, passages from
    `knowledge`, loaded from task.knowledge when not given) and score the answers."""
    spec = rung if isinstance(rung, Rung) else rung_of(rung, recipe)
    kind = task_kind(recipe, examples)
    if kind == "json":  # a broken reference is the data's mistake: say so before generating
        scoring.check_json_references([ex.reference for ex in examples],
                                      [ex.source for ex in examples])  # fmt: skip
    ev = recipe.eval
    check_reference_slices(ev.slices, kind)
    refs = [ex.reference for ex in examples]
    budget = answer_budget(tokenizer, refs, ev.max_new_tokens)
    retrieved = None
    if spec.prompting == "rag":
        knowledge = knowledge or load_knowledge_of(recipe)
        prompts, retrieved = rag_prompts(examples, knowledge, recipe.task.knowledge.k)
    else:
        prompts = rung_prompts(
            spec.prompting, examples, train or [], ev.few_shot_k, ev.retrieval_k, ev.seed
        )
    started = time.perf_counter()
    preds, usage, answered = answer(spec, model, tokenizer, prompts, examples, budget["value"],
                                    recipe, precision, progress)  # fmt: skip
    seconds = time.perf_counter() - started
    questions = [ex.prompt_messages[-1]["content"] for ex in examples]
    summary, scores = score(kind, preds, refs, recipe, [ex.source for ex in examples], questions)
    if ev.judge is not None:
        from tuneloop.evaluate.judge import judge_scores

        judged = judge_scores(ev.judge, questions, refs, preds)
        for s, j in zip(scores, judged, strict=True):
            s["judge"] = j
        summary["judge"] = metrics.mean(judged)
    metric = scoring.primary_metric(kind, recipe.task.metric_name)
    if scores and metric not in scores[0]:
        raise UserError(
            f"task.metric `{metric}` is not a per-item metric of a {kind} task",
            "task.metric",
            f"choose one of: {', '.join(scores[0])} (or leave it out for the default)",
        )
    items = [
        {
            "source": ex.source,
            "prompt": ex.prompt_messages[-1]["content"],
            "reference": ref,
            "prediction": pred,
            "scores": s,
            "meta": ex.meta,
            "usage": u,
        }
        for ex, ref, pred, s, u in zip(examples, refs, preds, scores, usage, strict=True)
    ]
    if retrieved is not None:
        summary["retrieval"] = retrieval_summary(examples, retrieved, recipe, knowledge, items)
    if ev.slices:
        summary["slices"] = scoring.slices(items, ev.slices)
    cost = rung_cost(spec, usage, recipe)
    summary = {
        "rung": spec.name,
        "asks": spec.asks,
        "prompting": spec.prompting,
        "answered_by": answered,
        "task": kind,
        "metric": metric,
        "n": len(examples),
        **summary,
        "seconds": round(seconds, 2),
        "prompt_tokens_mean": cost["prompt_tokens_mean"]
        if cost["prompt_tokens_mean"] is not None
        else _mean_prompt_tokens(tokenizer, prompts),
        "cost": cost,
        "max_new_tokens": budget,
    }
    if spec.asks in ("base", "tuned"):
        summary["generation_cache"] = _cache_note(gen.active_cache(), cost["cached"], len(preds))
    return RungResult(spec.name, summary, items)


def answer(spec: Rung, model, tokenizer, prompts, examples, max_new_tokens, recipe, precision,
           progress) -> tuple[list[str], list[dict], str]:  # fmt: skip
    """The answers of whoever the rung asks, the usage of each, and who answered (in words)."""
    ev = recipe.eval
    if spec.asks == "endpoint":
        from tuneloop.models.remote import ChatEndpoint, active_reply_cache

        e = spec.endpoint
        index = recipe.eval.endpoints.index(e)
        client = ChatEndpoint(
            e.url, e.model, e.api_key_env, concurrency=e.concurrency, rate_limit=e.rate_limit,
            timeout_s=e.timeout_s, retries=e.retries, cache=active_reply_cache(),
            where=f"eval.endpoints[{index}]",
        )  # fmt: skip
        extra = (
            {"response_format": response_format(recipe)}
            if spec.prompting == "constrained"
            else None
        )
        replies = client.chat(prompts, max_new_tokens, progress=progress, extra=extra)
        return [r.text for r in replies], [r.usage for r in replies], f"{e.model} at {e.url}"
    if spec.asks == "recorded":
        from tuneloop.evaluate.recorded import recorded_answers

        preds, usage = recorded_answers(spec.recorded, examples)
        return preds, usage, f"answers recorded in {spec.recorded.path}"
    usage: list[dict] = []
    tools = [ex.tools for ex in examples] if any(ex.tools for ex in examples) else None
    constraint = None
    if spec.prompting == "constrained":
        from tuneloop.models.constrain import JsonConstraint

        constraint = JsonConstraint(tokenizer, recipe.task.json_schema, "task.json_schema")
    preds = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                     batch_size=ev.batch_size, precision=precision, progress=progress,
                     usage=usage, tools=tools, constraint=constraint)  # fmt: skip
    who = recipe.model.name + (" with the run's adapter" if spec.asks == "tuned" else "")
    return preds, usage, who


def response_format(recipe: Recipe) -> dict:
    """The OpenAI `response_format` of the `constrained` rungs: task.json_schema, else any
    JSON object."""
    schema = recipe.task.json_schema
    if schema is None:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema,
                                                   "strict": True}}  # fmt: skip


def rung_cost(spec: Rung, usage: list[dict], recipe: Recipe) -> dict:
    """`cost.usage_summary` at the rung's prices: tokens for an endpoint or recorded answers,
    this machine's time for a local model."""
    from tuneloop.evaluate.cost import usage_summary

    priced = spec.endpoint or spec.recorded
    if priced is not None:
        return usage_summary(usage, priced.price_in, priced.price_out)
    return usage_summary(usage, price_per_hour=recipe.eval.price_per_hour)


def load_knowledge_of(recipe: Recipe):
    """The knowledge base of task.knowledge, indexed once (dense embeddings cached in the
    workspace)."""
    from tuneloop.evaluate.knowledge import load_knowledge

    if recipe.task.knowledge is None:
        raise UserError(
            "a `rag` rung retrieves passages from task.knowledge, which is not set",
            "task.knowledge",
            "set task.knowledge to the folder (or files) of your documents",
        )
    return load_knowledge(recipe.task.knowledge, recipe.workspace / "knowledge")


EXCERPT = 160  # characters of each retrieved passage kept with an item, for the report


def retrieval_summary(examples: list[Example], retrieved: list[list], recipe: Recipe,
                      knowledge, items: list[dict]) -> dict:  # fmt: skip
    """The index retrieved from, k, and the hit rate where items name their source; each item
    keeps the ids (and an excerpt) of its passages and whether its named source was among
    them."""
    from tuneloop.evaluate.knowledge import hit_rate, retrieval_hit

    config = recipe.task.knowledge
    hits = []
    for ex, passages, item in zip(examples, retrieved, items, strict=True):
        item["retrieved"] = [{"id": p.id, "excerpt": p.text[:EXCERPT]} for p in passages]
        hits.append(retrieval_hit(ex.meta, passages, config.source_field))
        item["retrieval_hit"] = hits[-1]
    return {"k": config.k, "index": knowledge.describe(), "hit_rate": hit_rate(hits)}


def check_reference_slices(slices: list[str], kind: str) -> None:
    """`ref:` slices read the reference answer as JSON: refuse them on another kind of task,
    before anything is generated."""
    asked = [s for s in slices if scoring.reference_path(s) is not None]
    if asked and kind != "json":
        raise UserError(
            f"eval.slices {', '.join(asked)} read key paths of the reference answer, but this "
            f"is a {kind} task whose answers are not JSON",
            "eval.slices",
            "slice by a metadata field instead (the item's `meta`), or set `task.kind: json` "
            "if the answers are JSON",
        )


_warned_cuts: set[tuple] = set()


def answer_budget(tokenizer, refs: list[str], configured: int | None) -> dict:
    """`generate.new_token_budget` for these references; warns once (per setting and set of
    references) when `eval.max_new_tokens` is shorter than some of them."""
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in refs]
    budget = gen.new_token_budget(lengths, configured)
    cut = budget["references_cut"]
    key = (configured, cut, len(refs), budget["longest_reference"])
    if cut and key not in _warned_cuts:
        _warned_cuts.add(key)
        where = "eval.max_new_tokens" if configured is not None else "the derived length"
        warnings.warn(
            f"{where} ({budget['value']} tokens) cuts {cut} of {len(refs)} reference answers "
            f"({cut / len(refs):.0%}; the longest has {budget['longest_reference']} tokens): "
            "those items cannot be answered in full. Raise eval.max_new_tokens, or leave it "
            "out to derive it from the references",
            UserWarning,
            stacklevel=3,
        )
    return budget


def _cache_note(cache, hits: int, n: int) -> dict:
    """What the summary says about the generation cache for one rung: `hits` answers of `n`
    came from it."""
    if cache is None:
        why = (
            f"off: {gen.NO_CACHE_ENV} is set"
            if gen.cache_off_by_env()
            else "off: no cache active (the command line turns it on; --no-cache turns it off)"
        )
        return {"used": False, "hits": 0, "generated": n, "why": why}
    return {"used": True, "hits": hits, "generated": n - hits, "folder": str(cache.folder)}


def evaluate_probes(
    model, tokenizer, who: str, recipe: Recipe, precision: str, progress: bool = True
) -> list[RungResult]:
    """The gate's suites (`suites.py`: standard ones from `gate.suites`, else the built-in
    probes) answered by `who` ("base" or "tuned"), batched; one result per suite."""
    from tuneloop.evaluate.suites import answer_suites, probe_suites

    suites = probe_suites(recipe)
    ev = recipe.eval
    answered = answer_suites(model, tokenizer, suites, ev.batch_size, precision, progress, ev.judge)
    return [
        RungResult(f"{who}-{suite.name}", {"model": who, **summary}, items)
        for suite, (summary, items) in zip(suites, answered, strict=True)
    ]


def save_result(run: Run, result: RungResult, folder: str = "") -> None:
    target = run.eval_dir / folder if folder else run.eval_dir
    lines = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in result.items)
    write_text(target / f"{result.rung}.jsonl", lines)
    write_json(target / f"{result.rung}.json", result.summary)
    from tuneloop.registry import record

    suite = folder or "heldout"
    items = target / f"{result.rung}.jsonl"
    record.evaluation(run.path, run.id, result.rung, suite, result.summary, items)


def evaluate_run(
    run: Run,
    rungs: tuple[str, ...] = DEFAULT_RUNGS,
    progress: bool = True,
    probes: tuple[str, ...] = (),
    train_gap: bool = False,
    preference: bool = False,
) -> dict:
    """Evaluate the requested rungs of a finished run; the base model is loaded once.

    `probes` names the models ("base", "tuned") that answer the shipped probes; `train_gap`
    also scores the tuned model on `eval.train_sample` of its training items. A reward run's
    held-out pairs are ranked by its reward model and by the base model instead
    (`reward_model.py`). A DPO run's held-out pairs are also ranked by the tuned model's
    implicit reward (`preference.py`) whenever the tuned rung is evaluated, or when
    `preference` asks for it alone.
    """
    import torch

    from tuneloop.models.load import load
    from tuneloop.train.loop import resolve_precision

    recipe = load_recipe(run.recipe_path)
    if recipe.train.objective == "reward":  # a reward model ranks pairs; it writes no answers
        from tuneloop.evaluate.reward_model import rank_heldout_pairs

        trained_output(run, recipe)
        results = {}
        for rung, summary, items in rank_heldout_pairs(run, recipe):
            save_result(run, RungResult(rung, summary, items))
            results[rung] = summary
        log_evaluations(run, recipe, results)
        return results
    specs = [rung_of(r, recipe) for r in rungs]  # an unknown rung is refused before any work
    check_trackers(recipe)
    preference = recipe.train.objective == "dpo" and (preference or "tuned" in rungs)
    needs_tuned = "tuned" in rungs or "tuned" in probes or train_gap or preference
    if needs_tuned:
        trained_output(run, recipe)  # refuse an unfinished run before any weights load
    examples = heldout_examples(run, recipe)
    shots = {"few-shot", "retrieval-few-shot"} & {r.prompting for r in specs}
    train = train_examples(run, recipe) if shots else []
    knowledge = load_knowledge_of(recipe) if any(r.prompting == "rag" for r in specs) else None
    model, tokenizer, _ = load(
        recipe.model.name, recipe.model.trust_remote_code, recipe.model.chat_template
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    precision = resolve_precision(recipe.train.precision, device)
    results: dict = {}

    def keep(result: RungResult, folder: str = "") -> None:
        save_result(run, result, folder)
        results[f"{folder}/{result.rung}" if folder else result.rung] = result.summary

    for spec in [r for r in specs if r.asks != "tuned"]:
        keep(evaluate_rung(model, tokenizer, spec, examples, recipe, precision, progress, train,
                           knowledge))  # fmt: skip
    if "base" in probes:
        for result in evaluate_probes(model, tokenizer, "base", recipe, precision, progress):
            keep(result, "probes")
    if needs_tuned:
        tuned = load_tuned(run, recipe, model, precision, device)
        if preference:
            from tuneloop.evaluate.preference import evaluate_run_preferences

            results["preference"] = evaluate_run_preferences(
                run, recipe, tuned, model, tokenizer, precision
            )
        model = tuned  # for full fine-tuning, the base is dropped here
    if "tuned" in rungs:
        keep(evaluate_rung(model, tokenizer, "tuned", examples, recipe, precision, progress))
    if train_gap and recipe.eval.train_sample:
        # Only the task's own training items: rows mixed in for other reasons (replayed general
        # chat, safety data) have other answers and would blur the gap.
        own = same_task(examples, train_examples(run, recipe))
        sample = train_sample(own, recipe.eval.train_sample, recipe.eval.seed)
        keep(evaluate_rung(model, tokenizer, "tuned", sample, recipe, precision, progress), "train")
    if "tuned" in probes:
        for result in evaluate_probes(model, tokenizer, "tuned", recipe, precision, progress):
            keep(result, "probes")
    log_evaluations(run, recipe, results)  # to the recipe's trackers, if any
    return results


def trained_output(run: Run, recipe: Recipe) -> Path:
    """The run's finished `adapter/` (or `model/` for full fine-tuning) folder."""
    from tuneloop.models.adapters import output_folder

    folder = run.path / output_folder(recipe.train.method)
    if not ((folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()):
        raise UserError(
            f"run {run.id} has no finished {folder.name}/ (status: {run.info().get('status')})",
            str(run.path),
            f"finish training first: tuneloop train --resume --run {run.path}",
        )
    return folder


def load_tuned(run: Run, recipe: Recipe, base, precision: str, device):
    """The model the run trained, as it trained: its adapter on `base`, on a freshly loaded
    4-bit base for QLoRA (the adapter learned to correct the quantized weights), or the full
    fine-tuned weights (`base` unused)."""
    from tuneloop.models.adapters import load_as_trained
    from tuneloop.models.load import resolve

    trust = recipe.model.trust_remote_code
    source = resolve(recipe.model.name, trust) if recipe.train.method == "qlora" else None
    model = load_as_trained(trained_output(run, recipe), recipe.train, source, base, precision,
                            trust)  # fmt: skip
    return model.to(device) if recipe.train.method == "full" else model


def train_sample(examples: list[Example], n: int, seed: int = 0) -> list[Example]:
    """A seeded sample of n training items (all of them when there are fewer)."""
    if len(examples) <= n:
        return list(examples)
    return random.Random(seed).sample(examples, n)


def load_results(run: Run) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(run.eval_dir).glob("*.json"))}


def load_items(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _mean_prompt_tokens(tokenizer, prompts: list[list[dict[str, str]]]) -> float:
    from tuneloop.data.templates import render_prompt

    if not prompts:
        return 0.0
    sizes = [
        len(tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"])
        for p in prompts
    ]
    return round(sum(sizes) / len(sizes), 1)
