"""`data stats` times training by a measured throughput (the workspace's last run of the same
model) when there is one, and says plainly when it falls back to a rough constant."""

import json

from typer.testing import CliRunner

from tuneloop.cli.main import app
from tuneloop.config import DEFAULT_MODEL
from tuneloop.data.records import Example
from tuneloop.data.stats import compute_stats
from tuneloop.registry import Registry


def chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"message {i}"},
                         {"role": "assistant", "content": f"l{i % 2}"}]}  # fmt: skip


def test_the_time_comes_from_the_last_measured_run_of_the_model(tmp_path, tiny_model_dir):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(chat(i)) + "\n" for i in range(20)))
    workspace = tmp_path / "ws"
    with Registry(workspace) as reg:
        for run_id, speed in (("r1", 100.0), ("r2", 250.0)):
            recipe = {"train": {"method": "lora"}}
            reg.add_run(run_id, "t", str(workspace / "runs" / run_id), recipe)
            reg.update_run(run_id, status="finished", model_name=str(tiny_model_dir),
                           summary={"tokens_per_s": speed, "device": "cpu"})  # fmt: skip
        reg.add_run("other", "t", "p", {})
        reg.update_run("other", status="finished", model_name="another/model",
                       summary={"tokens_per_s": 9999.0})  # fmt: skip
    args = ["data", "stats", str(data), "--model", str(tiny_model_dir),
            "--workspace", str(workspace)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "at 250 tokens/s (measured by run r2" in result.output and "cpu" in result.output
    out = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    assert out["estimate"]["tokens_per_second"] == 250.0 and "r2" in out["estimate"]["basis"]


def test_the_constant_is_called_a_rough_constant_with_its_source(tiny_tokenizer):
    train = [Example([{"role": "user", "content": f"m {i}"}, {"role": "assistant", "content": "a"}])
             for i in range(8)]  # fmt: skip
    stats = compute_stats(train, [], tiny_tokenizer, model_name=DEFAULT_MODEL)
    assert stats.estimate.tokens_per_second == 400.0
    basis = stats.estimate.basis
    assert "rough constant" in basis and "docs/quickstart.md" in basis
    assert "not measured on this machine" in basis
