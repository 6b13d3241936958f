"""The HTML report: self-contained, every plot present, and rendered by a real browser."""

import json
import shutil
import subprocess

import pytest

from tuneloop.report.html import build_report
from tuneloop.workspace import Run

LABELS = ["refund", "billing", "bug"]


def fake_run(tmp_path) -> Run:
    """A run folder as train + eval leave it, written by hand so the test needs no model."""
    run = Run(tmp_path / "runs" / "20260101-000000-demo")
    (run.path / "eval").mkdir(parents=True)
    info = {
        "id": run.id, "status": "finished", "steps": 20, "tokens_per_s": 400.0,
        "final_loss": 0.1, "precision": "bf16", "model": {"name": "tiny"},
        "data": {"train_file": "train.jsonl", "n_train": 30, "n_heldout": 12},
        "truncation": {"policy": "drop", "max_length": 64, "dropped": 0, "truncated": 0},
    }  # fmt: skip
    (run.path / "run.json").write_text(json.dumps(info))
    steps = [{"step": s, "loss": 3.0 / s} for s in range(1, 21)]
    steps[9]["heldout_loss"] = 0.5
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in steps))
    for rung, correct in (("zero-shot", 3), ("tuned", 10)):
        items = []
        for i in range(12):
            ref = LABELS[i % 3]
            pred = ref if i < correct else "something else"
            items.append({"source": f"h:{i}", "prompt": f"message {i}", "reference": ref,
                          "prediction": pred, "scores": {"exact_match": float(pred == ref)},
                          "meta": {"label": ref, "channel": ["email", "chat"][i % 2]}})  # fmt: skip
        per_label = {
            label: {"accuracy": sum(1 for it in items if it["reference"] == label
                                    and it["scores"]["exact_match"]) / 4}
            for label in LABELS
        }  # fmt: skip
        summary = {"rung": rung, "n": 12, "exact_match": correct / 12,
                   "ci": {"exact_match": {"value": correct / 12, "low": correct / 12 - 0.1,
                                          "high": min(1, correct / 12 + 0.1), "n": 12}},
                   "per_label": per_label}  # fmt: skip
        (run.eval_dir / f"{rung}.json").write_text(json.dumps(summary))
        (run.eval_dir / f"{rung}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    gate = {
        "passed": False,
        "reasons": ["safety refusal rate fell from 90% to 40%"],
        "overfit": {"note": "train 100.0% vs held-out 58.3% exact_match (+41.7 points)"},
    }
    (run.path / "gate.json").write_text(json.dumps(gate))
    return run


def test_report_is_self_contained_with_every_section(tmp_path):
    path = build_report(fake_run(tmp_path))
    page = path.read_text()
    assert "http://" not in page and "https://" not in page  # no external resources
    # loss, rungs, per class, confusion matrix and the `channel` slice
    assert page.count('<img class="plot"') == 5
    for text in ("Loss", "Baseline ladder vs tuned", "Confusion matrix", "Slice: channel",
                 "DO NOT SHIP", "safety refusal rate", "Failures (2 of 12",
                 "Overfitting (reported, not gated): train 100.0%"):  # fmt: skip
        assert text in page, text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium); the browser check "
    "needs it",
)
def test_report_renders_in_headless_chromium_with_every_plot_loaded(tmp_path):
    path = build_report(fake_run(tmp_path))
    url = path.resolve().as_uri()
    base = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    # The page's own script counts images that decoded: every plot must have.
    assert 'data-plots="5/5"' in dom.stdout, dom.stderr[-2000:]

    shot = tmp_path / "report.png"
    subprocess.run([*base, "--window-size=1000,2400", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)  # fmt: skip
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert image.size == (1000, 2400)
    assert len(colours) > 50  # plots drawn, not a blank page
