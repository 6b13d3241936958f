"""The lineage registry: schema, lineage rows, concurrent writers, crashes."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

from tuneloop.registry import Registry
from tuneloop.registry.store import MIGRATIONS


def test_schema_is_versioned_and_migrations_are_idempotent(tmp_path):
    with Registry(tmp_path) as reg:
        assert reg.version == len(MIGRATIONS)
        assert reg.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Registry(tmp_path) as reg:  # reopening migrates nothing twice
        assert reg.version == len(MIGRATIONS)


def test_lineage_rows_link_dataset_run_eval_gate_export(tmp_path):
    with Registry(tmp_path) as reg:
        d1 = reg.add_dataset("abc", "train.jsonl", [["p1", "c1"], ["p2", "c2"]])
        assert reg.add_dataset("abc", "elsewhere.jsonl", []) == d1  # same content, same row
        reg.add_run("r1", "demo", str(tmp_path / "runs/r1"), {"train": {"seed": 3}})
        reg.update_run("r1", status="training", train_dataset_id=d1, summary={"steps": 4})
        reg.add_eval("r1", "tuned", "heldout", {"exact_match": 0.9}, "eval/tuned.jsonl", "ff")
        reg.add_gate("r1", True, ["tuned beats zero-shot"])
        reg.add_export("r1", "merge", "out/merged")
        run = reg.run("r1")
        assert run["status"] == "training" and run["seed"] == 3 and run["pid"] == os.getpid()
        assert reg.dataset(run["train_dataset_id"])["n_examples"] == 2
        assert reg.evals("r1")[0]["metrics"] == {"exact_match": 0.9}
        assert reg.gates("r1")[0]["passed"] == 1
        assert reg.exports("r1")[0]["kind"] == "merge"


def test_a_run_whose_process_died_is_marked_failed(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with Registry(tmp_path) as reg:
        reg.add_run("dead", "x", "p", {})
        reg.update_run("dead", status="training")
        reg.db.execute("UPDATE runs SET pid = ? WHERE id = 'dead'", (gone.pid,))
        reg.add_run("alive", "x", "p", {})
        reg.update_run("alive", status="training")
    with Registry(tmp_path) as reg:
        assert reg.run("dead")["status"] == "failed"
        assert reg.run("alive")["status"] == "training"  # this process is still running it


WRITER = textwrap.dedent(
    """
    import sys
    from tuneloop.registry import Registry
    reg = Registry(sys.argv[1])
    reg.add_run(sys.argv[2], "w", "p", {})
    i = 0
    while True:
        reg.add_eval(sys.argv[2], "tuned", "heldout", {"i": i, "pad": "x" * 2000})
        i += 1
    """
)


def test_sigkill_during_writes_leaves_a_consistent_database(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"w{i}"]) for i in range(2)
    ]
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until both writers are mid-stream
        try:
            with sqlite3.connect(tmp_path / "registry.db", timeout=30) as db:
                if db.execute("SELECT COUNT(DISTINCT run_id) FROM evals").fetchone()[0] == 2:
                    break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.2)
    time.sleep(0.5)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with Registry(tmp_path) as reg:
        assert reg.integrity() == "ok"
        for name in ("w0", "w1"):
            values = [e["metrics"]["i"] for e in reg.evals(name)]
            assert values == list(range(len(values))) and values  # no gap, no torn row
            assert reg.run(name)["status"] == "failed"  # `created` by a dead process
