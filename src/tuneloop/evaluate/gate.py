"""The ship gate: `tuneloop gate RUN` passes only if the tuned model clearly wins and nothing
else broke. Every condition is a paired test on the same items, with its interval (thresholds in
the recipe's `gate:` section):

1. task (superiority): tuned minus the best ladder rung, item by item, with the whole CI above
   `margin`; or, with `gate.match` (the "cheaper model, same quality" decision), task
   (non-inferiority): tuned minus the named rung (say, the hosted model a team pays for), with
   the whole CI above -tolerance;
2. general (non-inferiority): the general-skill score (standard suites such as MMLU, GSM8K and
   IFEval, else the built-in probes) may fall by at most `general_drop`: the CI's lower end stays
   above -general_drop. A base that scores within twice that of guessing cannot show a loss, and
   the line says so;
3. safety (non-inferiority): the refusal rate on harmful requests may fall by at most
   `safety_drop`; with `safety_floor` set, the tuned rate must also be above it. A base that
   refuses almost nothing (below `informative_refusal`) cannot show a collapse, and the line
   says so;
4. over-refusal (non-inferiority): refusals of benign look-alikes may rise by at most
   `over_refusal_rise`.

A condition passes when its CI clears its bound, fails when the CI lies wholly on the wrong side,
and is *inconclusive* when the CI straddles it: its line then says how many items would decide
it, and `gate.inconclusive` says whether it counts as a pass (default: fail). The verdict never
rests on a point estimate.

The gap between the tuned model's scores on its training items and on held-out items is
reported too (overfitting), and so are the quality, latency and cost per 1,000 requests of
every rung and of the tuned model (`cost.py`), but they do not decide. Missing evaluations are
run first; the verdict is saved as `gate.json` in the run folder.

A reward model (`train.objective: reward`) writes no answers, so its gate is a ranking one
(`reward_conditions`): its held-out pair accuracy against the base model's own ranking, and
above chance. The probes do not apply to it, and the report says so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from tuneloop.config import GateConfig, load_recipe
from tuneloop.errors import UserError
from tuneloop.evaluate.compare import compare_items, paired_scores
from tuneloop.evaluate.cost import money, rung_table
from tuneloop.evaluate.preference import load_preference
from tuneloop.evaluate.run import evaluate_run, load_items
from tuneloop.evaluate.stats import PairedTest, mean_ci, paired_test
from tuneloop.evaluate.suites import CHANCE, Suite, is_current, probe_suites
from tuneloop.files import write_json
from tuneloop.track import check_trackers, log_gate
from tuneloop.workspace import Run

OVERFIT_WARN = 0.10  # train score above held-out by more than this: say so


@dataclass
class Condition:
    name: str
    status: str  # "pass" | "fail" | "inconclusive"
    passed: bool  # what the gate counts it as (an inconclusive one: gate.inconclusive)
    sentence: str
    numbers: dict = field(default_factory=dict)


@dataclass
class GateReport:
    run: str
    passed: bool
    metric: str
    conditions: list[Condition]
    ladder: dict[str, dict]
    overfit: dict | None = None
    preference: dict | None = None
    costs: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was not tested, and why

    def to_dict(self) -> dict:
        """The report as saved: `reasons` holds each condition as one line (failures first)."""
        lines = [f"{_label(c)} {c.name}: {c.sentence}" for c in self.conditions]
        return {**asdict(self), "reasons": sorted(lines, key=lambda ln: ln.startswith("PASS"))}

    @property
    def failed(self) -> list[Condition]:
        return [c for c in self.conditions if not c.passed]


def _label(c: Condition) -> str:
    return c.status.upper()


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _signed(x: float) -> str:
    """A difference of rates as signed percentage points, e.g. -6.7."""
    return f"{x * 100 + 0.0:+.1f}"


def _pts(x: float) -> str:
    return f"{_signed(x)} points"


def _p(p: float) -> str:
    return f"p = {p:.2g}" if p >= 1e-3 else "p < 0.001"


def needed(run: Run, gate: GateConfig, suites: list[Suite]) -> tuple[tuple, tuple, bool]:
    """The rungs, probe models and train-gap evaluation the gate still lacks for `run`: a probe
    evaluation counts only if it was made on the same sample of every suite."""
    ev = run.eval_dir
    rungs = tuple(r for r in (*gated_rungs(gate), "tuned") if not (ev / f"{r}.jsonl").is_file())
    probes = tuple(
        who
        for who in ("base", "tuned")
        if not all(is_current(ev / "probes" / f"{who}-{s.name}.json", s) for s in suites)
    )
    return rungs, probes, not (ev / "train" / "tuned.jsonl").is_file()


def gated_rungs(gate: GateConfig) -> list[str]:
    """The rungs the task condition reads: the one to match (gate.match), else gate.rungs."""
    return [gate.match.rung] if gate.match else list(gate.rungs)


def tested_numbers(t: PairedTest) -> dict:
    """What every tested condition saves: estimate, CI, bound, test, p-value, items needed."""
    keys = ("estimate", "low", "high", "confidence", "bound", "test", "p_value", "n")
    return {k: getattr(t, k) for k in keys} | {"items_needed": t.items_needed}


def verdict(name: str, t: PairedTest, detail: str, gate: GateConfig, numbers: dict) -> Condition:
    """The condition for a tested change: its sentence ends with what the CI shows."""
    level = f"{t.confidence:.0%}"
    shown = (
        f"{detail}: {_pts(t.estimate)} [{level} CI {_signed(t.low)}, {_signed(t.high)}] "
        f"against a bound of {_pts(t.bound)}, {_p(t.p_value)} ({t.test})"
    )
    status = t.status
    if status == "pass":
        tail = "; the CI lies above the bound."
    elif status == "fail":
        tail = "; the whole CI lies below the bound."
    elif t.items_needed is not None:
        more = max(0, t.items_needed - t.n)
        tail = (
            f"; inconclusive: the CI straddles the bound; about {more} more items needed "
            f"({t.items_needed} in all, {gate.power:.0%} power at the observed change)."
        )
    else:
        tail = (
            "; inconclusive: the CI straddles the bound, and the observed change is on the "
            "wrong side of it, so more items would most likely confirm the failure."
        )
    passed = status == "pass" or (status == "inconclusive" and gate.inconclusive == "pass")
    return Condition(name, status, passed, shown + tail, {**tested_numbers(t), **numbers})


def task_condition(
    ladder: dict[str, list[dict]],
    tuned: list[dict],
    metric: str,
    gate: GateConfig,
    confidence: float,
    n_boot: int,
    seed: int,
) -> tuple[Condition, dict]:
    """Tuned against the best ladder rung on the task's metric, paired item by item."""
    per_rung = {
        rung: compare_items(items, tuned, metric, confidence, n_boot, seed)
        for rung, items in ladder.items()
    }
    best = max(per_rung, key=lambda r: per_rung[r]["paired"]["mean_a"])
    p = per_rung[best]["paired"]
    a, b = paired_scores(ladder[best], tuned, metric)
    t = paired_test(a, b, gate.margin, confidence, n_boot, seed, gate.power)
    detail = (
        f"tuned scores {_pct(p['mean_b'])} {metric} against {_pct(p['mean_a'])} for the best "
        f"ladder rung ({best}) on {p['n']} held-out items, change"
    )
    numbers = {"best_rung": best, "mean_rung": p["mean_a"], "mean_tuned": p["mean_b"]}
    numbers["margin"] = gate.margin
    if "mcnemar" in per_rung[best]:
        numbers["mcnemar_p"] = per_rung[best]["mcnemar"]["p_value"]
    condition = verdict("task", t, detail, gate, numbers)
    if t.status == "fail" or (t.status == "inconclusive" and t.items_needed is None):
        condition.sentence += " Prompting is as good: the tuned model does not pay (gate.margin)."
    return condition, per_rung


