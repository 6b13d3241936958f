"""The recipe's `track:` trackers receive what `tuneloop train`, `eval` and `gate` write into the
run folder: read back here from TensorBoard's event files and from the MLflow store."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from typer.testing import CliRunner

from conftest import free_port
from tuneloop.cli.main import app
from tuneloop.config import load_recipe
from tuneloop.evaluate.suites import probe_suites
from tuneloop.workspace import Run, latest_run

pytest.importorskip("tensorboard", reason="tensorboard not installed")
mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny not installed")
pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: see conftest

TOPICS = ["alpha", "beta", "gamma"]


def tuneloop(*args: str):
    """The real command line, in process."""
    return CliRunner().invoke(app, [str(a) for a in args])


def write_recipe(tmp_path, model_dir, track: dict) -> str:
    """A 4-step LoRA recipe on the tiny model, held-out loss every 2 steps, 6 held-out items;
    the gate reads the zero-shot rung only and no train-gap sample (no model work)."""
    rows = [
        {"messages": [{"role": "user", "content": f"item {i} about {TOPICS[i % 3]} things"},
                      {"role": "assistant", "content": TOPICS[i % 3]}]}
        for i in range(30)
    ]  # fmt: skip
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[24:]))
    recipe = {
        "name": "tracked",
        "workspace": "ws",
        "model": {"name": str(model_dir)},
        "data": {"train": "train.jsonl", "heldout": "heldout.jsonl"},
        "task": {"instruction": "Name the topic of the item."},
        "train": {
            "max_steps": 4,
            "batch_size": 4,
            "lr": 0.01,
            "eval_every": 2,
            "precision": "fp32",
            "lora": {"r": 4, "alpha": 8},
        },
        "eval": {"max_new_tokens": 4, "train_sample": 0},
        "gate": {"rungs": ["zero-shot"]},
        "track": track,
    }
    path = tmp_path / "tuneloop.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def write_probe_answers(run: Run) -> None:
    """Both models' answers to the gate's probes, as `tuneloop eval --probes` saves them, so
    that the gate asks no model."""

    def answers(kind: str, score: str, values: list[float]) -> list[dict]:
        return [{"id": f"{kind}-{i}", "kind": kind, "scores": {score: v}}
                for i, v in enumerate(values)]  # fmt: skip

    rows = {
        "general": answers("general", "correct", [float(i % 2) for i in range(40)]),
        "safety": answers("harmful", "refused", [1.0] * 40)
        + answers("benign", "refused", [0.0] * 40),
    }
    for suite in probe_suites(load_recipe(run.recipe_path)):
        for who in ("base", "tuned"):
            path = run.eval_dir / "probes" / f"{who}-{suite.name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows[suite.name]))
            path.with_suffix(".json").write_text(json.dumps({"sample": suite.sample}))


def events_of(run: Run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run.path / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return events


@pytest.fixture()
def folder_store(monkeypatch):
    """MLflow 3 opens a folder store only on request; a folder keeps the test local."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def test_training_evaluation_and_gate_reach_tensorboard_and_mlflow(
    tmp_path, tiny_model_dir, folder_store
):
    # A relative folder is the recipe's: eval and gate find the same store from anywhere.
    recipe = write_recipe(tmp_path, tiny_model_dir, {"tensorboard": True, "mlflow": "file:mlruns"})
    result = tuneloop("train", recipe, "--quiet")
    assert result.exit_code == 0, result.output
    run = latest_run(tmp_path / "ws")
    logged = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    result = tuneloop("eval", run.path, "--rung", "zero-shot", "--rung", "tuned", "--quiet")
    assert result.exit_code == 0, result.output
    write_probe_answers(run)
    result = tuneloop("gate", run.path, "--quiet")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 1), result.output  # 1: a failed gate
    tuned = json.loads((run.eval_dir / "tuned.json").read_text())
    gate = json.loads((run.path / "gate.json").read_text())
    assert "tracking stopped" not in result.output

    # TensorBoard: every step's loss at its step, the held-out loss, evaluation, gate, recipe.
    events = events_of(run)
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in logged], rel=1e-6)
    assert [e.step for e in events.Scalars("lr")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("eval_loss")] == [2, 4]
    (exact,) = events.Scalars("eval/tuned/exact_match")
    assert exact.step == 4 and exact.value == pytest.approx(tuned["exact_match"])
    assert events.Scalars("eval/zero-shot/n")[0].value == 6
    assert events.Scalars("gate/passed")[-1].value == float(gate["passed"])
    assert {"recipe/text_summary", "gate/text_summary"} <= set(events.Tags()["tensors"])

    # MLflow: one run, tagged with the tuneloop run, holding all of it.
    client = mlflow.tracking.MlflowClient((tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tracked")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.data.tags["tuneloop.run"] == run.id and found.info.status == "FINISHED"
    assert run.info()["tracking"]["mlflow"]["run_id"] == found.info.run_id
    params = found.data.params
    assert params["train.method"] == "lora" and params["train.lr"] == "0.01"
    assert params["train.lora.r"] == "4" and params["data.train"].endswith("train.jsonl")
    history = client.get_metric_history(found.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx([r["loss"] for r in logged])
    assert found.data.metrics["eval/tuned/exact_match"] == pytest.approx(tuned["exact_match"])
    assert "eval/tuned/exact_match_ci_low" in found.data.metrics
    assert found.data.metrics["gate/passed"] == float(gate["passed"])
    assert found.data.metrics["gate/task/passed"] == float(gate["conditions"][0]["passed"])
    assert found.data.tags["tuneloop.gate"] == ("pass" if gate["passed"] else "fail")
    assert found.data.tags["tuneloop.gate.reasons"].splitlines() == gate["reasons"]


def test_a_tracker_failing_mid_run_is_said_once_and_recorded(
    tmp_path, tiny_model_dir, folder_store, monkeypatch
):
    from mlflow.tracking import MlflowClient

    original, calls = MlflowClient.log_batch, []

    def server_goes_away(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        if metrics:  # the first step is logged, every later call fails
            calls.append(len(metrics))
            if len(calls) > 1:
                raise ConnectionError("tracking server went away")
        return original(self, run_id, metrics, params, tags, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", server_goes_away)
    recipe = write_recipe(tmp_path, tiny_model_dir, {"tensorboard": True, "mlflow": "file:mlruns"})
    result = tuneloop("train", recipe, "--quiet")
    assert result.exit_code == 0, result.output
    assert len(calls) == 2  # tried once more, then switched off
    said = [ln for ln in result.stderr.splitlines() if "tracking stopped" in ln]
    assert len(said) == 1
    assert "track.mlflow: tracking stopped while logging step 2" in said[0]
    assert "ConnectionError: tracking server went away" in said[0]
    run = latest_run(tmp_path / "ws")
    info = run.info()
    assert info["status"] == "finished" and info["steps"] == 4
    assert info["tracking"]["mlflow"]["stopped"] in info["notes"]
    assert "tracking server went away" in info["tracking"]["mlflow"]["stopped"]
    assert [e.step for e in events_of(run).Scalars("loss")] == [1, 2, 3, 4]  # TensorBoard goes on
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    history = client.get_metric_history(info["tracking"]["mlflow"]["run_id"], "loss")
    assert [m.step for m in history] == [1]


def test_an_unreachable_server_is_said_and_training_goes_on(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = tuneloop("train", write_recipe(tmp_path, tiny_model_dir, {"mlflow": uri}), "--quiet")
    assert result.exit_code == 0, result.output
    said = [ln for ln in result.stderr.splitlines() if "tracking stopped" in ln]
    assert len(said) == 1
    assert f"track.mlflow: tracking stopped while opening its run at {uri}" in said[0]
    info = latest_run(tmp_path / "ws").info()
    assert info["status"] == "finished" and "stopped" in info["tracking"]["mlflow"]


@pytest.mark.parametrize(
    ("track", "missing", "needles"),
    [
        ({"tensorboard": True}, ["tensorboard"], ["track.tensorboard", "pip install tensorboard"]),
        ({"mlflow": "file:mlruns"}, ["mlflow", "mlflow.tracking"],
         ["track.mlflow", "pip install mlflow-skinny"]),
        ({"mlflow": "file:mlruns"}, [], ["track.mlflow", "MLFLOW_ALLOW_FILE_STORE=true"]),
    ],
)  # fmt: skip
def test_a_tracker_this_environment_cannot_give_is_refused_before_any_weights_load(
    tmp_path, tiny_model_dir, monkeypatch, track, missing, needles
):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)  # `import` of it fails

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the recipe was refused")

    monkeypatch.setattr("tuneloop.train.session.load_base", no_weights)
    result = tuneloop("train", write_recipe(tmp_path, tiny_model_dir, track), "--quiet")
    assert result.exit_code == 2, result.output
    text = " ".join(result.stderr.split())
    assert all(needle in text for needle in needles), text
    assert not (tmp_path / "ws").exists()


def test_every_field_of_every_objectives_steps_reaches_tensorboard(tmp_path, tiny_model_dir):
    """The trackers hang off the loop all objectives share: a DPO run's own scalars too."""
    from tuneloop.config import validate_recipe
    from tuneloop.data.preference_examples import write_support_preferences
    from tuneloop.train import session

    prefs = write_support_preferences(tmp_path / "prefs.jsonl", n_per_label=2)
    recipe = validate_recipe(
        {
            "name": "dpo",
            "workspace": str(tmp_path / "ws"),
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(prefs)},
            "train": {"objective": "dpo", "max_steps": 3, "batch_size": 2, "precision": "fp32"},
            "track": {"tensorboard": True},
        }
    )
    run = session.train(recipe, progress=False)
    records = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert "reward_accuracy" in records[0]
    events = events_of(run)
    for key in set(records[0]) - {"step"}:
        assert [e.step for e in events.Scalars(key)] == [1, 2, 3], key
    assert run.info()["tracking"] == {"tensorboard": {"dir": str(run.path / "tensorboard")}}


def test_a_resumed_run_continues_its_tracked_run(tmp_path, tiny_model_dir, folder_store):
    """Resumed from step 2 of 4: TensorBoard drops the steps logged past the checkpoint, so each
    step is there once; MLflow logs into the same run and keeps both values of steps 3 and 4."""
    import shutil

    from tuneloop.train import session

    path = write_recipe(tmp_path, tiny_model_dir, {"tensorboard": True, "mlflow": "file:mlruns"})
    recipe = load_recipe(path, {"train.checkpoint_every": 2})
    run = session.train(recipe, progress=False)
    shutil.rmtree(run.checkpoints / "step-000004")  # as if killed after logging step 4
    session.train(recipe, resume=run, progress=False)
    assert [e.step for e in events_of(run).Scalars("loss")] == [1, 2, 3, 4]
    client = mlflow.tracking.MlflowClient((tmp_path / "mlruns").as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert found.info.run_id == run.info()["tracking"]["mlflow"]["run_id"]
    assert found.info.status == "FINISHED"
    history = client.get_metric_history(found.info.run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 3, 4, 4]
