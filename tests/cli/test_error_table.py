"""The table of docs/errors.md, checked against the real command line.

Every row runs `tuneloop` in-process (typer's `CliRunner`) on a file of tests/data/malformed/ or
on a recipe written here, and asserts what the project promises for a user's mistake: exit 2,
an `error: ...` message, no traceback, and no output file left behind (nothing is written, so
nothing is half-written). Only commands that fail before any weights load are run, so the whole
table takes seconds.

The doc's table must equal what the commands print. After changing a message, rewrite it with

    TUNELOOP_WRITE_ERRORS_DOC=1 .venv/bin/python -m pytest tests/cli/test_error_table.py
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from tuneloop.cli.main import app

ROOT = Path(__file__).parents[2]
MALFORMED = ROOT / "tests" / "data" / "malformed"
DOC = ROOT / "docs" / "errors.md"
BEGIN, END = "<!-- table: begin -->", "<!-- table: end -->"

# Files of the corpus that hold only warnings: `data stats` reads them (exit 0), `data lint`
# reports them. Every other file must stop `data stats` with exit 2.
WARNINGS_ONLY = {
    "bom.jsonl",
    "conflicting_answers.jsonl",
    "control_chars.jsonl",
    "duplicate_keys.jsonl",
    "duplicate_lines.jsonl",
    "mojibake.jsonl",
    "near_duplicates.jsonl",
    "pii_card.jsonl",
    "pii_email.jsonl",
    "replacement_char.jsonl",
    "system_prompt_variant.jsonl",
    "turn_extra_key.jsonl",
    "typo_key.jsonl",
    "zero_width.jsonl",
}

GOOD = "".join(
    json.dumps(
        {
            "messages": [
                {"role": "user", "content": f"message number {i}"},
                {"role": "assistant", "content": "label_a" if i % 2 else "label_b"},
            ]
        }
    )
    + "\n"
    for i in range(6)
)
DEEP = "[" * 100_000 + "]" * 100_000

# Recipes: (what is wrong, the recipe's lines after `data:`). Each is run by `train`.
RECIPES = [
    ("unknown key", "train:\n  learning_rate: 0.1\n"),
    ("value out of range", "train:\n  lr: -0.1\n"),
    ("value not allowed", "train:\n  method: lora2\n"),
    ("wrong type", "train:\n  batch_size: eight\n"),
    ("unknown section", "trian:\n  lr: 0.1\n"),
    ("unknown task kind", "task:\n  kind: regression\n"),
    ("invalid task.json_schema", "task:\n  kind: json\n  json_schema: {type: objct}\n"),
    ("task.metric of another kind", "task:\n  kind: label\n  metric: rouge_l\n"),
    ("task.metric no kind produces", "task:\n  metric: accuracy\n"),
    ("task.metric judge without eval.judge", "task:\n  metric: judge\n"),
    ("qlora settings with method lora", "train:\n  qlora: {quant_type: nf4}\n"),
    ("packing with prompt tuning", "train:\n  method: prompt\n  packing: true\n"),
    ("distill without a teacher", "train:\n  objective: distill\n"),
    (
        "distill from an endpoint",
        "train:\n  objective: distill\n  distill: {teacher: 'http://x/v1'}\n",
    ),
    ("early stopping without eval_every", "train:\n  early_stopping: {patience: 2}\n"),
    ("held-out fraction of 1", "  split: {heldout_fraction: 1}\n"),
    ("unknown data format", "  format: parquet\n"),
    ("bad run name", "name: 'my run'\n"),
    (
        "two rungs with one name",
        "eval:\n  recorded: [{name: prod, path: a.jsonl}, {name: prod, path: b.jsonl}]\n",
    ),
    (
        "an endpoint asked with rag without documents",
        "eval:\n  endpoints: [{name: big, url: 'http://x/v1', model: m, prompts: [rag]}]\n",
    ),
    ("gate.match on an unknown rung", "gate:\n  match: {rung: gpt-4o-mini}\n"),
    ("gate.match tolerance in points", "gate:\n  match: {rung: zero-shot, tolerance: 2}\n"),
    (
        "task.knowledge overlap as long as a passage",
        "task:\n  knowledge: {paths: [docs], chunk_words: 50, overlap_words: 50}\n",
    ),
]


@dataclass
class Row:
    input: str
    command: str
    exit: int
    message: str


def invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def first_line(output: str) -> str:
    """The `error:` line; for a recipe, its title and the first problem."""
    lines = output.splitlines()
    n = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    if lines[n].endswith("problem(s) in the recipe") and n + 1 < len(lines):
        return f"{lines[n]} {lines[n + 1].strip()}"
    return lines[n]


def run_rows(tmp: Path, model: Path) -> list[Row]:
    rows: list[Row] = []

    def shown(text: str) -> str:
        for path, name in ((MALFORMED, "tests/data/malformed"), (model, "<model>"), (tmp, "<tmp>")):
            text = text.replace(str(path), name)
        return text

    def case(what: str, *args: str | Path) -> None:
        argv = [str(a) for a in args]
        before = files_under(tmp)
        result = invoke(argv)
        command = shown("tuneloop " + " ".join(argv))
        assert result.exit_code == 2, (command, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), command
        assert "Traceback" not in result.output, command
        assert files_under(tmp) == before, (command, files_under(tmp) - before)  # nothing written
        rows.append(Row(what, command, result.exit_code, shown(first_line(result.output))))

    def write(name: str, text: str) -> Path:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def recipe(name: str, train: str, extra: str = "") -> Path:
        """A recipe in its own folder; `extra` indented by two spaces adds keys under `data:`."""
        body = f"workspace: .tuneloop\nmodel:\n  name: {model}\ndata:\n  train: {train}\n"
        return write(f"{name}/tuneloop.yaml", body + extra)

    # The malformed corpus, read as training data by `data stats`.
    for path in sorted(MALFORMED.iterdir()):
        if path.name in WARNINGS_ONLY:
            assert invoke(["data", "stats", str(path)]).exit_code == 0, path.name
            continue
        case(f"`{path.name}`", "data", "stats", path)

    # Generated data, through the commands that read it.
    deep = write("deep.jsonl", GOOD + DEEP + "\n")
    case("a line of 100,000 nested lists", "data", "stats", deep)
    case("a line of 100,000 nested lists", "data", "split", deep, "--out", tmp / "split")
    array = write("deep_array.json", "[\n" + GOOD.strip().replace("\n", ",\n") + f",\n{DEEP}\n]\n")
    case("a JSON array holding 100,000 nested lists", "data", "stats", array)
    case("a data file that does not exist", "data", "lint", tmp / "missing.jsonl")
    case("a folder given as the data file", "data", "stats", tmp)
    case(
        "`--truncation middle`",
        "data", "lint", MALFORMED / "bom.jsonl", "--truncation", "middle",
    )  # fmt: skip
    case("`--max-length 4`", "data", "stats", MALFORMED / "bom.jsonl", "--max-length", "4")
    case("no data file and no recipe", "data", "stats")
    case(
        "`broken_json.jsonl` split",
        "data", "split", MALFORMED / "broken_json.jsonl", "--out", tmp / "split",
    )  # fmt: skip
    case(
        "`csv_ragged.csv` split", "data", "split", MALFORMED / "csv_ragged.csv", "--out", tmp / "s"
    )

    # Training on bad data: stopped before a run folder exists.
    write("data/train.jsonl", GOOD)
    write("data/deep.jsonl", GOOD + DEEP + "\n")
    write("data/broken.jsonl", GOOD + GOOD.splitlines()[0][:-1] + ",\n")
    write("data/pairs.jsonl", (MALFORMED / "preference_pairs.jsonl").read_text())
    case("data with a 100,000-deep line", "train", recipe("deep", "../data/deep.jsonl"), "--quiet")
    case("data with a broken JSON line", "train", recipe("broken", "../data/broken.jsonl"))
    case("preference pairs for objective sft", "train", recipe("pairs", "../data/pairs.jsonl"))
    case("`data.train` that does not exist", "train", recipe("nofile", "data/train.jsonl"))
    case(
        "`data.heldout` that does not exist",
        "train", recipe("noheld", "../data/train.jsonl", "  heldout: held.jsonl\n"),
    )  # fmt: skip

    # Bad recipes, through `train` (and a few through `advise`).
    for n, (what, extra) in enumerate(RECIPES):
        path = recipe(f"r{n:02d}", "../data/train.jsonl", extra)
        case(f"recipe: {what}", "train", path, "--quiet")
    case("recipe: value out of range", "advise", tmp / "r01" / "tuneloop.yaml", "--steps", "0")
    case("recipe: invalid task.json_schema", "advise", tmp / "r06" / "tuneloop.yaml")
    case("recipe that does not exist", "train", tmp / "nowhere.yaml")
    case("recipe that does not exist", "advise", tmp / "nowhere.yaml")
    case("recipe that is not YAML", "train", write("yaml/tuneloop.yaml", "data: {train: [x\n"))
    case("recipe that is a list", "train", write("list/tuneloop.yaml", "- data\n- train\n"))
    latin1 = tmp / "latin1" / "tuneloop.yaml"
    latin1.parent.mkdir()
    latin1.write_bytes("name: caf\xe9\ndata: {train: x.jsonl}\n".encode("latin-1"))
    case("recipe that is not UTF-8", "train", latin1)
    case(
        "recipe without `data.train`", "train", write("nodata/tuneloop.yaml", "train: {lr: 0.1}\n")
    )
    good = recipe("good", "../data/train.jsonl")
    case("`--set train.lr=-1`", "train", good, "--set", "train.lr=-1")
    case("`--set` without `=`", "train", good, "--set", "train.lr")
    case("`--set train.lora.r.x=1`", "train", good, "--set", "train.lora.r.x=1")

    # Runs that do not exist.
    (tmp / "ws" / "runs").mkdir(parents=True)
    case("a run that does not exist", "eval", "20990101-000000-nope", "--workspace", tmp / "ws")
    case("a run that does not exist", "gate", "20990101-000000-nope", "--workspace", tmp / "ws")
    case(
        "an unknown rung",
        "eval", "20990101-000000-nope", "--workspace", tmp / "ws", "--rung", "two-shot",
    )  # fmt: skip
    nope, ws = "20990101-000000-nope", tmp / "ws"
    for verb in ("report", "serve"):
        case("a run that does not exist", verb, nope, "--workspace", ws)
    case("a run that does not exist", "export", nope, "--merge", "--workspace", ws)
    case("export with nothing asked", "export", nope, "--workspace", ws)
    case("a run that does not exist", "failures", nope, "--out", tmp / "r.jsonl", "--workspace", ws)
    case(
        "evaluations that do not exist",
        "compare", "20990101-000000-a:zero-shot", "20990101-000000-b", "--workspace", tmp / "ws",
    )  # fmt: skip
    return rows


def render(rows: list[Row]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| # | input | command | exit | message (first line) |", "|---|---|---|---|---|"]
    for n, r in enumerate(rows, start=1):
        lines.append(
            f"| {n} | {cell(r.input)} | `{cell(r.command)}` | {r.exit} | {cell(r.message)} |"
        )
    return "\n".join(lines)


def test_every_mistake_in_the_table_is_a_clear_error(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # relative outputs (a default workspace) land here, if any
    work = tmp_path / "work"
    work.mkdir()
    rows = run_rows(work, tiny_model_dir)
    assert len(rows) >= 40

    table = render(rows)
    doc = DOC.read_text(encoding="utf-8")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    if os.environ.get("TUNELOOP_WRITE_ERRORS_DOC") == "1":
        DOC.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}", encoding="utf-8")
    else:
        assert rest.split(END, 1)[0].strip() == table, (
            "docs/errors.md is out of date: rerun with TUNELOOP_WRITE_ERRORS_DOC=1"
        )
