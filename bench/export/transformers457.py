"""Does a merged export load the same under transformers 4.57 as under 5.x?

    .venv/bin/python bench/export/transformers457.py [--work /tmp/tl-bench-tf457] [--steps 24]

1. Builds a second virtualenv (/tmp/tl-tf457) with transformers==4.57.*: created with
   `python3.11 -m venv`, a `.pth` file puts this project's site-packages (torch, safetensors, ...)
   on its path, and pip installs transformers 4.57 with its own tokenizers and huggingface-hub
   into the new venv, whose site-packages come first.
2. Trains a short real LoRA run on the embedded model (the quickstart data and recipe, fewer
   steps) and exports it with `tuneloop export --merge` (checked on all held-out items).
3. Loads the merged folder in both versions (`AutoTokenizer`, `AutoModelForCausalLM`, float32)
   and, for every held-out item asked as a user asks (no system message: the folder's chat
   template adds the task instruction), records the prompt token ids, the next-token logits and
   the greedy answer (12 new tokens, batch of one).
4. Compares: same ids, largest logit difference, equal answers; and shows what the unfixed
   export did under 4.57, from a copy of the folder with only the 5.x conventions
   (`rope_parameters`, `TokenizersBackend`).

Writes bench/export/transformers457.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MAIN_SITE = REPO / ".venv" / "lib" / "python3.11" / "site-packages"


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import transformers; print(transformers.__version__)"]
    if python.exists():
        done = subprocess.run(probe, capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.startswith("4.57."):
            return python
    subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
    site = venv / "lib" / "python3.11" / "site-packages"
    (site / "zz-tuneloop-main.pth").write_text(f"{MAIN_SITE}\n")  # after the venv's own
    subprocess.run([str(python), "-m", "pip", "install", "-q", "transformers==4.57.*"], check=True)
    return python


def train_and_export(work: Path, steps: int) -> tuple[Path, dict]:
    import yaml

    from tuneloop.config import load_recipe
    from tuneloop.data.examples import write_support_intents
    from tuneloop.data.formats import read_examples
    from tuneloop.data.split import split_examples, write_split
    from tuneloop.export.run import export
    from tuneloop.quickstart import quickstart_recipe
    from tuneloop.train.session import train

    work.mkdir(parents=True, exist_ok=True)
    source = write_support_intents(work / "data" / "support.jsonl", n_per_label=40, seed=0)
    examples = read_examples(source, format="messages")
    tr, ho = split_examples(examples, heldout_fraction=0.2, seed=0, near_threshold=0.8)
    write_split(work / "data", tr, ho, seed=0, heldout_fraction=0.2, sources=[str(source)])
    recipe = quickstart_recipe(work, max_steps=steps, checkpoint_every=1000)
    recipe["workspace"] = str(work / ".tuneloop")
    recipe["data"] = {k: str(work / v) for k, v in recipe["data"].items()}
    (work / "tuneloop.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    t0 = time.time()
    run = train(load_recipe(work / "tuneloop.yaml"), progress=False)
    trained = time.time() - t0
    t0 = time.time()
    result = export(run.path, merge=True, say=print)
    exported = time.time() - t0
    merge = {"passed": result.checks[-1].passed, **result.checks[-1].numbers}
    return Path(result.files["merged"]), {
        "run": str(run.path),
        "steps": steps,
        "train_seconds": round(trained),
        "export_seconds": round(exported),
        "export_merge_check": merge,
    }


def worker(folder: Path, heldout: Path, out: Path, tokenizer_from: Path | None) -> None:
    """Runs under either transformers version; writes ids, last logits and answers."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    record: dict = {"transformers": transformers.__version__}
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # the unfixed folder under 4.57
        record["tokenizer_error"] = f"{type(exc).__name__}: {exc}"[:300]
        if tokenizer_from is None:
            json.dump(record, out.open("w"))
            return
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    rope = getattr(model.config, "rope_parameters", None) or {}
    record["tokenizer_class"] = type(tokenizer).__name__
    record["rope_theta_read"] = getattr(model.config, "rope_theta", None) or rope.get("rope_theta")
    record["rotary_inv_freq_1"] = float(model.model.rotary_emb.inv_freq[1])
    chats = [json.loads(line)["messages"][:-1] for line in heldout.read_text().splitlines()]
    ids, answers, logits = [], [], []
    with torch.no_grad():
        for chat in chats:
            text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            x = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            logits.append(model(input_ids=x).logits[0, -1].float())
            y = model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=12,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
            ids.append(x[0].tolist())
            answers.append(tokenizer.decode(y[0, x.shape[1] :], skip_special_tokens=True).strip())
    record.update(ids=ids, answers=answers)
    torch.save(torch.stack(logits), out.with_suffix(".pt"))
    json.dump(record, out.open("w"))


