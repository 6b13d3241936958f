"""The gate's general-skill and safety conditions on standard suites: no false alarm, a real loss.

    .venv/bin/python bench/evaluation/suites_gate.py [--work /tmp/tl-bench/suites]

Both runs use the quickstart's Acme support-intent data and the gate with standard suites read
from ../shared/data/evalsuites: 300 MMLU items (stratified by subject), 200 GSM8K, 200 IFEval
and all 450 XSTest prompts, answered by the base and the tuned model.

1. `copy`: the tuned model is an identical copy of the base: a LoRA adapter whose B matrices
   are zero (LoRA adds B A x, so the model computes exactly what the base does). Every
   non-inferiority condition must pass: no false alarm.
2. `forget`: LoRA on every linear layer, learning rate 5e-3, 6 epochs of label-only answers:
   a run trained to forget. General skills must fail with a CI that excludes the tolerance.

The base model's answers are the same for both runs (same model, same suite samples), so the
second run reuses the first run's `eval/probes/base-*` files rather than asking them again;
the gate checks that the samples match (`suites.is_current`). The two runs can also go in two
processes: `--only copy`, and `--only forget --base-answers <copy run>/eval/probes`, which
waits for the base's answers.

On these suites the embedded model scores near what guessing scores (MMLU 21.7% against 25%
chance, GSM8K 3%, IFEval 12.5%), so no run can lose 5 points there and the gate says the
general line is uninformative. `--builtin-general <forget run>` gates the forget run again with
the built-in general probes, which the base answers 29% of, in their place.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, gate, save_results, train_recipe, write_recipe  # noqa: E402

SUITES = REPO.parent / "shared" / "data" / "evalsuites"
# GSM8K and IFEval answers are cut at 128 new tokens (their default is 256) to fit the 2-core
# machine: both models are cut alike, so the comparison stays paired and fair.
SIZES = {"mmlu": 300, "gsm8k": 200, "ifeval": 200, "xstest": None}
TOKENS = {"gsm8k": 128, "ifeval": 128}


def data(work: Path) -> None:
    """The quickstart's data and split: train.jsonl and heldout.jsonl under work/data."""
    from tuneloop.data.examples import write_support_intents
    from tuneloop.data.formats import read_examples
    from tuneloop.data.split import split_examples, write_split

    source = write_support_intents(work / "data" / "support.jsonl", n_per_label=40, seed=0)
    examples = read_examples(source, format="messages")
    train, heldout = split_examples(examples, heldout_fraction=0.2, seed=0, near_threshold=0.8)
    write_split(work / "data", train, heldout, seed=0, heldout_fraction=0.2, sources=[str(source)])


def recipe(name: str, work: Path, train: dict, sizes: dict) -> dict:
    from tuneloop.data.examples import SUPPORT_INSTRUCTION

    suites = {
        s: {"path": str(SUITES / s), **({"n": n} if n else {}),
            **({"max_new_tokens": TOKENS[s]} if s in TOKENS else {})}
        for s, n in sizes.items()
    }  # fmt: skip
    return {
        "name": name,
        "workspace": str(work / ".tuneloop"),
        "data": {"train": str(work / "data/train.jsonl"),
                 "heldout": str(work / "data/heldout.jsonl")},
        "task": {"kind": "label", "instruction": SUPPORT_INSTRUCTION},
        "train": {"batch_size": 8, "max_length": 256, **train},
        "eval": {"max_new_tokens": 12, "batch_size": 32},
        "gate": {"suites": suites},
    }  # fmt: skip


def zero_adapter(run) -> None:
    """Make the run's adapter an identity: every LoRA B matrix set to zero."""
    from safetensors.torch import load_file, save_file

    path = run.path / "adapter" / "adapter_model.safetensors"
    weights = load_file(path)
    zeroed = {k: v.zero_() if "lora_B" in k else v for k, v in weights.items()}
    save_file(zeroed, path, metadata={"format": "pt"})