def reward_conditions(
    base: list[dict], tuned: list[dict], gate: GateConfig, confidence: float, n_boot: int, seed: int
) -> tuple[list[Condition], dict]:
    """A reward model's gate: its held-out pair accuracy against the base model's ranking
    (log p(chosen) > log p(rejected)) above `gate.margin`, and above chance (0.5)."""
    task, per_rung = task_condition(
        {"zero-shot": base}, tuned, "pair_accuracy", gate, confidence, n_boot, seed
    )
    correct = [i["scores"]["pair_accuracy"] for i in tuned]
    t = paired_test([0.5] * len(correct), correct, 0.0, confidence, n_boot, seed, gate.power)
    detail = (
        f"the reward model ranks chosen above rejected in {_pct(sum(correct) / len(correct))} "
        f"of {len(correct)} held-out pairs; above chance (50%)"
    )
    return [task, verdict("chance", t, detail, gate, {})], per_rung


REWARD_NOTE = (
    "general, safety and over-refusal probes: not applicable, a reward model scores answers and "
    "writes none; gate the model trained with it (train.objective: grpo with task.metric: "
    "{reward_model: <this run>})."
)


def match_condition(
    rung: str, items: list[dict], tuned: list[dict], metric: str, gate: GateConfig,
    confidence: float, n_boot: int, seed: int,
) -> tuple[Condition, dict]:  # fmt: skip
    """Tuned against the rung named in gate.match, paired item by item: non-inferiority, the
    whole CI of tuned minus the rung above -tolerance."""
    tolerance = gate.match.tolerance
    compared = compare_items(items, tuned, metric, confidence, n_boot, seed)
    p = compared["paired"]
    a, b = paired_scores(items, tuned, metric)
    t = paired_test(a, b, -tolerance, confidence, n_boot, seed, gate.power)
    detail = (
        f"tuned scores {_pct(p['mean_b'])} {metric} against {_pct(p['mean_a'])} for {rung} "
        f"(gate.match) on {p['n']} held-out items, change"
    )
    numbers = {"matched_rung": rung, "mean_rung": p["mean_a"], "mean_tuned": p["mean_b"]}
    numbers["tolerance"] = tolerance
    condition = verdict("task", t, detail, gate, numbers)
    condition.sentence += f" Tolerance: gate.match.tolerance = {tolerance * 100:.1f} points."
    return condition, {rung: compared}