def run_worker(python: Path, folder: Path, heldout: Path, out: Path, tok: Path | None) -> dict:
    command = [str(python), __file__, "--worker", str(folder), str(heldout), str(out)]
    if tok is not None:
        command += ["--tokenizer-from", str(tok)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run(command, check=True, env=env, cwd=REPO)
    return json.loads(out.read_text())


def compare(a: dict, b: dict, a_pt: Path, b_pt: Path) -> dict:
    import torch

    n = len(a["answers"])
    diff = float((torch.load(a_pt) - torch.load(b_pt)).abs().max())
    return {
        "items": n,
        "same_prompt_ids": sum(x == y for x, y in zip(a["ids"], b["ids"], strict=True)),
        "equal_greedy_answers": sum(
            x == y for x, y in zip(a["answers"], b["answers"], strict=True)
        ),
        "max_next_token_logit_diff": diff,
    }


def unfixed_copy(folder: Path, target: Path) -> Path:
    """The merged folder as the unfixed export wrote it: 5.x conventions only."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(folder, target)
    config = json.loads((target / "config.json").read_text())
    config.pop("rope_theta", None)
    config.pop("rope_scaling", None)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    tok = json.loads((target / "tokenizer_config.json").read_text())
    tok["tokenizer_class"] = "TokenizersBackend"
    (target / "tokenizer_config.json").write_text(json.dumps(tok, indent=2))
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/tl-bench-tf457"))
    parser.add_argument("--venv", type=Path, default=Path("/tmp/tl-tf457"))
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument(
        "--merged", type=Path, help="reuse a merged export of --work's data (skip training)"
    )
    args = parser.parse_args()

    python457 = ensure_venv(args.venv)
    if args.merged:
        record = json.loads((args.merged.parent / "export.json").read_text())
        merged = args.merged
        check = record["checks"][-1]
        info = {
            "merged": str(merged),
            "export_merge_check": {"passed": check["passed"], **check["numbers"]},
        }
    else:
        merged, info = train_and_export(args.work, args.steps)
    heldout = args.work / "data" / "heldout.jsonl"  # the split the run was trained with
    out = args.work / "compare"
    out.mkdir(parents=True, exist_ok=True)
    v5 = run_worker(Path(sys.executable), merged, heldout, out / "v5.json", None)
    v4 = run_worker(python457, merged, heldout, out / "v457.json", None)
    old = unfixed_copy(merged, out / "unfixed")
    v4_old = run_worker(python457, old, heldout, out / "v457-unfixed.json", merged)
    result = {
        "command": " ".join(["python", "bench/export/transformers457.py", *sys.argv[1:]]),
        **info,
        "versions": [v5["transformers"], v4["transformers"]],
        "fixed_export": {
            "tokenizer_class": {
                v5["transformers"]: v5["tokenizer_class"],
                v4["transformers"]: v4["tokenizer_class"],
            },  # fmt: skip
            "rope_theta_read": [v5["rope_theta_read"], v4["rope_theta_read"]],
            **compare(v5, v4, out / "v5.pt", out / "v457.pt"),
        },
        "unfixed_export_under_4.57": {
            "tokenizer_error": v4_old.get("tokenizer_error"),
            "rope_theta_read": v4_old["rope_theta_read"],
            **compare(v5, v4_old, out / "v5.pt", out / "v457-unfixed.pt"),
        },
    }
    (HERE / "transformers457.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        rest = sys.argv[2:]
        tok = Path(rest[rest.index("--tokenizer-from") + 1]) if "--tokenizer-from" in rest else None
        worker(Path(rest[0]), Path(rest[1]), Path(rest[2]), tok)
    else:
        main()
