"""A workspace as the loop leaves it, for the dashboard's tests: two finished runs of the tiny
model (trained and evaluated for real, so the playground can load their adapters), the first
with a gate verdict and an export, the second refining the first."""

from __future__ import annotations

import json
import time

import pytest

from conftest import train_tiny_run


def gate_verdict() -> dict:
    """gate.json in the shape `tuneloop gate` writes (the tiny model's gate is not run here:
    its probes would take minutes)."""

    def condition(name, status, estimate, low, high, bound, sentence):
        numbers = {
            "estimate": estimate,
            "low": low,
            "high": high,
            "confidence": 0.95,
            "test": "paired bootstrap, one-sided",
            "p_value": 0.2,
            "n": 6,
            "bound": bound,
            "items_needed": 120 if status == "inconclusive" else None,
        }
        return {
            "name": name,
            "status": status,
            "passed": status == "pass",
            "sentence": sentence,
            "numbers": numbers,
        }

    return {
        "passed": False,
        "metric": "exact_match",
        "conditions": [
            condition(
                "task",
                "inconclusive",
                0.1,
                -0.2,
                0.4,
                0.02,
                "tuned against zero-shot on 6 held-out items: the CI straddles the bound",
            ),
            condition(
                "general",
                "pass",
                -0.01,
                -0.03,
                0.01,
                -0.05,
                "general skills within the 5.0 points allowed",
            ),
        ],
    }


def add_topic_slice(run) -> None:
    """Give each evaluated item a `meta.topic` (its reference), as data with a `topic` field
    would: the compare page offers slices by metadata."""
    for path in run.eval_dir.glob("*.jsonl"):
        items = [json.loads(line) for line in path.read_text().splitlines() if line]
        for item in items:
            item["meta"] = {**(item.get("meta") or {}), "topic": item["reference"]}
        path.write_text("".join(json.dumps(i) + "\n" for i in items))


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, tiny_model_dir):
    import torch

    from tuneloop.evaluate.run import evaluate_run
    from tuneloop.registry import record

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = tmp_path_factory.mktemp("ui")
        first = train_tiny_run(folder, tiny_model_dir, steps=6)
        evaluate_run(first, ("zero-shot", "tuned"), progress=False)
        add_topic_slice(first)
        (first.path / "gate.json").write_text(json.dumps(gate_verdict()))
        record.gate(first.path, first.id, False, gate_verdict())
        record.export(
            first.path, first.id, "merged", first.path / "export" / "merged", {"verified": True}
        )
        time.sleep(1.1)  # run ids carry the second they were made
        second = train_tiny_run(folder, tiny_model_dir, steps=3, lr=0.02)
        info = json.loads(second.info_path.read_text())
        info["parent"] = first.id
        second.info_path.write_text(json.dumps(info))
        from tuneloop.registry.store import Registry

        with Registry(folder / "ws") as reg:
            reg.update_run(second.id, parent_id=first.id)
        evaluate_run(second, ("zero-shot", "tuned"), progress=False)
        add_topic_slice(second)
    finally:
        torch.set_num_threads(before)
    return folder / "ws", first, second
