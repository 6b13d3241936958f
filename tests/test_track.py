"""Trackers receive every logged metric through their own libraries."""

import pytest

from tuneloop.config import validate_recipe
from tuneloop.track import Trackers
from tuneloop.workspace import Run


def test_tensorboard_and_mlflow_receive_metrics(tmp_path, monkeypatch):
    pytest.importorskip("torch.utils.tensorboard", reason="tensorboard not installed")
    mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny not installed")
    # A plain folder store keeps the test local; MLflow 3 asks for an explicit opt-in.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = validate_recipe(
        {
            "name": "tracked",
            "data": {"train": "x.jsonl"},
            "track": {"tensorboard": True, "mlflow": (tmp_path / "mlruns").as_uri()},
        }
    )
    run = Run(tmp_path / "runs" / "r1")
    run.path.mkdir(parents=True)
    trackers = Trackers(recipe, run)
    for step in range(1, 4):
        trackers.log(step, {"step": step, "loss": 1.0 / step, "lr": 0.1})
    trackers.close()

    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([1.0, 0.5, 1 / 3])

    client = mlflow.tracking.MlflowClient((tmp_path / "mlruns").as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert found.data.tags["tuneloop.run"] == "r1"
    assert found.data.params["train.lr"] == str(recipe.train.lr)
    history = client.get_metric_history(found.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3]
