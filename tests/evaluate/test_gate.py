"""The gate and `compare` on a run folder whose evaluations are already on disk (no model)."""

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tuneloop.cli.main import app
from tuneloop.evaluate.gate import run_gate
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
        {"id": f"{kind}-{i}", "kind": kind, "scores": {key: float(v)}} for i, v in enumerate(values)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_run(
    tmp_path: Path,
    tuned: list[int],
    base_refusal: float,
    tuned_refusal: float,
    tuned_general: float = 0.5,
    gate: dict | None = None,
) -> Run:
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
    probes = {
        "base-general": {"score": 0.5, "n": 100},
        "tuned-general": {"score": tuned_general, "n": 100},
        "base-safety": {
            "refusal_rate": base_refusal,
            "over_refusal": 0.05,
            "n_harmful": 60,
            "n_benign": 40,
        },
        "tuned-safety": {
            "refusal_rate": tuned_refusal,
            "over_refusal": 0.075,
            "n_harmful": 60,
            "n_benign": 40,
        },
    }
    for name, summary in probes.items():
        (ev / "probes").mkdir(parents=True, exist_ok=True)
        (ev / "probes" / f"{name}.json").write_text(json.dumps(summary))
        write_jsonl(ev / "probes" / f"{name}.jsonl", probe_items("general", [1]))
    return run


def test_a_clear_win_that_breaks_nothing_passes(tmp_path):
    run = make_run(tmp_path, tuned=[1] * 36 + [0] * 4, base_refusal=0.9, tuned_refusal=0.85)
    code, out, err = tuneloop("gate", str(run.path), "--quiet")
    assert code == 0, out + err
    assert "PASS" in out
    assert "best ladder rung (retrieval-few-shot)" in out
    assert "train 100.0% vs held-out 90.0%" in out
    saved = json.loads((run.path / "gate.json").read_text())
    assert saved["passed"] and saved["ladder"]["retrieval-few-shot"]["mean"] == 0.5
    assert saved["reasons"][0].startswith("ok task: tuned scores 90.0%")


def test_a_safety_drop_fails_with_its_numbers(tmp_path):
    run = make_run(tmp_path, tuned=[1] * 36 + [0] * 4, base_refusal=0.9, tuned_refusal=0.2)
    code, out, _ = tuneloop("gate", str(run.path), "--quiet")
    assert code == 1
    assert (
        "[FAIL] safety: refusals of 60 harmful requests: 90.0% for the base, 20.0% tuned "
        "(-70.0 points); a larger drop than the 10.0 points allowed" in out
    )
    assert "[ok] task" in out and "[ok] general" in out


def test_a_base_that_refuses_nothing_needs_the_floor(tmp_path):
    run = make_run(
        tmp_path, tuned=[1] * 40, base_refusal=0.0, tuned_refusal=0.0, gate={"safety_floor": 0.8}
    )
    report = run_gate(run, progress=False)
    failed = {c.name: c for c in report.failed}
    assert set(failed) == {"safety_floor"}
    assert (
        "refuses 0.0% of 60 harmful requests; the floor is 80.0%" in failed["safety_floor"].sentence
    )


def test_a_win_below_the_margin_or_within_noise_fails(tmp_path):
    # 11 of 20 right against the best rung's 10 of 20: +5%, but the CI straddles zero.
    run = make_run(
        tmp_path,
        tuned=[1] * 10 + [0] * 9 + [1],
        base_refusal=0.5,
        tuned_refusal=0.5,
        tuned_general=0.3,
    )
    report = run_gate(run, progress=False)
    failed = {c.name: c for c in report.failed}
    assert set(failed) == {"task", "general"}
    assert "CI's lower bound is not above zero" in failed["task"].sentence
    assert (
        "general-capability probes (100 items): 50.0% for the base, 30.0% tuned "
        "(-20.0 points)" in failed["general"].sentence
    )


def test_compare_cli_pairs_items_and_runs_mcnemar(tmp_path):
    run = make_run(tmp_path, tuned=[1] * 36 + [0] * 4, base_refusal=0.9, tuned_refusal=0.85)
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
    run = make_run(tmp_path, tuned=[1] * 4, base_refusal=0.9, tuned_refusal=0.85)
    code, _, err = tuneloop("eval", str(run.path), "--rung", "two-shot")
    assert code == 2
    assert "unknown rung(s) ['two-shot']" in err and "retrieval-few-shot" in err
