"""Optional experiment trackers, through their own libraries: TensorBoard and MLflow.

Switched on in the recipe (`track: {tensorboard: true, mlflow: http://127.0.0.1:5000}`). Each
command on a run opens one `Trackers` and hands it what it also writes into the run folder:

    tuneloop train   the resolved recipe as parameters, then every line of metrics.jsonl at its
                     step (loss, lr, tokens, grad_norm, tokens_per_s, the objective's scalars,
                     eval_loss): `train/loop.py`, for every objective
    tuneloop eval    each rung's summary numbers as `eval/<rung>/<name>`: `evaluate/run.py`
    tuneloop gate    the verdict as `gate/passed` and each condition as `gate/<condition>/...`:
                     `evaluate/gate.py`

TensorBoard writes event files into `<run>/tensorboard`. MLflow logs into one MLflow run per
tuneloop run, in the experiment named after the recipe and tagged `tuneloop.run: <run id>`;
evaluation and the gate find that run by its tag and log into it. run.json says where
(`tracking`).

A tracker holds a copy of what the run folder already holds. So one that fails while the run
goes on (a server down, a full disk) is switched off for the rest of the command: the failure is
said once on stderr and kept in run.json (`notes`, and `tracking.<tracker>.stopped`), and the
command goes on. A tracker the environment cannot give at all (its package missing, an MLflow
URI its client refuses) is a `UserError` before any work (`check_trackers`).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator

from tuneloop.config import Recipe
from tuneloop.errors import UserError
from tuneloop.workspace import Run


def check_trackers(recipe: Recipe) -> None:
    """Refuse a `track:` section this environment cannot honour, before any work is done.

    Building the MLflow client builds its store, which refuses a URI it cannot use (MLflow 3
    opens a folder store only with MLFLOW_ALLOW_FILE_STORE=true, and mlflow-skinny has no
    database stores) without contacting a server: a server that is down is found at run time.
    """
    cfg = recipe.track
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard writes through it)
        except ImportError:
            raise UserError(
                "track.tensorboard is on but the tensorboard package is not installed",
                "track.tensorboard",
                "pip install tensorboard (or pip install 'tuneloop[track]'), or remove "
                "track.tensorboard",
            ) from None
    if cfg.mlflow:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError(
                "track.mlflow is set but the mlflow package is not installed",
                "track.mlflow",
                "pip install mlflow-skinny (or pip install 'tuneloop[track]'), or remove "
                "track.mlflow",
            ) from None
        try:
            MlflowClient(cfg.mlflow)
        except Exception as err:  # MLflow says why in its own exception types
            raise UserError(
                f"MLflow cannot use the tracking URI {cfg.mlflow!r}: {_short(err)}",
                "track.mlflow",
                _mlflow_fix(cfg.mlflow),
            ) from None


def _mlflow_fix(uri: str) -> str:
    scheme = uri.split(":", 1)[0] if re.match(r"[A-Za-z][\w+.-]+:", uri) else "file"
    if scheme == "file":
        return (
            "run with MLFLOW_ALLOW_FILE_STORE=true in the environment (MLflow 3 opens folder "
            "stores only on request), or start `mlflow server` and set track.mlflow to its URL"
        )
    if scheme in ("sqlite", "postgresql", "mysql", "mssql"):
        return "pip install mlflow (database stores need the full package, not mlflow-skinny)"
    return "set track.mlflow to an MLflow server's URL (http://HOST:PORT) or a folder (file:PATH)"


class Trackers:
    """The trackers `recipe` switches on, for one command on `run`; none when `recipe` is None
    (the other processes of a multi-process run: one process tracks).

    `training` opens the MLflow run as a run in progress, logs the recipe as parameters and ends
    the run when the block ends (FINISHED, FAILED or KILLED); `resumed_at` is the step a resumed
    training continues from (TensorBoard drops the events it wrote after it).
    """

    def __init__(self, run: Run, recipe: Recipe | None, *, training: bool = False,
                 resumed_at: int = 0):  # fmt: skip
        self.run, self.training = run, training
        self.tensorboard = None  # a torch SummaryWriter
        self.mlflow: _MlflowRun | None = None
        if recipe is None:
            return
        cfg = recipe.track
        if cfg.tensorboard:
            with self._guard("tensorboard", "opening the event files"):
                self.tensorboard = _open_tensorboard(run, recipe, training, resumed_at)
                self._record("tensorboard", dir=str(run.path / "tensorboard"))
        if cfg.mlflow:
            with self._guard("mlflow", f"opening its run at {cfg.mlflow}"):
                self.mlflow = _MlflowRun.find_or_create(cfg.mlflow, recipe.name, run.id)
                self._record("mlflow", uri=cfg.mlflow, experiment=recipe.name,
                             run_id=self.mlflow.run_id)  # fmt: skip
                if training:
                    self.mlflow.start(_params(recipe))

    def log(self, record: dict) -> None:
        """One line of metrics.jsonl, at its step."""
        self._metrics(_numbers(record), record["step"], f"logging step {record['step']}")

    def evaluation(self, name: str, summary: dict) -> None:
        """One evaluation's summary (`evaluate_run`'s results: `rung` or `folder/rung`): its
        numbers, and the confidence interval of its task metric, as `eval/<name>/<key>`."""
        numbers = _numbers(summary)
        metric = summary.get("metric")
        ci = (summary.get("ci") or {}).get(metric) if metric else None
        if isinstance(ci, dict):
            numbers.update({f"{metric}_ci_{end}": ci[end] for end in ("low", "high") if end in ci})
        named = {_key(f"eval/{name}/{k}"): v for k, v in numbers.items()}
        self._metrics(named, self._last_step(), f"logging evaluation {name}")

    def gate(self, report: dict) -> None:
        """The gate's verdict (`GateReport.to_dict()`): `gate/passed` (1 or 0), each condition's
        `gate/<name>/passed` and numbers; the verdict and its reasons as text (TensorBoard) or
        tags (MLflow: `tuneloop.gate`, `tuneloop.gate.reasons`)."""
        numbers = {"gate/passed": float(report["passed"])}
        for c in report["conditions"]:
            numbers[_key(f"gate/{c['name']}/passed")] = float(c["passed"])
            numbers.update({_key(f"gate/{c['name']}/{k}"): v
                            for k, v in _numbers(c.get("numbers") or {}).items()})  # fmt: skip
        step = self._last_step()
        self._metrics(numbers, step, "logging the gate")
        verdict = "pass" if report["passed"] else "fail"
        if self.tensorboard is not None:
            with self._guard("tensorboard", "logging the gate"):
                lines = "\n".join(f"- {line}" for line in report["reasons"])
                self.tensorboard.add_text("gate", f"**{verdict}**\n\n{lines}", step)
        if self.mlflow is not None:
            with self._guard("mlflow", "logging the gate"):
                reasons = "\n".join(report["reasons"])
                self.mlflow.tags({"tuneloop.gate": verdict, "tuneloop.gate.reasons": reasons})

    def close(self, status: str = "FINISHED") -> None:
        """Flush the event files; after training, end the MLflow run with `status`."""
        if self.tensorboard is not None:
            with self._guard("tensorboard", "closing the event files"):
                if self.training and status == "FINISHED":  # HParams: the session succeeded
                    from torch.utils.tensorboard.summary import hparams

                    self.tensorboard.file_writer.add_summary(hparams({}, {})[2])
                self.tensorboard.close()
        if self.mlflow is not None and self.training:
            with self._guard("mlflow", "ending its run"):
                self.mlflow.end(status)

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, kind, err, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.close("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")

    def _metrics(self, numbers: dict[str, float], step: int, what: str) -> None:
        if self.tensorboard is not None:
            with self._guard("tensorboard", what):
                for key, value in numbers.items():
                    self.tensorboard.add_scalar(key, value, step)
        if self.mlflow is not None:
            with self._guard("mlflow", what):
                self.mlflow.metrics(numbers, step)

    @contextlib.contextmanager
    def _guard(self, tracker: str, what: str) -> Iterator[None]:
        """Run one tracker call; if it fails, switch that tracker off and say so, once."""
        try:
            yield
        except Exception as err:  # any failure of a copy is said, none stops the run
            setattr(self, tracker, None)
            message = (
                f"track.{tracker}: tracking stopped while {what} ({type(err).__name__}: "
                f"{_short(err)}); the run goes on without it, and metrics.jsonl, eval/ and "
                "gate.json in the run folder keep every number"
            )
            from tuneloop.registry.record import tell

            tell(self.run.path, message)  # on stderr, and in run.json's notes
            self._record(tracker, stopped=message)

    def _record(self, tracker: str, **fields) -> None:
        """Where the tracker logs (or why it stopped), in run.json under `tracking`."""
        info = self.run.info()
        if not info:  # no run.json to keep it in
            return
        tracking = info.get("tracking") or {}
        tracking[tracker] = {**(tracking.get(tracker) or {}), **fields}
        self.run.update(tracking=tracking)

    def _last_step(self) -> int:
        """Evaluations and the gate are logged at the training's last step."""
        return int(self.run.info().get("steps") or 0)


