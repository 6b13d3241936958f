"""The data audit: training writes `data/audit.json` and the report shows it."""

import json

import pytest

from conftest import train_tiny_run
from tuneloop.report.html import build_report

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: see conftest


def test_a_trained_run_writes_the_audit_and_the_report_shows_it(tmp_path, tiny_model_dir):
    run = train_tiny_run(tmp_path, tiny_model_dir, steps=2)
    audit = json.loads((run.path / "data" / "audit.json").read_text())
    assert audit["split"] == {"train": 24, "heldout": 6, "split_made": False}
    assert audit["lint"]["warning"] >= 1 and "too-few-examples" in audit["lint"]["codes"]
    assert audit["labels"]["train"] == {}  # no label field in these examples
    assert audit["tokens"]["train"]["max"] >= audit["tokens"]["train"]["min"] > 0
    assert audit["truncation"]["policy"] == "drop"
    page = build_report(run).read_text()
    for text in ("Data audit", "too-few-examples", "24 train, 6 held-out", "tokens per example"):
        assert text in page, text
