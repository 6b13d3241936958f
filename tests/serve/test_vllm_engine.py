"""`tuneloop serve --engine vllm`, checked on the command it builds (vLLM is not installed here,
and needs a GPU): each adapter by name, a rank vLLM accepts, our options mapped to vLLM's, the
API key kept out of sight, and what vLLM cannot serve refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_adapters import make_adapter, make_adapters
from typer.testing import CliRunner

from conftest import build_tiny_model, train_tiny_run
from tuneloop.cli.main import app
from tuneloop.errors import UserError
from tuneloop.serve.options import ServeOptions
from tuneloop.serve.vllm_engine import (
    ServedAdapter,
    ServedBase,
    VllmOptions,
    lora_module,
    max_lora_rank,
    plan_vllm,
    vllm_command,
    vllm_executable,
)


def option(argv: list[str], name: str) -> list[str]:
    """The values given to `name` in `argv` (up to the next option)."""
    start = argv.index(name) + 1
    end = next((i for i in range(start, len(argv)) if argv[i].startswith("--")), len(argv))
    return argv[start:end]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_tokenizer, tiny_model_dir) -> dict[str, Path]:
    """alpha (rank 4), beta (8), gamma (2), all trained on tiny_model_dir."""
    return make_adapters(tmp_path_factory.mktemp("vllm-adapters"), tiny_tokenizer, tiny_model_dir)


def plan_for(adapters: dict[str, Path], workspace: Path, model: str | None = None):
    return plan_vllm([f"{name}={path}" for name, path in adapters.items()], model, workspace)


def test_each_adapter_is_served_by_name_on_the_base(adapters, tiny_model_dir, tmp_path):
    plan = plan_for(adapters, tmp_path)
    argv, env = vllm_command(plan.base, plan.adapters, VllmOptions())

    assert argv[:2] == ["vllm", "serve"] and Path(argv[2]) == plan.base.path
    assert (plan.base.path / "config.json").is_file()
    assert option(argv, "--served-model-name") == ["__base__"]  # our name for the base model
    assert "--enable-lora" in argv
    modules = dict(entry.split("=") for entry in option(argv, "--lora-modules"))
    assert list(modules) == ["alpha", "beta", "gamma"]
    for name, path in modules.items():
        config = json.loads((Path(path) / "adapter_config.json").read_text())
        source = json.loads((adapters[name] / "adapter_config.json").read_text())
        assert config == source  # the adapter itself (a copy vLLM's transformers reads alike)
    assert option(argv, "--max-lora-rank") == ["8"]  # ranks 4, 8, 2
    assert option(argv, "--max-loras") == ["3"] and option(argv, "--max-cpu-loras") == ["3"]
    assert env == {}

    bounded = VllmOptions(serve=ServeOptions(cache_size=2))
    argv, _ = vllm_command(plan.base, plan.adapters, bounded)
    assert option(argv, "--max-loras") == ["2"]  # at most --cache-size on the GPU at once
    assert option(argv, "--max-cpu-loras") == ["3"]  # every adapter kept ready in memory


def test_the_copies_vllm_reads_hold_both_transformers_conventions(adapters, tmp_path):
    plan = plan_for(adapters, tmp_path)
    config = json.loads((plan.base.path / "config.json").read_text())
    assert "rope_theta" in config  # transformers 4.x reads this, not rope_parameters
    tokenizer = json.loads((plan.adapters[0].path / "tokenizer_config.json").read_text())
    assert tokenizer["tokenizer_class"] == "PreTrainedTokenizerFast"
    again = plan_for(adapters, tmp_path)  # unchanged sources: the same copies, not remade
    assert again.base.path == plan.base.path
    assert (again.base.path / "config.json").stat().st_ino == (
        plan.base.path / "config.json"
    ).stat().st_ino


def test_max_lora_rank_is_the_smallest_choice_vllm_accepts():
    assert max_lora_rank([4, 8]) == 8
    assert max_lora_rank([2]) == 8
    assert max_lora_rank([12]) == 16
    assert max_lora_rank([8, 33]) == 64
    assert max_lora_rank([256]) == 256
    with pytest.raises(UserError, match="exceeds vLLM's largest --max-lora-rank"):
        max_lora_rank([300])


def test_a_rank_12_adapter_is_served_with_max_lora_rank_16(
    tmp_path, tiny_tokenizer, tiny_model_dir
):
    twelve = make_adapter(tmp_path / "twelve", tiny_tokenizer, tiny_model_dir, ["q_proj"], 12, 5)
    plan = plan_vllm([f"twelve={twelve}"], None, tmp_path / "ws")
    argv, _ = vllm_command(plan.base, plan.adapters, VllmOptions())
    assert plan.adapters[0].rank == 12 and option(argv, "--max-lora-rank") == ["16"]


@pytest.mark.parametrize(("precision", "dtype"),
                         [("auto", "auto"), ("bf16", "bfloat16"), ("fp32", "float32")])  # fmt: skip
def test_host_port_precision_and_lengths_map_to_vllm_options(precision, dtype):
    base = ServedBase(Path("/models/base"), context=512)
    options = VllmOptions(host="0.0.0.0", port=9001, serve=ServeOptions(precision=precision))
    argv, _ = vllm_command(base, [], options)
    assert option(argv, "--host") == ["0.0.0.0"] and option(argv, "--port") == ["9001"]
    assert option(argv, "--dtype") == [dtype]
    assert option(argv, "--max-model-len") == ["512"]  # the model's context bounds ours
    assert "--enable-lora" not in argv  # the base model alone
    roomy = ServedBase(Path("/models/base"), context=32768)
    limits = ServeOptions(max_prompt_tokens=2000, max_tokens=500)
    argv, _ = vllm_command(roomy, [], VllmOptions(serve=limits))
    assert option(argv, "--max-model-len") == ["2500"]  # a prompt and its answer


def test_the_api_key_goes_to_vllm_in_its_environment_not_its_arguments():
    base = ServedBase(Path("/models/base"))
    argv, env = vllm_command(base, [], VllmOptions(api_key="s3cret"))
    assert env == {"VLLM_API_KEY": "s3cret"}
    assert not any("s3cret" in a for a in argv) and "--api-key" not in argv


def test_runtime_adapter_loading_is_opt_in():
    base = ServedBase(Path("/models/base"))
    argv, env = vllm_command(base, [], VllmOptions(runtime_adapters=True))
    assert env == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"} and "--enable-lora" in argv
    assert vllm_command(base, [], VllmOptions())[1] == {}


def test_names_or_paths_vllm_cannot_split_use_the_json_form():
    plain = ServedAdapter("support", Path("/runs/a/adapter"), 8)
    assert lora_module(plain) == "support=/runs/a/adapter"
    for odd in (Path("/runs/a,b/adapter"), Path("/runs/x=y/adapter")):
        entry = lora_module(ServedAdapter("support", odd, 8))
        assert json.loads(entry) == {"name": "support", "path": str(odd)}


def test_what_vllm_cannot_serve_as_lora_is_refused_with_the_reason(
    tmp_path, tiny_tokenizer, tiny_model_dir
):
    from peft import IA3Config, PrefixTuningConfig, PromptTuningConfig, get_peft_model

    def peft_adapter(name: str, config) -> Path:
        model = get_peft_model(build_tiny_model(len(tiny_tokenizer)), config)
        model.save_pretrained(tmp_path / name)
        return tmp_path / name

    ws = tmp_path / "ws"
    ia3_config = IA3Config(
        target_modules=["v_proj", "down_proj"], feedforward_modules=["down_proj"]
    )
    ia3 = peft_adapter("ia3", ia3_config)
    with pytest.raises(UserError, match="vLLM serves LoRA adapters only; this is IA3") as err:
        plan_vllm([f"x={ia3}"], str(tiny_model_dir), ws)
    assert "--merge" in err.value.problems[0].fix
    for name, config in (
        ("prompt", PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)),
        ("prefix", PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)),
    ):
        with pytest.raises(UserError, match="vLLM does not serve prompt-learning adapters") as err:
            plan_vllm([f"x={peft_adapter(name, config)}"], str(tiny_model_dir), ws)
        assert "train.method lora" in err.value.problems[0].fix

    dora = make_adapter(tmp_path / "dora", tiny_tokenizer, tiny_model_dir, ["q_proj"], 4, 7,
                        use_dora=True)  # fmt: skip
    with pytest.raises(UserError, match="vLLM cannot serve adapter `d`") as err:
        plan_vllm([f"d={dora}"], None, ws)
    assert "vLLM does not support DoRA" in err.value.problems[0].what

    qlora = make_adapter(tmp_path / "qlora", tiny_tokenizer, tiny_model_dir, ["q_proj"], 4, 8)
    meta = json.loads((qlora / "tuneloop.json").read_text())
    meta["recipe"]["train"] = {"method": "qlora"}
    (qlora / "tuneloop.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="adapter `q` was trained with QLoRA") as err:
        plan_vllm([f"q={qlora}"], None, ws)
    problem = err.value.problems[0]
    assert "full-precision base" in problem.what
    assert "tuneloop export RUN --merge" in problem.fix and "--engine tuneloop" in problem.fix

    other = make_adapter(tmp_path / "other", tiny_tokenizer, Path("/elsewhere/model"),
                         ["q_proj"], 2, 9)  # fmt: skip
    with pytest.raises(UserError, match="trained on `/elsewhere/model`"):
        plan_vllm([f"o={other}"], str(tiny_model_dir), ws)


def full_run(workspace: Path, tiny_tokenizer, name: str, instruction: str | None = None) -> Path:
    """A finished full fine-tuning run as `tuneloop train` leaves one: run.json and model/."""
    run = workspace / "runs" / name
    build_tiny_model(len(tiny_tokenizer), seed=3).save_pretrained(run / "model")
    tiny_tokenizer.save_pretrained(run / "model")
    recipe = {"train": {"method": "full"}, "task": {"instruction": instruction}}
    meta = {"run": name, "base_model": "tiny", "method": "full", "recipe": recipe}
    (run / "model" / "tuneloop.json").write_text(json.dumps(meta))
    (run / "run.json").write_text(json.dumps({"id": name, "status": "finished"}))
    return run


def test_a_full_fine_tuned_run_is_served_as_the_base_model(tmp_path, tiny_tokenizer, adapters):
    run = full_run(tmp_path, tiny_tokenizer, "20260101-000000-full", "Name the topic.")
    ws = tmp_path / "ws"
    plan = plan_vllm([f"tuned={run}"], None, ws)
    argv, _ = vllm_command(plan.base, plan.adapters, VllmOptions())
    config = json.loads((plan.base.path / "config.json").read_text())
    assert config == {**json.loads((run / "model" / "config.json").read_text()), **config}
    assert option(argv, "--served-model-name") == ["tuned", "__base__"]
    assert "--enable-lora" not in argv and not plan.adapters
    template = Path(option(argv, "--chat-template")[0]).read_text()
    assert "Name the topic." in template  # its instruction, as in training

    by_id = plan_vllm([run.name], None, tmp_path)  # a run id inside the workspace (tmp_path)
    assert by_id.base.names == (run.name, "__base__")

    second = full_run(tmp_path, tiny_tokenizer, "20260101-000001-full")
    with pytest.raises(UserError, match="one vLLM server serves one base model"):
        plan_vllm([str(run), str(second)], None, ws)
    with pytest.raises(UserError, match="cannot be served on it"):
        plan_vllm([str(run), f"alpha={adapters['alpha']}"], None, ws)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    return train_tiny_run(tmp_path_factory.mktemp("vllm-run"), tiny_model_dir, steps=2)


def test_cli_dry_run_prints_the_command_and_hides_the_key(run):
    workspace = run.path.parent.parent
    args = ["serve", "--engine", "vllm", "--dry-run", f"tiny={run.id}", "--workspace",
            str(workspace), "--port", "8123", "--precision", "bf16"]  # fmt: skip
    out = CliRunner().invoke(app, args, env={"TUNELOOP_API_KEY": "s3cret-k3y"})
    assert out.exit_code == 0, out.output
    assert "s3cret-k3y" not in out.output and "VLLM_API_KEY=" in out.output
    assert "vllm serve " in out.output and "--enable-lora" in out.output
    assert f"--lora-modules tiny={workspace.resolve()}" in out.output
    assert "--port 8123" in out.output and "--dtype bfloat16" in out.output
    assert "--max-lora-rank 8" in out.output  # the run's rank 4
    assert "not on vLLM: the request log" in out.output  # ours logs by default; vLLM does not
    template = next(line for line in out.output.splitlines() if "--chat-template" in line)
    assert "Name the topic of the item." in Path(template.split()[1]).read_text()


def test_cli_refuses_what_does_not_apply(run):
    runner = CliRunner()
    out = runner.invoke(app, ["serve", "--engine", "triton", str(run.path)])
    assert out.exit_code == 2 and "--engine" in out.output and "tuneloop or vllm" in out.output
    out = runner.invoke(app, ["serve", "--dry-run", str(run.path)])
    assert out.exit_code == 2 and "--dry-run is for vLLM" in out.output


@pytest.mark.skipif(vllm_executable() is not None, reason="vLLM is installed here")
def test_cli_without_vllm_installed_says_how_to_get_it(run):
    out = CliRunner().invoke(app, ["serve", "--engine", "vllm", str(run.path)])
    assert out.exit_code == 2
    assert "pip install vllm" in out.output and "CUDA GPU" in out.output
    assert "--dry-run" in out.output


def test_cli_without_dry_run_becomes_vllm_with_the_key_in_its_environment(run, tmp_path):
    """A stand-in `vllm` on PATH prints what it was started with: the command printed first,
    then vLLM itself, in this process's place, with the key in its environment only."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "bin" / "vllm"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "vllm got: $*"\necho "vllm key: $VLLM_API_KEY"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
           "TUNELOOP_API_KEY": "s3cret-k3y"}  # fmt: skip
    command = [sys.executable, "-m", "tuneloop.cli.main", "serve", "--engine", "vllm",
               f"tiny={run.path}", "--workspace", str(tmp_path / "ws")]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed, started = done.stdout.split("vllm got: ")
    assert f"{fake} serve" in printed and "s3cret-k3y" not in printed
    assert started.startswith("serve ") and "--lora-modules tiny=" in started
    assert "--api-key" not in started and "vllm key: s3cret-k3y" in started
