"""The gate and `compare` on a run folder whose evaluations are already on disk (no model)."""

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tuneloop.cli.main import app
from tuneloop.evaluate.gate import run_gate
from tuneloop.evaluate.run import load_items
from tuneloop.workspace import Run


def tuneloop(*args: str):
    """The real command line, in process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def items(correct: list[int], metric: str = "exact_match") -> list[dict]:
    return [
        {
            "source": f"heldout.jsonl:{i + 1}",
            "prompt": f"q{i}",
            "reference": "a",
            "prediction": "a" if c else "b",
            "scores": {metric: float(c)},
            "meta": {},
        }
        for i, c in enumerate(correct)
    ]


def probe_items(kind: str, values: list[int]) -> list[dict]:
    key = "correct" if kind == "general" else "refused"
    return [
        {"id": f"{kind}-{i}", "kind": kind, "suite": "general" if kind == "general" else "safety",
         "scores": {key: float(v)}}
        for i, v in enumerate(values)
    ]  # fmt: skip


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def rate(k: int, n: int) -> list[int]:
    """k ones then n - k zeros."""
    return [1] * k + [0] * (n - k)


def make_run(
    tmp_path: Path,
    tuned: list[int],
    base_refused: list[int],
    tuned_refused: list[int],
    base_general: list[int] | None = None,
    tuned_general: list[int] | None = None,
    gate: dict | None = None,
) -> Run:
    """A finished run whose evaluations are on disk: the ladder, tuned, and both models' answers
    to the built-in probes (per item, as `tuneloop eval --probes` writes them)."""
    run = Run(tmp_path / "ws" / "runs" / "20250101-000000-demo")
    run.path.mkdir(parents=True)
    run.info_path.write_text(json.dumps({"id": run.id, "status": "finished"}))
    recipe = {"name": "demo", "data": {"train": "train.jsonl"}, "gate": gate or {}}
    run.recipe_path.write_text(yaml.safe_dump(recipe))
    ev = run.eval_dir
    n = len(tuned)
    ladder = {
        "zero-shot": [0] * n,
        "few-shot": [1] * (n // 4) + [0] * (n - n // 4),
        "retrieval-few-shot": [1] * (n // 2) + [0] * (n - n // 2),
    }
    for rung, scores in {**ladder, "tuned": tuned}.items():
        write_jsonl(ev / f"{rung}.jsonl", items(scores))
        (ev / f"{rung}.json").write_text(json.dumps({"rung": rung, "metric": "exact_match"}))
    write_jsonl(ev / "train" / "tuned.jsonl", items([1] * 20))
    benign = rate(2, 40)
    general = base_general or rate(50, 100)
    answers = {
        "base-general": probe_items("general", general),
        "tuned-general": probe_items("general", tuned_general or general),
        "base-safety": probe_items("harmful", base_refused) + probe_items("benign", benign),
        "tuned-safety": probe_items("harmful", tuned_refused) + probe_items("benign", benign),
    }
    for name, rows in answers.items():
        write_jsonl(ev / "probes" / f"{name}.jsonl", rows)
        kinds = ["general"] if name.endswith("general") else ["harmful", "benign"]
        sample = {"builtin": True, "kinds": kinds}
        if name.endswith("safety"):
            sample["refusals"] = "regex"
        (ev / "probes" / f"{name}.json").write_text(json.dumps({"sample": sample}))
    return run


def test_a_clear_win_that_breaks_nothing_passes(tmp_path):
    run = make_run(tmp_path, tuned=rate(36, 40), base_refused=rate(54, 60),
                   tuned_refused=rate(53, 60))  # fmt: skip
    code, out, err = tuneloop("gate", str(run.path), "--quiet")
    assert code == 0, out + err
    assert "gate for run 20250101-000000-demo: PASS" in out
    assert "best ladder rung (retrieval-few-shot)" in out
    assert "train 100.0% vs held-out 90.0%" in out
    saved = json.loads((run.path / "gate.json").read_text())
    assert saved["passed"] and saved["ladder"]["retrieval-few-shot"]["mean"] == 0.5
    assert saved["reasons"][0].startswith("PASS task: tuned scores 90.0%")
    for c in saved["conditions"]:  # every line: estimate, CI, bound, test and p-value
        assert c["status"] == "pass"
        assert {"estimate", "low", "high", "bound", "test", "p_value", "n"} <= set(c["numbers"])
        assert "CI" in c["sentence"] and "p " in c["sentence"]
    task = saved["conditions"][0]["numbers"]
    assert task["low"] > task["bound"] == 0.02 and task["mcnemar_p"] < 1e-4


def test_a_safety_collapse_fails_with_its_ci(tmp_path):
    run = make_run(tmp_path, tuned=rate(36, 40), base_refused=rate(54, 60),
                   tuned_refused=rate(12, 60))  # fmt: skip
    code, out, _ = tuneloop("gate", str(run.path), "--quiet")
    assert code == 1
    line = next(ln for ln in out.splitlines() if "[FAIL] safety" in ln)
    assert "refusals of harmful requests on 60 items" in line
    assert "90.0% for the base, 20.0% tuned" in line and "-70.0 points [95% CI" in line
    assert "against a bound of -10.0 points" in line and "the whole CI lies below" in line
    assert "[PASS] task" in out and "[PASS] general" in out and "[PASS] over_refusal" in out


def test_a_base_that_refuses_nothing_is_named_uninformative_and_needs_the_floor(tmp_path):
    run = make_run(tmp_path, tuned=[1] * 40, base_refused=[0] * 60, tuned_refused=[0] * 60,
                   gate={"safety_floor": 0.8})  # fmt: skip
    report = run_gate(run, progress=False)
    by_name = {c.name: c for c in report.conditions}
    assert {c.name for c in report.failed} == {"safety_floor"}
    assert "UNINFORMATIVE: the base refuses only 0.0%" in by_name["safety"].sentence
    assert "gate.safety_floor" in by_name["safety"].sentence
    assert by_name["safety"].numbers["informative"] is False
    floor = by_name["safety_floor"]
    assert floor.status == "fail" and "refuses 0.0% of 60 harmful requests" in floor.sentence
    assert floor.numbers["high"] < 0.8


def test_noise_is_inconclusive_never_a_failure(tmp_path):
    # The quickstart's case: 7 fewer of 105 general probes right (-6.7 points, tolerance 5): the
    # paired CI reaches both zero and the tolerance, so nothing is shown either way.
    base = rate(30, 105)  # right on items 0-29
    tuned_general = [0] * 12 + [1] * 23 + [0] * 70  # loses 12 of them, gains 5 others
    run = make_run(tmp_path, tuned=rate(10, 19) + [1], base_refused=rate(50, 60),
                   tuned_refused=rate(50, 60), base_general=base,
                   tuned_general=tuned_general)  # fmt: skip
    report = run_gate(run, progress=False)
    by_name = {c.name: c for c in report.conditions}
    general = by_name["general"]
    assert general.status == "inconclusive" and not general.passed
    assert general.numbers["low"] < -0.05 < 0 < general.numbers["high"] + 1e-9
    assert "inconclusive" in general.sentence and "wrong side" in general.sentence
    task = by_name["task"]  # 11 of 20 against 10 of 20: +5 points, CI straddles the margin
    assert task.status == "inconclusive"
    assert task.numbers["items_needed"] > 20
    assert f"about {task.numbers['items_needed'] - 20} more items needed" in task.sentence
    assert not report.passed


def test_inconclusive_can_be_allowed_by_the_recipe(tmp_path):
    run = make_run(tmp_path, tuned=rate(36, 40), base_refused=rate(50, 60),
                   tuned_refused=rate(50, 60), base_general=rate(30, 105),
                   tuned_general=rate(27, 105), gate={"inconclusive": "pass"})  # fmt: skip
    report = run_gate(run, progress=False)
    general = next(c for c in report.conditions if c.name == "general")
    assert general.status == "inconclusive" and general.passed and report.passed
    code, out, _ = tuneloop("gate", str(run.path), "--quiet")
    assert code == 0 and "[INCONCLUSIVE] general (counts as a pass: gate.inconclusive)" in out


def test_compare_cli_pairs_items_and_runs_mcnemar(tmp_path):
    run = make_run(tmp_path, tuned=rate(36, 40), base_refused=rate(54, 60),
                   tuned_refused=rate(51, 60))  # fmt: skip
    code, out, err = tuneloop("compare", f"{run.path}:zero-shot", str(run.path), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["paired"]["diff"] == 0.9 and result["paired"]["low"] > 0.75
    assert result["mcnemar"]["b_only"] == 36 and result["mcnemar"]["p_value"] < 1e-9
    code, out, err = tuneloop("compare", f"{run.path}:nope", str(run.path))
    assert code == 2 and "has no evaluation `nope`" in err and "fix: evaluate it first" in err
    code, out, _ = tuneloop("compare", f"{run.path}:zero-shot", f"{run.path}:few-shot")
    assert code == 0 and "McNemar p" in out and "discordant items" in out


def test_eval_cli_refuses_an_unknown_rung(tmp_path):
    run = make_run(tmp_path, tuned=[1] * 4, base_refused=rate(54, 60), tuned_refused=rate(51, 60))
    code, _, err = tuneloop("eval", str(run.path), "--rung", "two-shot")
    assert code == 2
    assert "`two-shot` is not a rung of this recipe" in err and "retrieval-few-shot" in err


def test_a_base_near_guessing_cannot_show_forgetting_and_says_so(tmp_path):
    # MMLU answered at chance (25%) by the base: a 5-point drop is hardly possible
    run = make_run(tmp_path, tuned=rate(36, 40), base_refused=rate(54, 60),
                   tuned_refused=rate(53, 60), base_general=rate(26, 100))  # fmt: skip
    for who in ("base", "tuned"):
        path = run.eval_dir / "probes" / f"{who}-general.jsonl"
        rows = [{**json.loads(line), "suite": "mmlu"} for line in path.read_text().splitlines()]
        write_jsonl(path, rows)
    report = run_gate(run, progress=False)
    general = next(c for c in report.conditions if c.name == "general")
    assert general.numbers["informative"] is False and general.numbers["chance"] == 0.25
    assert "UNINFORMATIVE: the base scores 26.0%" in general.sentence
    other = make_run(tmp_path / "b", tuned=rate(36, 40), base_refused=rate(54, 60),
                     tuned_refused=rate(53, 60))  # fmt: skip
    general = next(c for c in run_gate(other, progress=False).conditions if c.name == "general")
    assert "informative" not in general.numbers  # 50% on free answers: room to fall


def with_hosted_rung(run: Run, hosted: list[int], tuned_cost: float, hosted_cost: float,
                     tolerance: float) -> None:  # fmt: skip
    """The run's recipe gains an endpoint `hosted` and gate.match on it; its answers, and the
    tuned rung's, are saved with their cost per 1,000 requests."""
    recipe = yaml.safe_load(run.recipe_path.read_text())
    recipe["eval"] = {"endpoints": [{"name": "hosted", "url": "http://127.0.0.1:9/v1",
                                     "model": "big"}]}  # fmt: skip
    recipe["gate"] = {"match": {"rung": "hosted", "tolerance": tolerance}}
    run.recipe_path.write_text(yaml.safe_dump(recipe))
    ev = run.eval_dir
    write_jsonl(ev / "hosted.jsonl", items(hosted))
    for rung, cost, scores in (("hosted", hosted_cost, hosted), ("tuned", tuned_cost, None)):
        scores = scores or [i["scores"]["exact_match"] for i in load_items(ev / "tuned.jsonl")]
        mean = sum(scores) / len(scores)
        ci = {"exact_match": {"low": mean - 0.05, "high": mean + 0.05}}
        summary = {"rung": rung, "metric": "exact_match", "exact_match": mean, "n": len(scores),
                   "ci": ci, "cost": {"cost_per_1k": cost, "latency_p50_s": 0.4}}  # fmt: skip
        (ev / f"{rung}.json").write_text(json.dumps(summary))


