"""`tuneloop advise`: should this task be fine-tuned at all? Measured, before any training.

1. every rung of the ladder answers the held-out split (the same split `train` will hold out),
   scored with the task's metrics, each with a confidence interval, prompt tokens, p50/p95
   latency and cost per 1,000 requests (`cost.py`): the base model's prompting rungs
   (zero-shot, few-shot, retrieval few-shot, and RAG over task.knowledge), and the hosted
   models and recorded answers of eval.endpoints and eval.recorded;
2. the data lint's red flags;
3. the cost of training on this hardware, from a few measured steps;
4. the base model's license;
5. a recommendation with its reasons: *fix the data first* (lint errors, or too little data to
   train on), *prompting is enough* (a prompting rung of the base model reaches `task.target`),
   or *fine-tuning is expected to help* (every such rung falls short and there is data to learn
   from); a hosted or recorded rung is the bar a tuned model must reach, with its cost beside
   the local rungs';
6. the gate's power: how many held-out items the gate needs, at `gate.power`, to show that a
   tuned model reaching `task.target` beats the best rung by `gate.margin`, and what gain the
   held-out items on hand can show. Said before training, so the held-out set can grow first.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from tuneloop.config import Recipe
from tuneloop.data.lint import Finding, format_findings, lint_examples
from tuneloop.evaluate.cost import money, rung_table, seconds
from tuneloop.evaluate.ladder import rung_of
from tuneloop.evaluate.license import LicenseInfo, model_license
from tuneloop.files import write_json

FIX_DATA = "fix the data first"
PROMPTING = "prompting is enough"
FINE_TUNE = "fine-tuning is expected to help"
MIN_TRAIN = 20  # below this there is nothing to fine-tune on


@dataclass
class Advice:
    recipe: str
    model: str
    n_train: int
    n_heldout: int
    task: str
    metric: str
    target: float
    rungs: dict[str, dict]
    findings: list[Finding]
    estimate: dict | None
    license: LicenseInfo
    verdict: str
    reasons: list[str]
    power: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def recommend(
    rungs: dict[str, dict], metric: str, target: float, findings: list[Finding], n_train: int
) -> tuple[str, list[str]]:
    """The verdict and its reasons from the rung summaries and the lint findings.

    >>> rungs = {"zero-shot": {"exact_match": 0.1, "ci": {"exact_match":
    ...              {"low": 0.05, "high": 0.2}}},
    ...          "few-shot": {"exact_match": 0.95, "ci": {"exact_match":
    ...              {"low": 0.9, "high": 0.98}}}}
    >>> recommend(rungs, "exact_match", 0.9, [], 300)[0]
    'prompting is enough'
    """
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        codes = sorted({f.code for f in errors})
        return FIX_DATA, [
            f"the data lint found {len(errors)} error(s) ({', '.join(codes)}): a model trained "
            "or judged on this data would mislead you; fix them and run advise again"
        ]
    if n_train < MIN_TRAIN:
        return FIX_DATA, [
            f"only {n_train} training examples: too few to fine-tune on; "
            f"collect at least {MIN_TRAIN}, ideally several hundred"
        ]
    best = max(rungs, key=lambda r: rungs[r][metric])
    score, ci = rungs[best][metric], rungs[best]["ci"][metric]
    shown = f"{best} scores {score:.1%} {metric} [{ci['low']:.1%}, {ci['high']:.1%}]"
    if score >= target:
        reasons = [
            f"{shown}, at or above the target of {target:.0%} (task.target): use that prompt; "
            "a tuned model has little left to win, and the gate would ask it to beat this rung"
        ]
        if ci["low"] < target:
            reasons.append(
                f"the interval reaches below the target: add held-out items to be "
                f"sure ({rungs[best]['n']} evaluated)"
            )
        return PROMPTING, reasons
    reasons = [
        f"the best prompting rung, {shown}, falls short of the target of {target:.0%} "
        f"(task.target) by {target - score:.1%}"
    ]
    warnings = [f for f in findings if f.severity == "warning"]
    if any(f.code == "too-few-examples" for f in warnings):
        reasons.append(f"with {n_train} training examples expect a modest gain; more data helps")
    else:
        reasons.append(f"{n_train} training examples give a tuned model something to learn")
    if warnings:
        reasons.append(f"review the {len(warnings)} lint warning(s) before training")
    return FINE_TUNE, reasons


def gate_power(
    best: str, score: float, target: float, margin: float, n: int,
    confidence: float = 0.95, power: float = 0.8,
) -> dict:  # fmt: skip
    """Held-out items the gate's task condition needs, before any training.

    The gate passes when the CI of tuned minus the best rung lies above `margin`. If training
    reaches `target`, the gain is `target - score`; the items that show it at `power` follow
    from `stats.items_for_power`, with the paired spread bounded by `stats.paired_sd_bound`
    (conservative: real pairs vary less). `detectable_gain` is the smallest gain the `n` items
    on hand can show at that power.

        >>> p = gate_power("few-shot", 0.70, 0.90, 0.02, 64)
        >>> p["items_needed"], round(p["detectable_gain"], 3)
        (73, 0.21)
    """
    from tuneloop.evaluate.stats import items_for_power, paired_sd_bound

    gain = target - score
    sd = paired_sd_bound(score, min(1.0, max(score, target)))
    needed = items_for_power(gain, sd, margin, confidence, power) if gain > margin else None
    detectable = None
    for g in range(1, 1001 - int(score * 1000)):  # the smallest gain, in 0.1-point steps
        gain_g = g / 1000
        if (m := items_for_power(gain_g, paired_sd_bound(score, score + gain_g), margin,
                                 confidence, power)) is not None and m <= n:  # fmt: skip
            detectable = gain_g
            break
    return {
        "best_rung": best, "best_score": score, "target": target, "margin": margin,
        "gain_to_target": gain, "items_needed": needed, "n_heldout": n,
        "detectable_gain": detectable, "power": power, "confidence": confidence,
    }  # fmt: skip


def match_power(
    summary: dict, metric: str, tolerance: float, n: int, confidence: float, power: float
) -> dict:
    """Held-out items the gate's match condition needs (gate.match): a tuned model exactly as
    good as the rung shows it is no worse than `tolerance` below it at `power` with this many
    (conservative, as in `gate_power`: two systems that err on the same items need fewer).

        >>> match_power({"rung": "gpt", "exact_match": 0.8}, "exact_match", 0.05, 200, 0.95, 0.8)
        {'rung': 'gpt', 'score': 0.8, 'tolerance': 0.05, 'items_needed': 1005, 'n_heldout': 200}
    """
    from tuneloop.evaluate.stats import items_for_power, paired_sd_bound

    score = summary[metric]
    sd = paired_sd_bound(score, score)
    needed = items_for_power(0.0, sd, -tolerance, confidence, power)
    return {"rung": summary["rung"], "score": score, "tolerance": tolerance,
            "items_needed": needed, "n_heldout": n}  # fmt: skip


def hosted_reasons(rungs: dict[str, dict], metric: str, recipe: Recipe) -> list[str]:
    """What the hosted and recorded rungs mean for the decision: the bar, and its price."""
    reasons = []
    for name, s in rungs.items():
        if s["asks"] not in ("endpoint", "recorded"):
            continue
        ci = s["ci"][metric]
        cost = s["cost"]
        priced = f"{money(cost['cost_per_1k'])} per 1,000 requests" + (
            f" ({cost['cost_note']})" if cost["cost_note"] else ""
        )
        reasons.append(
            f"{name} ({s['answered_by']}) scores {s[metric]:.1%} [{ci['low']:.1%}, "
            f"{ci['high']:.1%}] at {priced}, p50 latency {seconds(cost['latency_p50_s'])}: "
            + (
                f"the gate asks the tuned model to match it within "
                f"{recipe.gate.match.tolerance * 100:.1f} points (gate.match)"
                if recipe.gate.match and recipe.gate.match.rung == name
                else "to replace it, a tuned model must match it; set gate.match to decide so"
            )
        )
    return reasons


def knowledge_reasons(zero: list[dict], rag: list[dict], metric: str, recipe: Recipe) -> list[str]:
    """What RAG's gain over zero-shot says, when a paired test shows one: the answers live in
    the documents, which a tuned model never reads."""
    from tuneloop.evaluate.stats import paired_test

    ev = recipe.eval
    a = [i["scores"][metric] for i in zero]
    b = [i["scores"][metric] for i in rag]
    t = paired_test(a, b, 0.0, ev.confidence, ev.bootstrap, ev.seed)
    if t.status != "pass":
        return []
    return [
        f"rag beats zero-shot by {t.estimate * 100:+.1f} points [{t.low * 100:+.1f}, "
        f"{t.high * 100:+.1f}] ({t.test}): the answers are in your documents. Fine-tuning "
        "teaches the facts of its training items, not of documents it never saw; keep retrieval "
        "for knowledge, fine-tune for format and behaviour, and gate the tuned model against "
        "rag (gate.rungs)"
    ]


def power_sentence(p: dict) -> str:
    """The gate's power in words, for the advice and its reasons."""
    head = (
        f"reaching the target of {p['target']:.0%} from {p['best_rung']}'s "
        f"{p['best_score']:.1%} is a gain of {p['gain_to_target'] * 100:.1f} points"
    )
    if p["items_needed"] is None:
        head = (
            f"{p['best_rung']} scores {p['best_score']:.1%}: a tuned model that reaches the "
            f"target of {p['target']:.0%} would not beat it by the gate's margin of "
            f"{p['margin'] * 100:.1f} points (gate.margin)"
        )
    else:
        head += (
            f"; showing it clears the margin of {p['margin'] * 100:.1f} points at "
            f"{p['power']:.0%} power needs about {p['items_needed']} held-out items "
            f"(you have {p['n_heldout']})"
        )
    if p["detectable_gain"] is not None:
        head += (
            f"; with {p['n_heldout']} the gate can show gains of about "
            f"{p['detectable_gain'] * 100:.1f} points or more"
        )
    else:
        head += f"; with {p['n_heldout']} no gain over this rung can be shown"
    if m := p.get("match"):
        head += (
            f". Matching {m['rung']} within {m['tolerance'] * 100:.1f} points (gate.match) at "
            f"{p['power']:.0%} power needs about {m['items_needed']} held-out items if the "
            f"tuned model is as good as it (you have {m['n_heldout']})"
        )
    return head


