"""The dashboard's pages on a real workspace, and its answers to bad input: an unknown run, a
corrupt run folder, a registry from a newer tuneloop, paths that lead out of the workspace."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from dashboard_workspace import workspace  # noqa: F401 - the session fixture
from fastapi.testclient import TestClient

from tuneloop.ui.app import create_app
from tuneloop.ui.live import Follower
from tuneloop.ui.store import Workspace


def client(ws) -> TestClient:
    return TestClient(create_app(ws), raise_server_exceptions=False)


def clear_page(response, status: int, *words: str) -> None:
    """An error page: the status, a sentence, no traceback."""
    assert response.status_code == status, response.text[-500:]
    assert f'data-status="{status}"' in response.text
    assert "Traceback" not in response.text and 'File "' not in response.text
    for word in words:
        assert word in response.text, word


def test_every_page_renders_the_workspace(workspace):  # noqa: F811
    ws, first, second = workspace
    c = client(ws)
    runs = c.get("/").text
    assert first.id in runs and second.id in runs
    assert "exact_match" in runs and "DO NOT SHIP (inconclusive" in runs
    assert f"(refines {first.id})" in runs
    run = c.get(f"/runs/{first.id}").text
    for text in (
        'id="loss"',
        "Baseline ladder vs tuned",
        'id="gate"',
        "the CI straddles",
        "nearest training examples",
        'id="exports"',
        "merged",
        "Recipe (resolved)",
    ):
        assert text in run, text
    assert run.count('class="chart"') >= 3  # loss, rungs, gate forest (and per class)
    compare = c.get(f"/compare?a={first.id}:tuned&b={second.id}:tuned").text
    assert "paired bootstrap" in compare and "McNemar p (exact)" in compare
    assert "Discordant items (" in compare
    lineage = c.get("/lineage").text
    for href in (
        f"/runs/{first.id}",
        f"/runs/{second.id}",
        f"/data/{first.id}",
        f"/runs/{first.id}#gate",
        f"/runs/{first.id}#exports",
    ):
        assert f'href="{href}"' in lineage, href
    assert 'class="edge parent"' in lineage  # the refined run hangs off its parent
    data = c.get(f"/data/{first.id}").text
    assert "<h2>Lint (" in data and "Label balance" in data and "Lengths: train" in data
    assert first.id in c.get("/playground").text


def test_compare_on_a_slice_and_with_a_bad_metric(workspace):  # noqa: F811
    ws, first, _ = workspace
    c = client(ws)
    items = [json.loads(x) for x in (first.eval_dir / "tuned.jsonl").read_text().splitlines()]
    field, value = "topic", items[0]["meta"]["topic"]
    r = c.get(f"/compare?a={first.id}:zero-shot&b={first.id}:tuned&slice={field}={value}")
    assert r.status_code == 200 and "paired bootstrap" in r.text
    r = c.get(f"/compare?a={first.id}:zero-shot&b={first.id}:tuned&metric=nonsense")
    clear_page(r, 422, "nonsense")


def test_unknown_run_is_a_clear_404(workspace):  # noqa: F811
    ws, first, _ = workspace
    c = client(ws)
    for url in (
        "/runs/no-such-run",
        "/data/no-such-run",
        "/lineage?run=no-such-run",
        "/compare?a=no-such-run:tuned&b=x:tuned",
        f"/compare?a={first.id}:nope&b=x",
    ):
        clear_page(c.get(url), 404)


@pytest.mark.parametrize(
    "url",
    [
        "/runs/%2E%2E",
        "/runs/..%2F..%2F..%2Fetc",
        "/runs/%2Fetc%2Fpasswd",
        "/data/..%2Fregistry.db",
        "/runs/{run}/..%2F..%2F..%2Fetc%2Fpasswd",
        "/compare?a={run}:..%2F..%2F..%2Fetc%2Fpasswd&b=x",
        "/compare?a={run}:%2Fetc%2Fpasswd&b={run}:tuned",
        "/lineage?run=..%2F..",
        "/events/progress?run=..%2F..%2Fetc",
    ],
)
def test_no_route_reads_outside_the_workspace(workspace, url):  # noqa: F811
    ws, first, _ = workspace
    r = client(ws).get(url.format(run=first.id))
    assert r.status_code in (403, 404), r.status_code
    assert "root:" not in r.text and "Traceback" not in r.text


def test_links_out_of_the_workspace_are_refused(tmp_path, workspace):  # noqa: F811
    ws, first, _ = workspace
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy, symlinks=True)
    outside = tmp_path / "outside"
    shutil.copytree(first.path, outside / "secret-run")
    (copy / "runs" / "linked-run").symlink_to(outside / "secret-run")
    secret = outside / "secret.jsonl"
    secret.write_text(json.dumps({"prompt": "secret", "scores": {"exact_match": 1}}) + "\n")
    (copy / "runs" / first.id / "eval" / "leak.jsonl").symlink_to(secret)
    c = client(copy)
    clear_page(c.get("/runs/linked-run"), 404)
    assert "linked-run" not in c.get("/").text
    r = c.get(f"/compare?a={first.id}:leak&b={first.id}:tuned")
    clear_page(r, 403, "outside the workspace")
    assert "secret" not in r.text.replace(str(secret), "")


def test_a_corrupt_run_folder_is_a_clear_page(tmp_path, workspace):  # noqa: F811
    ws, first, second = workspace
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy)
    (copy / "runs" / first.id / "run.json").write_text("{not json")
    (copy / "runs" / second.id / "eval" / "tuned.jsonl").write_text('{"prompt": "x"\n')
    c = client(copy)
    runs = c.get("/")
    assert runs.status_code == 200 and "unreadable" in runs.text and second.id in runs.text
    clear_page(c.get(f"/runs/{first.id}"), 422, "corrupt run folder", "run.json")
    clear_page(c.get(f"/compare?a={second.id}:tuned&b={second.id}:zero-shot"), 422, "tuned.jsonl:1")


def test_a_registry_from_a_newer_tuneloop_is_a_clear_page(tmp_path, workspace):  # noqa: F811
    ws, first, _ = workspace
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy)
    db = sqlite3.connect(copy / "registry.db")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    c = client(copy)
    clear_page(c.get("/lineage"), 409, "newer tuneloop", "schema version 99")
    runs = c.get("/")
    assert runs.status_code == 200 and "newer tuneloop" in runs.text and first.id in runs.text


def test_progress_follows_what_training_appends(tmp_path):
    run = tmp_path / "runs" / "20260101-000000-live"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "training", "total_steps": 10}))
    log = run / "metrics.jsonl"

    def line(step: int) -> str:
        record = {
            "step": step,
            "loss": 1 / step,
            "lr": 1e-3,
            "tokens": 100 * step,
            "tokens_per_s": 50.0,
        }
        return json.dumps(record) + "\n"

    log.write_text(line(1))
    follower = Follower(Workspace(tmp_path))
    follower.poll()
    assert follower.poll() == []  # nothing new
    with log.open("a") as f:
        f.write(line(2) + line(3)[:10])  # the third line is still being written
    (event,) = follower.poll()
    assert event["points"] == [[2, 0.5]] and event["step"] == 2
    assert event["eta_s"] == pytest.approx((10 - 2) * 100 / 50.0)
