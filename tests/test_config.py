"""The recipe: loaded once, every problem reported at once with its line, paths resolved."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tuneloop.cli.main import app
from tuneloop.config import Recipe, load_recipe, validate_recipe
from tuneloop.errors import UserError

VALID = """\
name: intents
workspace: ws
model:
  name: smollm2-135m-instruct
data:
  train: data/train.jsonl
  heldout: data/heldout.jsonl
train:
  lr: 0.001
  lora: {r: 4}
"""


def write(folder: Path, text: str, name: str = "tuneloop.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(err: UserError) -> dict[str, str]:
    """{dotted field: rendered problem} from the `where` of each problem, "file:line (field)"."""
    out = {}
    for p in err.problems:
        assert p.where is not None
        field = p.where.rsplit("(", 1)[1].rstrip(")")
        out[field] = p.render()
    return out


def test_valid_recipe_loads_with_defaults_and_absolute_paths(tmp_path):
    recipe = load_recipe(write(tmp_path, VALID))
    assert recipe.name == "intents"
    assert recipe.train.lr == 0.001
    assert recipe.train.lora.r == 4
    assert recipe.train.lora.alpha == 32  # defaults fill in what the recipe leaves out
    assert recipe.train.batch_size == 8
    assert recipe.eval.max_new_tokens is None  # derived from the references when evaluating
    assert recipe.model.trust_remote_code is False
    # Relative paths are relative to the recipe's folder, not to the current directory.
    assert recipe.workspace == (tmp_path / "ws").resolve()
    assert recipe.data.train == (tmp_path / "data" / "train.jsonl").resolve()
    assert recipe.data.heldout == (tmp_path / "data" / "heldout.jsonl").resolve()
    assert recipe.model.name == "smollm2-135m-instruct"  # not a path: left alone


def test_relative_paths_resolve_against_recipe_folder_not_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "project"
    sub.mkdir()
    (sub / "models" / "mine").mkdir(parents=True)
    path = write(sub, "model: {name: models/mine}\ndata: {train: train.csv}\n")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(Path("project/tuneloop.yaml"))
    assert recipe.data.train == (sub / "train.csv").resolve()
    assert recipe.workspace == (sub / ".tuneloop").resolve()
    assert recipe.model.name == str((sub / "models" / "mine").resolve())
    assert recipe.data.csv is not None and recipe.data.csv.text == "text"  # CSV gets a mapping
    assert path.is_file()


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        ("file:mlruns", "file://{base}/mlruns"),
        ("./mlruns", "file://{base}/mlruns"),
        ("file:///srv/mlruns", "file:///srv/mlruns"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ],
)
def test_an_mlflow_folder_resolves_against_the_recipe_folder(tmp_path, monkeypatch, given,
                                                             resolved):  # fmt: skip
    """Training, evaluation and the gate must find one store wherever they are started."""
    sub = tmp_path / "project"
    sub.mkdir()
    write(sub, f"data: {{train: t.jsonl}}\ntrack: {{mlflow: '{given}'}}\n")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(Path("project/tuneloop.yaml"))
    assert recipe.track.mlflow == resolved.format(base=sub.resolve())


@pytest.mark.parametrize(
    ("text", "field", "line", "guess"),
    [
        ("data: {train: t.jsonl}\ntrian: {lr: 0.1}\n", "trian", 2, "train"),
        ("data:\n  train: t.jsonl\n  fromat: auto\n", "data.fromat", 3, "format"),
        (
            "data: {train: t.jsonl}\ntrain:\n  lora:\n    alpah: 8\n",
            "train.lora.alpah",
            4,
            "alpha",
        ),
        (
            "data:\n  train: t.csv\n  csv: {txt: q}\n",
            "data.csv.txt",
            3,
            "text",
        ),
    ],
)
def test_unknown_keys_are_errors_with_a_hint(tmp_path, text, field, line, guess):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_recipe(path)
    (problem,) = info.value.problems
    assert problem.where == f"{path}:{line} ({field})"
    assert f"unknown key `{field.rsplit('.', 1)[-1]}`" in problem.what
    assert f"did you mean `{guess}`?" in problem.fix


def test_every_problem_is_reported_at_once_with_line_and_field(tmp_path):
    text = """\
name: t
model:
  name: x
  trust_remot_code: true
data:
  train: t.jsonl
train:
  lr: -0.1
  batch_size: many
  schedule: cosin