def advise(recipe: Recipe, progress: bool = True, measure_steps: int = 3) -> Advice:
    """Score the prompting rungs, lint, measure training cost, read the license, recommend."""
    import torch

    from tuneloop.data.prepare import load_datasets
    from tuneloop.evaluate.estimate import measure_training
    from tuneloop.evaluate.run import evaluate_rung, load_knowledge_of, task_kind
    from tuneloop.evaluate.scoring import primary_metric
    from tuneloop.models.load import load
    from tuneloop.train.loop import resolve_precision

    data = load_datasets(recipe)
    heldout = data.heldout[: recipe.eval.max_items] if recipe.eval.max_items else data.heldout
    findings = lint_examples(data.train, data.heldout)
    kind = task_kind(recipe, heldout)
    metric = primary_metric(kind, recipe.task.metric_name)
    model, tokenizer, source = load(
        recipe.model.name, recipe.model.trust_remote_code, recipe.model.chat_template
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    precision = resolve_precision(recipe.train.precision, device)
    specs = [rung_of(name, recipe) for name in recipe.rung_names()]
    answers: dict[str, list[dict]] = {}
    knowledge = load_knowledge_of(recipe) if any(r.prompting == "rag" for r in specs) else None
    rungs = {}
    for spec in specs:
        result = evaluate_rung(model, tokenizer, spec, heldout, recipe, precision, progress,
                               data.train, knowledge)  # fmt: skip
        rungs[spec.name] = result.summary
        answers[spec.name] = result.items
    estimate = None
    if measure_steps > 0:
        estimate = measure_training(
            model, tokenizer, data.train, recipe, measure_steps, device, source
        )
    local = {name: s for name, s in rungs.items() if s["asks"] == "base"}
    verdict, reasons = recommend(local, metric, recipe.task.target, findings, len(data.train))
    reasons += hosted_reasons(rungs, metric, recipe)
    if "rag" in answers:
        reasons += knowledge_reasons(answers["zero-shot"], answers["rag"], metric, recipe)
    best = max(local, key=lambda r: local[r][metric])
    gate, ev = recipe.gate, recipe.eval
    power = gate_power(best, rungs[best][metric], recipe.task.target, gate.margin,
                       len(heldout), ev.confidence, gate.power)  # fmt: skip
    if gate.match is not None:
        power["match"] = match_power(rungs[gate.match.rung], metric, gate.match.tolerance,
                                     len(heldout), ev.confidence, gate.power)  # fmt: skip
    if verdict == FINE_TUNE and (
        power["items_needed"] is None or power["items_needed"] > len(heldout)
    ):
        reasons.append(f"the held-out set is small for the gate: {power_sentence(power)}")
    lic = model_license(recipe.model.name, source.path)
    if lic.restrictive:
        reasons.append(
            f"the base model's license ({lic.license}) needs a look before you ship: {lic.note}"
        )
    advice = Advice(
        recipe.name,
        recipe.model.name,
        len(data.train),
        len(heldout),
        kind,
        metric,
        recipe.task.target,
        rungs,
        findings,
        estimate,
        lic,
        verdict,
        reasons,
        power,
    )
    write_json(advice_path(recipe.workspace / "advice", recipe.name), advice.to_dict())
    return advice


def advice_path(folder, name: str):
    """`<time>-<recipe>.json` in `folder`, `-2`, `-3`... added for advice given in the same
    second: an earlier advice is never overwritten."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = folder / f"{stamp}-{name}.json", 1
    while path.exists():
        n += 1
        path = folder / f"{stamp}-{name}-{n}.json"
    return path


def _gib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**30:.2f} GiB"


def format_advice(a: Advice) -> str:
    lines = [
        f"advice for `{a.recipe}` on {a.model}: {a.n_train} train / {a.n_heldout} held-out "
        f"items, task {a.task}, metric {a.metric}",
        "",
        "ladder (held-out items; cost per 1,000 requests):",
    ]
    lines += ["  " + row for row in rung_table(a.rungs, a.metric)]
    notes = sorted(
        {note for s in a.rungs.values() if (note := (s.get("cost") or {}).get("cost_note"))}
    )
    lines += [f"  cost n/a: {note}" for note in notes]
    for name, s in a.rungs.items():
        if hit := (s.get("retrieval") or {}).get("hit_rate"):
            lines.append(
                f"  {name}: the passage that answers the item was retrieved for "
                f"{hit['rate']:.1%} of the {hit['named']} items that name it (top "
                f"{s['retrieval']['k']})"
            )
    lines += ["", "data lint:", "  " + format_findings(a.findings).replace("\n", "\n  ")]
    if a.estimate:
        e = a.estimate
        lines += [
            "",
            f"training cost on this hardware ({e['device']}, {e['precision']}, measured "
            f"over {e['measured_steps']} {e['method_measured']} steps of batch "
            f"{e['batch_size']}):",
            f"  {e['seconds_per_micro_batch']:.2f} s per batch, {e['tokens_per_s']:.0f} "
            f"tokens/s; {e['optimizer_steps']} steps planned -> about "
            f"{e['estimated_seconds'] / 60:.1f} min; peak memory "
            f"{_gib(e['peak_memory_bytes'])} ({e['peak_memory_scope']})",
        ]
        if e["method_measured"] != e["method_planned"]:
            lines.append(
                f"  the recipe trains with method `{e['method_planned']}`, not measured here: "
                f"{e.get('method_note') or 'another method was measured'}"
            )
    flag = "RESTRICTIVE: " if a.license.restrictive else ""
    lines += ["", f"license: {a.license.license} ({a.license.source}); {flag}{a.license.note}"]
    if a.power:
        lines += ["", "gate power (task condition):", f"  {power_sentence(a.power)}"]
    lines += ["", f"recommendation: {a.verdict}"] + [f"  - {r}" for r in a.reasons]
    return "\n".join(lines)