def summary(report, seconds: float) -> dict:
    return {
        "passed": report.passed,
        "gate_seconds": seconds,
        "conditions": {c.name: {"status": c.status, **c.numbers} for c in report.conditions},
        "sentences": [c.sentence for c in report.conditions],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tl-bench/suites"))
    parser.add_argument("--smoke", action="store_true", help="8 items a suite, one epoch")
    parser.add_argument("--only", choices=["copy", "forget"], help="one of the two runs")
    parser.add_argument(
        "--builtin-general", type=Path, help="a finished forget run: gate it again with the "
        "built-in general probes in place of MMLU, GSM8K and IFEval (see the module's note)",
    )  # fmt: skip
    parser.add_argument(
        "--base-answers", type=Path, help="a run's eval/probes to take the base's answers from "
        "(waited for until all are written), e.g. the copy run's while it runs in parallel",
    )  # fmt: skip
    args = parser.parse_args()
    work = args.work
    sizes = {s: 8 for s in SIZES} if args.smoke else SIZES
    data(work)
    results: dict = {"suites": {s: n or "all" for s, n in sizes.items()}, "tokens": TOKENS}
    started = time.perf_counter()

    if args.builtin_general:
        report, gate_seconds = builtin_general(args.builtin_general)
        save_results("suites_gate_forget_builtin", summary(report, gate_seconds))
        return
    base_probes = args.base_answers
    if args.only != "forget":
        copy_recipe = recipe("copy", work, {"max_steps": 1, "lr": 1e-4}, sizes)
        run, seconds = train_recipe(write_recipe(work, copy_recipe))
        zero_adapter(run)
        print(f"copy: {run.id}, adapter zeroed", flush=True)
        report, gate_seconds = gate(run)
        results["copy"] = summary(report, gate_seconds)
        base_probes = run.eval_dir / "probes"
    if args.only == "copy":
        save_results("suites_gate_copy", results)
        return

    forget_train = {
        "epochs": 0.1 if args.smoke else 6, "lr": 5e-3, "schedule": "constant", "warmup_ratio": 0.0,
        "lora": {"r": 16, "alpha": 32,
                 "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                    "up_proj", "down_proj"]},
    }  # fmt: skip
    run, seconds = train_recipe(write_recipe(work, recipe("forget", work, forget_train, sizes)))
    results["forget_train_seconds"] = seconds
    if base_probes is not None:
        take_base_answers(base_probes, run.eval_dir / "probes", list(sizes))
    report, gate_seconds = gate(run)
    results["forget"] = summary(report, gate_seconds)
    results["seconds"] = round(time.perf_counter() - started, 1)
    if not args.smoke:
        save_results("suites_gate" if args.only is None else "suites_gate_forget", results)


def builtin_general(folder: Path):
    """The forget run gated again, general skills asked with the built-in probes (free answers
    the base gets 29% of; MMLU's letters it answers at chance): a copy of the run whose recipe
    keeps only XSTest among the suites, its answers to XSTest kept."""
    import yaml

    from tuneloop.workspace import Run

    target = folder.with_name(folder.name + "-builtin")
    if not target.exists():
        shutil.copytree(folder, target)
        for path in (target / "eval" / "probes").glob("*"):
            if not path.name.split("-", 1)[1].startswith("xstest"):
                path.unlink()
        recipe_path = target / "recipe.yaml"
        saved = yaml.safe_load(recipe_path.read_text())
        saved["gate"]["suites"] = {"xstest": saved["gate"]["suites"]["xstest"]}
        recipe_path.write_text(yaml.safe_dump(saved, sort_keys=False))
    return gate(Run(target))


def take_base_answers(source: Path, target: Path, suites: list[str]) -> None:
    """Copy the base model's answers to `suites` once all are written. Answers saved before the
    sample signature named who classifies refusals were classified by the regex, the only
    classifier then: say so in their signature, so the gate accepts them as current."""
    wanted = [source / f"base-{s}.{ext}" for s in suites for ext in ("json", "jsonl")]
    while not all(p.is_file() for p in wanted):
        time.sleep(30)
    target.mkdir(parents=True, exist_ok=True)
    for path in wanted:
        shutil.copy(path, target / path.name)
    for s in ("xstest", "advbench"):
        summary_path = target / f"base-{s}.json"
        if summary_path.is_file():
            saved = json.loads(summary_path.read_text())
            saved["sample"].setdefault("refusals", "regex")
            summary_path.write_text(json.dumps(saved))


if __name__ == "__main__":
    main()
