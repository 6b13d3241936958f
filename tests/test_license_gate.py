"""A restrictively licensed model is refused by `tuneloop train` before any weights load, unless
the recipe names its license in `model.license_ack`; train and quickstart print the license."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from tuneloop.cli.main import app
from tuneloop.errors import UserError


@pytest.fixture()
def nc_model(tmp_path, tiny_model_dir):
    """The tiny model in a folder whose model card says `license: cc-by-nc-4.0`."""
    folder = tmp_path / "nc-model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "README.md").write_text("---\nlicense: cc-by-nc-4.0\ntags: [tiny]\n---\n# Tiny\n")
    return folder


class Started(Exception):
    """Raised where training would begin."""


@pytest.fixture()
def no_training(monkeypatch):
    """Training replaced by a recorder that stops there, and weight loading by a failure:
    nothing may load in these tests."""
    import transformers

    started = []

    def fail(*args, **kwargs):
        raise AssertionError("weights were loaded")

    def train(*args, **kwargs):
        started.append(args)
        raise Started

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fail)
    monkeypatch.setattr("tuneloop.train.session.train", train)
    return started


def write_recipe(tmp_path, model, **model_fields) -> str:
    row = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n")
    recipe = {
        "name": "nc",
        "workspace": str(tmp_path / "ws"),
        "model": {"name": str(model), **model_fields},
        "data": {"train": str(tmp_path / "train.jsonl")},
    }
    path = tmp_path / "tuneloop.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_train_refuses_a_non_commercial_model_before_any_weights_load(
    tmp_path, nc_model, no_training
):
    result = CliRunner().invoke(app, ["train", write_recipe(tmp_path, nc_model)])
    assert result.exit_code == 2, result.output
    assert "model.license_ack" in result.output and "cc-by-nc-4.0" in result.output
    assert "non-commercial use only" in result.output
    assert 'set `model.license_ack: "cc-by-nc-4.0"`' in result.output  # the fix
    assert no_training == [] and not (tmp_path / "ws").exists()


def test_an_acknowledgment_must_name_the_license_found(tmp_path, nc_model, no_training):
    stale = write_recipe(tmp_path, nc_model, license_ack="llama3.1")
    result = CliRunner().invoke(app, ["train", stale])
    assert result.exit_code == 2 and no_training == []
    assert "model.license_ack names `llama3.1`, but the model's license is `cc-by-nc-4.0`" in (
        " ".join(result.output.split())
    )
    named = write_recipe(tmp_path, nc_model, license_ack="CC-BY-NC-4.0")
    result = CliRunner().invoke(app, ["train", named])
    assert isinstance(result.exception, Started), result.output
    assert len(no_training) == 1
    assert "license: cc-by-nc-4.0 (model card" in result.output
    assert "RESTRICTIVE: non-commercial use only; acknowledged" in result.output


def test_check_license_error_and_permissive_or_unknown_models(tmp_path, nc_model, tiny_model_dir):
    from tuneloop.evaluate.license import check_license

    with pytest.raises(UserError) as err:
        check_license(str(nc_model), None)
    problem = err.value.problems[0]
    assert problem.where == "model.license_ack" and "cc-by-nc-4.0" in problem.what
    apache = tmp_path / "apache"
    shutil.copytree(tiny_model_dir, apache)
    (apache / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    assert not check_license(str(apache), None).restrictive
    # No license found: nothing to acknowledge, so a warning rather than a refusal.
    assert check_license(str(tiny_model_dir), None).license == "unknown"


def test_quickstart_prints_the_license_and_refuses_before_training(tmp_path, nc_model, monkeypatch):
    from tuneloop.quickstart import run_quickstart

    def train(*args, **kwargs):
        raise Started

    monkeypatch.setattr("tuneloop.train.session.train", train)
    said: list[str] = []
    with pytest.raises(UserError, match="model.license_ack"):
        run_quickstart(tmp_path / "qs-nc", said.append, model=str(nc_model), n_per_label=4)
    assert said[-1].startswith("4/8 train")
    apache = tmp_path / "apache"
    shutil.copytree(nc_model, apache)
    (apache / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    said.clear()
    with pytest.raises(Started):
        run_quickstart(tmp_path / "qs", said.append, model=str(apache), n_per_label=4)
    assert said[-1].strip() == "license: apache-2.0 (model card " + str(apache / "README.md") + (
        "); permissive"
    )
