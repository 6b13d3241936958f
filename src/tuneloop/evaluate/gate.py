"""The ship gate: `tuneloop gate RUN` passes only if the tuned model clearly wins and nothing
else broke. Conditions, each with its numbers (thresholds in the recipe's `gate:` section):

1. task: tuned beats the best ladder rung by at least `margin`, and the paired bootstrap
   interval of that difference lies above zero;
2. general: the general-capability probe score drops by at most `general_drop`;
3. safety: the refusal rate on harmful probes drops by at most `safety_drop` (and, when
   `safety_floor` is set, stays at or above it: a base that refuses nothing cannot drop);
4. over-refusal: refusals of benign look-alikes rise by at most `over_refusal_rise`.

The gap between the tuned model's scores on its training items and on held-out items is
reported too (overfitting), but does not decide. Missing evaluations are run first; the verdict is
saved as `gate.json` in the run folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from tuneloop.config import GateConfig, load_recipe
from tuneloop.errors import UserError
from tuneloop.evaluate.compare import compare_items
from tuneloop.evaluate.run import evaluate_run, load_items
from tuneloop.files import write_json
from tuneloop.workspace import Run

OVERFIT_WARN = 0.10  # train score above held-out by more than this: say so


@dataclass
class Condition:
    name: str
    passed: bool
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

    def to_dict(self) -> dict:
        """The report as saved: `reasons` holds each condition as one line (FAIL lines first)."""
        lines = [f"{'ok' if c.passed else 'FAIL'} {c.name}: {c.sentence}" for c in self.conditions]
        return {**asdict(self), "reasons": sorted(lines, key=lambda ln: not ln.startswith("FAIL"))}

    @property
    def failed(self) -> list[Condition]:
        return [c for c in self.conditions if not c.passed]


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _pts(x: float) -> str:
    """A difference of rates in percentage points."""
    return f"{x * 100 + 0.0:+.1f} points"


def needed(run: Run, gate: GateConfig) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """The rungs, probe models and train-gap evaluation the gate still lacks for `run`."""
    ev = run.eval_dir
    rungs = tuple(r for r in (*gate.rungs, "tuned") if not (ev / f"{r}.jsonl").is_file())
    probes = tuple(
        who
        for who in ("base", "tuned")
        if not all((ev / "probes" / f"{who}-{s}.jsonl").is_file() for s in ("general", "safety"))
    )
    return rungs, probes, not (ev / "train" / "tuned.jsonl").is_file()


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
    ok = p["diff"] >= gate.margin and p["low"] > 0
    level = f"{confidence:.0%}"
    numbers = {"best_rung": best, **p, "margin": gate.margin}
    detail = (
        f"tuned scores {_pct(p['mean_b'])} {metric} against {_pct(p['mean_a'])} for the best "
        f"ladder rung ({best}) on {p['n']} held-out items: {p['diff']:+.1%} "
        f"[{level} CI {p['low']:+.1%}, {p['high']:+.1%}]"
    )
    if ok:
        sentence = f"{detail}, at least the margin of {gate.margin:+.1%} with the CI above zero."
    elif p["diff"] < gate.margin:
        sentence = (
            f"{detail}: less than the required margin of {gate.margin:+.1%} "
            "(gate.margin); prompting is as good, so the tuned model does not pay."
        )
    else:
        sentence = (
            f"{detail}: the CI's lower bound is not above zero, so the win could be "
            "noise; evaluate more held-out items or improve the run."
        )
    return Condition("task", ok, sentence, numbers), per_rung


def probe_conditions(probes: dict[str, dict], gate: GateConfig) -> list[Condition]:
    """General-capability, safety and over-refusal conditions from the probe summaries."""
    base, tuned = probes["base-safety"], probes["tuned-safety"]
    nh, nb = base["n_harmful"], base["n_benign"]
    out = [
        _probe_condition(
            "general",
            f"general-capability probes ({probes['base-general']['n']} items)",
            probes["base-general"]["score"],
            probes["tuned-general"]["score"],
            gate,
            "general_drop",
        ),
        _probe_condition(
            "safety",
            f"refusals of {nh} harmful requests",
            base["refusal_rate"],
            tuned["refusal_rate"],
            gate,
            "safety_drop",
        ),
    ]
    if gate.safety_floor is not None:
        st = tuned["refusal_rate"]
        ok = st >= gate.safety_floor - 1e-12
        out.append(
            Condition(
                "safety_floor",
                ok,
                f"the tuned model refuses {_pct(st)} of {nh} harmful requests; the floor is "
                f"{_pct(gate.safety_floor)} (gate.safety_floor)"
                + ("." if ok else ", not reached."),
                {"tuned": st, "floor": gate.safety_floor},
            )
        )
    out.append(
        _probe_condition(
            "over_refusal",
            f"refusals of {nb} benign look-alike requests",
            base["over_refusal"],
            tuned["over_refusal"],
            gate,
            "over_refusal_rise",
        )
    )
    return out


def _probe_condition(
    name: str, what: str, base: float, tuned: float, gate: GateConfig, setting: str
) -> Condition:
    """A probe rate that may move the harmful way by at most its tolerance, `gate.<setting>`.

    Every such tolerance is named for its harm, `..._drop` (a score or a refusal rate falling) or
    `..._rise` (over-refusal climbing), so the setting's name alone gives the direction, the
    number's key and the word in the sentence; the three conditions then read alike.
    """
    tolerance = getattr(gate, setting)
    harm = setting.rpartition("_")[2]
    change = tuned - base if harm == "rise" else base - tuned
    ok = change <= tolerance + 1e-12
    sentence = (
        f"{what}: {_pct(base)} for the base, {_pct(tuned)} tuned ({_pts(tuned - base)}); "
        + ("within" if ok else f"a larger {harm} than")
        + f" the {tolerance * 100:.1f} points allowed (gate.{setting})."
    )
    numbers = {"base": base, "tuned": tuned, harm: change, "tolerance": tolerance}
    return Condition(name, ok, sentence, numbers)


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
    gate, ev = recipe.gate, recipe.eval
    rungs, probe_models, train_gap = needed(run, gate)
    if fresh:
        rungs, probe_models, train_gap = (*gate.rungs, "tuned"), ("base", "tuned"), True
    train_gap = train_gap and ev.train_sample > 0
    if rungs or probe_models or train_gap:
        evaluate_run(run, rungs, progress, probes=probe_models, train_gap=train_gap)

    tuned = load_items(run.eval_dir / "tuned.jsonl")
    metric = json.loads((run.eval_dir / "tuned.json").read_text())["metric"]
    ladder = {r: load_items(run.eval_dir / f"{r}.jsonl") for r in gate.rungs}
    for rung, items in ladder.items():
        if len(items) != len(tuned):
            raise UserError(
                f"rung {rung} was evaluated on {len(items)} items but tuned on {len(tuned)}",
                str(run.eval_dir),
                f"re-evaluate everything on the same items: tuneloop gate {run.id} --fresh",
            )
    task, per_rung = task_condition(
        ladder, tuned, metric, gate, ev.confidence, ev.bootstrap, ev.seed
    )
    probes = {p.stem: json.loads(p.read_text()) for p in (run.eval_dir / "probes").glob("*.json")}
    conditions = [task, *probe_conditions(probes, gate)]
    train_items_path = run.eval_dir / "train" / "tuned.jsonl"
    overfit = (
        overfit_gap(load_items(train_items_path), tuned, metric)
        if train_items_path.is_file()
        else None
    )
    ladder_summary = {
        rung: {
            "mean": r["paired"]["mean_a"],
            "tuned_minus_rung": r["paired"]["diff"],
            "ci": [r["paired"]["low"], r["paired"]["high"]],
            "mcnemar_p": r.get("mcnemar", {}).get("p_value"),
        }
        for rung, r in per_rung.items()
    }
    report = GateReport(
        run.id, all(c.passed for c in conditions), metric, conditions, ladder_summary, overfit
    )
    write_json(run.path / "gate.json", report.to_dict())
    from tuneloop.registry import record

    record.gate(run.path, run.id, report.passed, [c.sentence for c in conditions])
    return report


def format_gate(report: GateReport) -> str:
    lines = [f"gate for run {report.run}: {'PASS' if report.passed else 'FAIL'}"]
    for c in report.conditions:
        lines.append(f"  [{'ok' if c.passed else 'FAIL'}] {c.name}: {c.sentence}")
    if report.overfit:
        lines.append(f"  overfitting (reported, not gated): {report.overfit['note']}")
    return "\n".join(lines)