# Each probe condition: the items' kind, their score, whether a higher score is better, the
# tolerance's setting and what is measured. Scores are turned so that larger is better before
# testing, which makes every bound -tolerance.
PROBE_CONDITIONS = {
    "general": ("general", "correct", True, "general_drop", "general-skill score"),
    "safety": ("harmful", "refused", True, "safety_drop", "refusals of harmful requests"),
    "over_refusal": (
        "benign",
        "refused",
        False,
        "over_refusal_rise",
        "refusals of benign requests",
    ),
}


def probe_conditions(
    base: list[dict], tuned: list[dict], gate: GateConfig, confidence: float, n_boot: int, seed: int
) -> list[Condition]:
    """General-skill, safety and over-refusal conditions from the per-item answers of base and
    tuned to the same suite items (paired by id)."""
    out = []
    for name, (kind, score, higher_better, setting, what) in PROBE_CONDITIONS.items():
        a_items = [i for i in base if i["kind"] == kind]
        if not a_items:  # every condition is fed (suites.active_suites); a sample lost them
            raise UserError(
                f"no {kind} items were asked, so the {name} condition cannot be tested",
                "gate.suites",
                "sample more items of the suites that feed it, or remove the sample size",
            )
        a, b = paired_scores(a_items, [i for i in tuned if i["kind"] == kind], score)
        if len(a) != len(a_items):
            raise UserError(
                f"the tuned model answered {len(a)} of the base's {len(a_items)} {kind} items",
                "eval/probes",
                "re-evaluate both on the same suites: tuneloop gate RUN --fresh",
            )
        sign = 1.0 if higher_better else -1.0
        tolerance = getattr(gate, setting)
        ta = [x if higher_better else 1 - x for x in a]
        tb = [x if higher_better else 1 - x for x in b]
        t = paired_test(ta, tb, -tolerance, confidence, n_boot, seed, gate.power)
        rate_a, rate_b = sum(a) / len(a), sum(b) / len(b)
        suites = per_suite(a_items, tuned, score)
        detail = (
            f"{what} on {len(a)} items ({describe(suites)}): {_pct(rate_a)} for the base, "
            f"{_pct(rate_b)} tuned; {'change' if higher_better else 'fall of refusals'}"
        )
        numbers = {"base": rate_a, "tuned": rate_b, "tolerance": tolerance, "setting": setting}
        numbers["suites"] = suites
        numbers["direction"] = sign
        condition = verdict(name, t, detail, gate, numbers)
        condition.sentence += f" Tolerance: gate.{setting} = {tolerance * 100:.1f} points."
        if any(name in ("general", "safety") for name in suites):
            condition.sentence += (
                " The built-in probes are few: configure gate.suites for standard suites."
            )
        chance = sum(CHANCE.get(i.get("suite", ""), 0.0) for i in a_items) / len(a_items)
        if name == "general" and rate_a - chance < 2 * tolerance:
            condition.numbers["informative"] = False
            condition.numbers["chance"] = chance
            condition.sentence += (
                f" UNINFORMATIVE: the base scores {_pct(rate_a)}, within twice the tolerance of "
                f"what guessing scores on these items ({_pct(chance)}), so this probe cannot "
                "show a loss of general skills; ask suites the base does well on (the built-in "
                "probes, other suites) or start from a stronger model."
            )
        if name == "safety" and rate_a < gate.informative_refusal:
            condition.numbers["informative"] = False
            condition.sentence += (
                f" UNINFORMATIVE: the base refuses only {_pct(rate_a)} of these requests "
                f"(under gate.informative_refusal = {_pct(gate.informative_refusal)}), so this "
                "probe cannot detect a collapse of safety; set gate.safety_floor to demand a "
                "refusal rate, or start from a safety-aligned model."
            )
        out.append(condition)
        if name == "safety" and gate.safety_floor is not None:
            out.append(floor_condition(b, gate, confidence))
    return out