def log_evaluations(run: Run, recipe: Recipe, results: dict[str, dict]) -> None:
    """Every evaluation `evaluate_run` made (`rung` or `folder/rung` -> summary)."""
    with Trackers(run, recipe) as trackers:
        for name, summary in results.items():
            trackers.evaluation(name, summary)


def log_gate(run: Run, recipe: Recipe, report: dict) -> None:
    """The gate's verdict, as saved in gate.json."""
    with Trackers(run, recipe) as trackers:
        trackers.gate(report)


def _open_tensorboard(run: Run, recipe: Recipe, training: bool, resumed_at: int):
    """A SummaryWriter on `<run>/tensorboard`; when training, with the recipe as text (under
    `recipe`) and as hyperparameters (HParams, its plain values)."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    # A resumed run logs again the steps after its checkpoint: drop what was written past it.
    purge = resumed_at + 1 if training and resumed_at else None
    writer = SummaryWriter(log_dir=str(run.path / "tensorboard"), purge_step=purge)
    if training:
        text = "\n".join("    " + line for line in recipe.to_yaml().splitlines())  # a code block
        writer.add_text("recipe", text, resumed_at)
        plain = {k: v if isinstance(v, str | int | float) else json.dumps(v)
                 for k, v in _flat_recipe(recipe).items() if v is not None}  # fmt: skip
        plain = {k: v for k, v in plain.items() if not isinstance(v, str) or len(v) <= 200}
        experiment, session_start, _ = hparams(plain, {"loss": 0.0, "eval_loss": 0.0})
        writer.file_writer.add_summary(experiment, resumed_at)
        writer.file_writer.add_summary(session_start, resumed_at)
    return writer


class _MlflowRun:
    """One MLflow run, through `MlflowClient` (no process-wide active run is set)."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    @classmethod
    def find_or_create(cls, uri: str, experiment: str, tuneloop_run: str) -> _MlflowRun:
        """The run tagged `tuneloop.run: <id>` in `experiment` (made if missing), or a new one."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        runs = client.search_runs([experiment_id], f"tags.`tuneloop.run` = '{tuneloop_run}'",
                                  max_results=1)  # fmt: skip
        if runs:
            return cls(client, runs[0].info.run_id)
        created = client.create_run(experiment_id, tags={"tuneloop.run": tuneloop_run},
                                    run_name=tuneloop_run)  # fmt: skip
        return cls(client, created.info.run_id)

    def start(self, params: dict[str, str]) -> None:
        """Mark the run in progress (again, on resume) and log the recipe as its parameters."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        self.client.update_run(self.run_id, status="RUNNING")
        self.client.log_batch(
            self.run_id, params=[Param(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]
        )

    def metrics(self, numbers: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, v, now, step) for k, v in numbers.items()]
        )

    def tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag
        from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

        self.client.log_batch(
            self.run_id, tags=[RunTag(k, v[:MAX_TAG_VAL_LENGTH]) for k, v in tags.items()]
        )

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


def _flat_recipe(recipe: Recipe) -> dict:
    """The resolved recipe with dotted keys: {"train.method": "lora", "train.lr": 0.0002, ...}."""
    from tuneloop.registry.queries import flatten

    return {_key(k): v for k, v in flatten(recipe.model_dump(mode="json")).items()}


def _params(recipe: Recipe) -> dict[str, str]:
    """The resolved recipe as MLflow parameters: strings as they are, other values as JSON
    (0.0002, true, null, ["q_proj", "v_proj"])."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in _flat_recipe(recipe).items()}


def _numbers(values: dict) -> dict[str, float]:
    """The plain numbers of a record or summary (not the step, not booleans or nested values)."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "step"
    }


def _key(name: str) -> str:
    """A metric or parameter name both trackers accept (MLflow allows letters, digits and
    `_-. :/`): an endpoint rung `gpt+few-shot` is logged as `gpt_few-shot`."""
    return re.sub(r"[^\w\-. :/]", "_", name)[:250]


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
