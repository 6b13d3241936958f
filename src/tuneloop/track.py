"""Optional experiment trackers, through their own libraries: TensorBoard and MLflow.

Switched on in the recipe (`track: {tensorboard: true, mlflow: file:./mlruns}`); every metric
the loop logs to metrics.jsonl also goes to each tracker that is on.
"""

from __future__ import annotations

from tuneloop.config import Recipe
from tuneloop.errors import UserError
from tuneloop.workspace import Run


class Trackers:
    def __init__(self, recipe: Recipe, run: Run):
        self.tensorboard = None
        self.mlflow = None
        cfg = recipe.track
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError(
                    "track.tensorboard is on but the tensorboard package is not installed",
                    "track.tensorboard",
                    "pip install tensorboard (or pip install 'tuneloop[track]')",
                ) from None
            self.tensorboard = SummaryWriter(log_dir=str(run.path / "tensorboard"))
        if cfg.mlflow:
            try:
                import mlflow
            except ImportError:
                raise UserError(
                    "track.mlflow is set but the mlflow package is not installed",
                    "track.mlflow",
                    "pip install mlflow-skinny (or pip install 'tuneloop[track]')",
                ) from None
            from tuneloop.registry.queries import flatten

            mlflow.set_tracking_uri(cfg.mlflow)
            mlflow.set_experiment(recipe.name)
            self.mlflow = mlflow.start_run(run_name=run.id, tags={"tuneloop.run": run.id})
            params = {k: str(v)[:500] for k, v in flatten(recipe.model_dump(mode="json")).items()}
            mlflow.log_params(params)

    def log(self, step: int, metrics: dict) -> None:
        numbers = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, int | float) and k != "step"}  # fmt: skip
        if self.tensorboard is not None:
            for key, value in numbers.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.mlflow is not None:
            import mlflow

            mlflow.log_metrics(numbers, step=step, run_id=self.mlflow.info.run_id)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.mlflow is not None:
            import mlflow

            mlflow.end_run()