def floor_condition(refused: list[float], gate: GateConfig, confidence: float) -> Condition:
    """The tuned model's refusal rate against `gate.safety_floor`: its Wilson CI above the floor
    passes, below fails; a one-sided exact binomial test gives the p-value."""
    from scipy.stats import binomtest

    floor = gate.safety_floor
    ci = mean_ci(refused, confidence)
    k, n = int(sum(refused)), len(refused)
    p = float(binomtest(k, n, floor, alternative="greater").pvalue) if 0 < floor < 1 else 1.0
    status = "pass" if ci.low >= floor else "fail" if ci.high < floor else "inconclusive"
    sentence = (
        f"the tuned model refuses {_pct(ci.value)} of {n} harmful requests "
        f"[{confidence:.0%} CI {_pct(ci.low)}, {_pct(ci.high)}]; the floor is {_pct(floor)} "
        f"(gate.safety_floor), {_p(p)} (exact binomial, one-sided)"
        + {"pass": ".", "fail": ": not reached.", "inconclusive": ": the CI straddles it."}[status]
    )
    numbers = {"estimate": ci.value, "low": ci.low, "high": ci.high, "confidence": confidence}
    numbers.update(bound=floor, test="exact binomial, one-sided", p_value=p, n=n)
    numbers.update(items_needed=None, tuned=ci.value, floor=floor)
    passed = status == "pass" or (status == "inconclusive" and gate.inconclusive == "pass")
    return Condition("safety_floor", status, passed, sentence, numbers)


def per_suite(base: list[dict], tuned: list[dict], score: str) -> dict[str, dict]:
    """Base and tuned rates of each suite inside a condition (reported, not tested apart)."""
    tuned_by_id = {i["id"]: i for i in tuned}
    out: dict[str, dict] = {}
    for item in base:
        entry = out.setdefault(item.get("suite", "built-in"), {"n": 0, "base": 0.0, "tuned": 0.0})
        entry["n"] += 1
        entry["base"] += item["scores"][score]
        entry["tuned"] += tuned_by_id[item["id"]]["scores"][score]
    for entry in out.values():
        entry["base"] /= entry["n"]
        entry["tuned"] /= entry["n"]
    return out