"""
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_recipe(path)
    found = problems(info.value)
    assert set(found) == {
        "model.trust_remot_code",
        "train.lr",
        "train.batch_size",
        "train.schedule",
    }
    assert found["model.trust_remot_code"].startswith(f"{path}:4 ")
    assert "did you mean `trust_remote_code`" in found["model.trust_remot_code"]
    assert found["train.lr"].startswith(f"{path}:8 ")
    assert "greater than 0" in found["train.lr"] and "-0.1" in found["train.lr"]
    assert found["train.batch_size"].startswith(f"{path}:9 ")
    assert "'many'" in found["train.batch_size"]
    assert found["train.schedule"].startswith(f"{path}:10 ")
    assert "'cosine', 'linear' or 'constant'" in found["train.schedule"]
    assert "4 problem(s)" in str(info.value)
    # The one message carries all of them, for the command line to print.
    for field in found:
        assert field in str(info.value)


def test_missing_train_data_is_reported(tmp_path):
    path = write(tmp_path, "name: t\ndata:\n  format: auto\n")
    with pytest.raises(UserError) as info:
        load_recipe(path)
    (problem,) = info.value.problems
    assert problem.where == f"{path}:2 (data.train)"  # the line of the section it belongs in
    assert "missing" in problem.what
    assert "data.train" in problem.fix


def test_missing_data_section_is_reported(tmp_path):
    path = write(tmp_path, "name: t\n")
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert [p.where for p in info.value.problems] == [f"{path} (data)"]


def test_invalid_yaml_is_reported_with_line_and_column(tmp_path):
    path = write(tmp_path, "name: t\ndata:\n  train: [a, b\nmodel: {}\n")
    with pytest.raises(UserError) as info:
        load_recipe(path)
    (problem,) = info.value.problems
    assert problem.what.startswith("not valid YAML")
    file, line, col = problem.where.rsplit(":", 2)
    assert file == str(path)
    assert line.isdigit() and col.isdigit()
    assert int(line) == 4  # where the parser found the unclosed list over


def test_tab_indentation_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, "name: t\ndata:\n\ttrain: x\n")
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert info.value.problems[0].where == f"{path}:3:1"


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_recipe_must_be_a_mapping(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(UserError, match="must be a mapping") as info:
        load_recipe(path)
    assert info.value.problems[0].where == str(path)


def test_missing_recipe_file_says_how_to_make_one(tmp_path):
    with pytest.raises(UserError, match="recipe file not found") as info:
        load_recipe(tmp_path / "nope.yaml")
    assert "tuneloop init" in info.value.problems[0].fix


def test_recipe_that_is_not_utf8_is_a_user_error(tmp_path):
    path = tmp_path / "tuneloop.yaml"
    path.write_bytes(b"data:\n  train: t.jsonl\nname: caf\xe9\n")
    with pytest.raises(UserError, match="UTF-8") as info:
        load_recipe(path)
    assert info.value.problems[0].where == f"{path}:3"


def test_overrides_are_applied_before_validation(tmp_path):
    path = write(tmp_path, VALID)
    recipe = load_recipe(path, {"train.lr": 0.01, "train.lora.r": 2, "eval.max_items": 5})
    assert recipe.train.lr == 0.01
    assert recipe.train.lora.r == 2
    assert recipe.train.lora.alpha == 32
    assert recipe.eval.max_items == 5
    assert recipe.name == "intents"


def test_overrides_can_fill_an_empty_section(tmp_path):
    path = write(tmp_path, "data: {train: t.jsonl}\ntrain:\n")
    assert load_recipe(path, {"train.lr": 0.5}).train.lr == 0.5


def test_override_into_a_value_that_is_not_a_section_is_a_user_error(tmp_path):
    path = write(tmp_path, "data: {train: t.jsonl}\nmodel: some-model\n")
    with pytest.raises(UserError, match="model"):
        load_recipe(path, {"model.name": "other"})


def test_bad_override_is_validated_like_the_file(tmp_path):
    path = write(tmp_path, VALID)
    with pytest.raises(UserError) as info:
        load_recipe(path, {"train.lr": -1, "train.lora.rr": 3})
    assert set(problems(info.value)) == {"train.lr", "train.lora.rr"}


def test_resolved_recipe_round_trips_through_yaml(tmp_path):
    path = write(tmp_path, VALID)
    recipe = load_recipe(path, {"task.instruction": "Answer with the label."})
    again = validate_recipe(yaml.safe_load(recipe.to_yaml()))
    assert again == recipe
    assert again.to_yaml() == recipe.to_yaml()
    # Every default is written out, so the saved recipe does not depend on future defaults.
    saved = yaml.safe_load(recipe.to_yaml())
    assert saved["train"]["warmup_ratio"] == Recipe.model_fields["train"].default.warmup_ratio
    assert Path(saved["workspace"]).is_absolute()


def test_round_trip_keeps_csv_mapping(tmp_path):
    path = write(tmp_path, "data:\n  train: t.csv\n  csv: {text: q, label: intent}\n")
    recipe = load_recipe(path)
    assert validate_recipe(yaml.safe_load(recipe.to_yaml())) == recipe


def test_init_writes_a_recipe_that_loads(tmp_path):
    result = CliRunner().invoke(app, ["init", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    path = tmp_path / "tuneloop.yaml"
    recipe = load_recipe(path)
    assert recipe.data.train == (tmp_path / "data" / "train.jsonl").resolve()
    assert recipe.data.heldout == (tmp_path / "data" / "heldout.jsonl").resolve()
    assert recipe.model.trust_remote_code is False
    # A second init refuses to overwrite, unless --force.
    again = CliRunner().invoke(app, ["init", str(tmp_path)])
    assert again.exit_code == 2
    assert "already exists" in again.output and "--force" in again.output
    forced = CliRunner().invoke(app, ["init", str(tmp_path), "--force"])
    assert forced.exit_code == 0


def test_gate_suites_resolve_against_the_recipe_and_unknown_suites_are_errors(tmp_path):
    text = VALID + "gate:\n  suites:\n    mmlu: {path: ../evalsuites/mmlu, n: 300}\n"
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.gate.suites["mmlu"].path == (tmp_path.parent / "evalsuites" / "mmlu").resolve()
    assert recipe.gate.suites["mmlu"].n == 300 and recipe.gate.inconclusive == "fail"
    bad = VALID + "gate:\n  suites:\n    hellaswag: {path: x}\n  inconclusive: maybe\n"
    with pytest.raises(UserError) as err:
        load_recipe(write(tmp_path, bad))
    message = str(err.value)
    assert "gate.suites.hellaswag" in message and "mmlu" in message
    assert "gate.inconclusive" in message and "tuneloop.yaml:13" in message


def test_an_invalid_json_schema_is_a_recipe_error_at_load(tmp_path):
    text = VALID + "task:\n  kind: json\n  json_schema:\n    type: object\n    required: intent\n"
    with pytest.raises(UserError) as err:
        load_recipe(write(tmp_path, text))
    message = problems(err.value)["task.json_schema"]
    assert "tuneloop.yaml:15" in message  # the line of `required`, long before any generation
    assert "not a valid JSON Schema" in message
    assert "'intent' is not of type 'array'" in message and "required" in message
    assert "fix:" in message


@pytest.mark.parametrize(
    ("task", "ok"),
    [
        ("kind: label\n  metric: exact_match", True),
        ("kind: text\n  metric: chrf", True),
        ("kind: auto\n  metric: rouge_l", True),  # some kind produces it; checked again later
        ("kind: json\n  metric: json_fields", True),
        ("kind: label\n  metric: rouge_l", False),  # a text metric on a label task
        ("kind: auto\n  metric: acuracy", False),  # no kind produces it
        ("kind: json\n  metric: json_schema", False),  # needs task.json_schema
        ("kind: text\n  metric: judge", False),  # needs eval.judge
    ],
)
def test_task_metric_is_checked_when_the_recipe_loads(tmp_path, task, ok):
    path = write(tmp_path, VALID + f"task:\n  {task}\n")
    if ok:
        load_recipe(path)
        return
    with pytest.raises(UserError) as err:
        load_recipe(path)
    message = problems(err.value)["task.metric"]
    assert "tuneloop.yaml:13" in message and "fix:" in message
    assert "exact_match" in message  # the choices are listed


def test_task_metric_judge_and_json_schema_are_accepted_when_configured(tmp_path):
    text = VALID + (
        "task:\n  kind: json\n  metric: json_schema\n  json_schema: {type: object}\n"
        "eval:\n  judge: {url: 'http://127.0.0.1:1/v1', model: m}\n"
    )
    assert load_recipe(write(tmp_path, text)).task.metric == "json_schema"
    judged = (
        VALID + "task: {metric: judge}\neval:\n  judge: {url: 'http://127.0.0.1:1/v1', model: m}\n"
    )
    assert load_recipe(write(tmp_path, judged)).task.metric == "judge"


@pytest.mark.parametrize("objective", ["grpo", "reward"])
def test_packing_is_refused_for_objectives_that_read_whole_rows(tmp_path, objective):
    path = write(tmp_path, VALID + f"  objective: {objective}\n  packing: true\n")
    with pytest.raises(UserError) as info:
        load_recipe(path)
    found = problems(info.value)
    assert f"objective `{objective}`" in found["train.packing"]
    assert "set `train.packing: false`" in found["train.packing"]


def test_packing_takes_true_false_or_auto_with_one_clear_error(tmp_path):
    assert load_recipe(write(tmp_path, VALID + "  packing: true\n")).train.packing is True
    assert load_recipe(write(tmp_path, VALID)).train.packing == "auto"
    with pytest.raises(UserError) as info:
        load_recipe(write(tmp_path, VALID + "  packing: maybe\n"))
    found = problems(info.value)
    assert set(found) == {"train.packing"} and "'maybe'" in found["train.packing"]
    assert "'auto'" in found["train.packing"]