def test_the_gate_can_ask_a_cheaper_model_to_match_a_named_rung(tmp_path):
    run = make_run(tmp_path / "a", tuned=rate(180, 200), base_refused=rate(54, 60),
                   tuned_refused=rate(53, 60))  # fmt: skip
    with_hosted_rung(run, rate(182, 200), tuned_cost=0.01, hosted_cost=0.05, tolerance=0.05)
    code, out, err = tuneloop("gate", str(run.path), "--quiet")
    assert code == 0, out + err
    assert "[PASS] task:" in out and "for hosted (gate.match)" in out
    assert "gate.match.tolerance = 5.0 points" in out
    assert "tuned costs $0.010 per 1,000 requests against $0.050 for hosted, 5.0x cheaper" in out
    saved = json.loads((run.path / "gate.json").read_text())
    task = saved["conditions"][0]
    assert task["numbers"]["matched_rung"] == "hosted" and task["numbers"]["bound"] == -0.05
    assert set(saved["costs"]) == {"hosted", "tuned"}
    assert not (run.eval_dir / "few-shot.json").read_text().count("cost")  # not re-evaluated

    worse = make_run(tmp_path / "b", tuned=rate(150, 200), base_refused=rate(54, 60),
                     tuned_refused=rate(53, 60))  # fmt: skip
    with_hosted_rung(worse, rate(182, 200), tuned_cost=0.01, hosted_cost=0.05, tolerance=0.05)
    code, out, _ = tuneloop("gate", str(worse.path), "--quiet")
    assert code == 1 and "[FAIL] task:" in out and "the whole CI lies below the bound" in out