def describe(suites: dict[str, dict]) -> str:
    """`mmlu 300: 27.0% -> 26.3%; gsm8k 200: ...`, base -> tuned."""
    parts = []
    for name, s in suites.items():
        label = f"built-in {name} probes" if name in ("general", "safety") else name
        parts.append(f"{label} {s['n']}: {_pct(s['base'])} -> {_pct(s['tuned'])}")
    return "; ".join(parts)


def overfit_gap(train: list[dict], heldout: list[dict], metric: str) -> dict:
    """Tuned model's mean metric on training items minus on held-out items."""
    tr = sum(i["scores"][metric] for i in train) / len(train)
    ho = sum(i["scores"][metric] for i in heldout) / len(heldout)
    gap = tr - ho
    note = f"train {_pct(tr)} vs held-out {_pct(ho)} {metric} ({_pts(gap)})" + (
        "; the model fits its training items much better than new ones: overfitting — "
        "fewer epochs, a lower learning rate or more data"
        if gap > OVERFIT_WARN
        else ""
    )
    return {"train": tr, "heldout": ho, "gap": gap, "n_train": len(train), "note": note}


def run_gate(run: Run, progress: bool = True, fresh: bool = False) -> GateReport:
    """Evaluate whatever is missing, decide, save `gate.json` in the run folder."""
    recipe = load_recipe(run.recipe_path)
    check_trackers(recipe)
    gate, ev = recipe.gate, recipe.eval
    suites = probe_suites(recipe)
    reward = recipe.train.objective == "reward"
    if reward and gate.match:
        raise UserError(
            f"gate.match ({gate.match.rung}) compares answers, and a reward model writes none",
            str(run.recipe_path),
            "remove gate.match: a reward run is gated on its held-out pair ranking",
        )
    rungs, probe_models, train_gap = needed(run, gate, suites)
    if fresh:
        rungs, probe_models, train_gap = (*gated_rungs(gate), "tuned"), ("base", "tuned"), True
    train_gap = train_gap and ev.train_sample > 0
    if reward:  # ranked pairs only (reward_model.py ranks both rungs at once), no probes
        missing = fresh or not (run.eval_dir / "tuned.jsonl").is_file()
        rungs, probe_models, train_gap = ("tuned",) if missing else (), (), False
    preference = recipe.train.objective == "dpo" and (fresh or load_preference(run) is None)
    if rungs or probe_models or train_gap or preference:
        evaluate_run(
            run, rungs, progress, probes=probe_models, train_gap=train_gap, preference=preference
        )

    tuned = load_items(run.eval_dir / "tuned.jsonl")
    metric = json.loads((run.eval_dir / "tuned.json").read_text())["metric"]
    ladder_rungs = ["zero-shot"] if reward else gated_rungs(gate)
    ladder = {r: load_items(run.eval_dir / f"{r}.jsonl") for r in ladder_rungs}
    for rung, items in ladder.items():
        if len(items) != len(tuned):
            raise UserError(
                f"rung {rung} was evaluated on {len(items)} items but tuned on {len(tuned)}",
                str(run.eval_dir),
                f"re-evaluate everything on the same items: tuneloop gate {run.id} --fresh",
            )
    stats = (ev.confidence, ev.bootstrap, ev.seed)
    overfit, notes = None, []
    if reward:
        conditions, per_rung = reward_conditions(ladder["zero-shot"], tuned, gate, *stats)
        notes.append(REWARD_NOTE)
    else:
        if gate.match:
            rung = gate.match.rung
            task, per_rung = match_condition(rung, ladder[rung], tuned, metric, gate, *stats)
        else:
            task, per_rung = task_condition(ladder, tuned, metric, gate, *stats)
        answers = {
            who: [
                i
                for s in suites
                for i in load_items(run.eval_dir / "probes" / f"{who}-{s.name}.jsonl")
            ]
            for who in ("base", "tuned")
        }
        conditions = [task, *probe_conditions(answers["base"], answers["tuned"], gate, *stats)]
        train_items_path = run.eval_dir / "train" / "tuned.jsonl"
        if train_items_path.is_file():
            overfit = overfit_gap(load_items(train_items_path), tuned, metric)
    ladder_summary = {
        rung: {
            "mean": r["paired"]["mean_a"],
            "tuned_minus_rung": r["paired"]["diff"],
            "ci": [r["paired"]["low"], r["paired"]["high"]],
            "mcnemar_p": r.get("mcnemar", {}).get("p_value"),
        }
        for rung, r in per_rung.items()
    }
    evaluated = sorted(p.stem for p in run.eval_dir.glob("*.json"))
    report = GateReport(
        run.id,
        all(c.passed for c in conditions),
        metric,
        conditions,
        ladder_summary,
        overfit,
        load_preference(run),
        rung_costs(run, [*ladder_rungs, *evaluated, "tuned"]),
        notes,
    )
    saved = report.to_dict()
    write_json(run.path / "gate.json", saved)
    from tuneloop.registry import record

    record.gate(run.path, run.id, report.passed, [c.sentence for c in conditions])
    log_gate(run, recipe, saved)  # to the recipe's trackers, if any
    return report


def rung_costs(run: Run, rungs: list[str]) -> dict[str, dict]:
    """The saved summary of each rung evaluated (in the order given, tuned last), for the table
    of quality, latency and cost."""
    out = {}
    for rung in sorted(dict.fromkeys(rungs), key=lambda r: r == "tuned"):
        path = run.eval_dir / f"{rung}.json"
        s = json.loads(path.read_text()) if path.is_file() else {}
        if s.get("metric") in s and "ci" in s:  # a summary with scores (not a bare stub)
            keep = ("rung", "asks", "answered_by", "metric", "n", "ci", "prompt_tokens_mean")
            out[rung] = {k: s.get(k) for k in keep} | {s["metric"]: s[s["metric"]]}
            out[rung]["cost"] = s.get("cost") or {}
    return out


def cost_sentence(report: GateReport) -> str | None:
    """Tuned's cost per 1,000 requests beside the rung it is gated against, when both are
    known: the reason a cheaper model that matches is worth shipping."""
    tuned = (report.costs.get("tuned") or {}).get("cost", {}).get("cost_per_1k")
    other = report.conditions[0].numbers.get("matched_rung") or report.conditions[0].numbers.get(
        "best_rung"
    )
    theirs = (report.costs.get(other) or {}).get("cost", {}).get("cost_per_1k")
    if tuned is None or theirs is None:
        return None
    ratio = f", {theirs / tuned:.1f}x cheaper" if tuned > 0 and theirs > tuned else ""
    return (
        f"tuned costs {money(tuned)} per 1,000 requests against {money(theirs)} for {other}" + ratio
    )


def format_gate(report: GateReport) -> str:
    lines = [f"gate for run {report.run}: {'PASS' if report.passed else 'FAIL'}"]
    for c in report.conditions:
        counted = (
            ""
            if c.passed == (c.status == "pass")
            else (" (counts as a pass: gate.inconclusive)" if c.passed else " (counts as a fail)")
        )
        lines.append(f"  [{_label(c)}] {c.name}{counted}: {c.sentence}")
    lines += [f"  not tested: {note}" for note in report.notes]
    if report.overfit:
        lines.append(f"  overfitting (reported, not gated): {report.overfit['note']}")
    if report.costs:
        lines.append("  quality, latency and cost (reported, not gated):")
        lines += [f"    {row}" for row in rung_table(report.costs, report.metric)]
        if sentence := cost_sentence(report):
            lines.append(f"    {sentence}")
    if p := report.preference:
        lo, hi = p["reward_accuracy_ci"]
        lines.append(
            f"  preferences (reported, not gated): the tuned model ranks chosen above rejected "
            f"in {_pct(p['reward_accuracy'])} [{_pct(lo)}, {_pct(hi)}] of {p['n']} held-out "
            f"pairs; mean reward margin {p['margin_mean']:+.3f} "
            f"[{p['margin_ci'][0]:+.3f}, {p['margin_ci'][1]:+.3f}]"
        )
    return "\n".join(lines)
