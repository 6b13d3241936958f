"""From a recipe's `data:` section to checked train and held-out examples.

The held-out split is fixed before anything trains: either the recipe names a held-out file
(checked for leakage against train), or a seeded, label-stratified split of `train` is made here
and saved with the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

from tuneloop.config import DataConfig, Recipe
from tuneloop.data.csvfile import CsvColumns
from tuneloop.data.formats import read_examples
from tuneloop.data.preference import PreferencePair, pair_with_instruction, read_preferences
from tuneloop.data.records import Example
from tuneloop.data.split import check_no_leakage, split_examples
from tuneloop.data.templates import example_with_instruction
from tuneloop.errors import DataError, UserError
from tuneloop.files import sha256_file

T = TypeVar("T")  # a row: an Example, or a preference pair
Side = Literal["train", "heldout"]


@dataclass
class Datasets:
    train: list[Example]
    heldout: list[Example]
    split_made: bool  # True when the held-out set was carved out of `train` here
    info: dict = field(default_factory=dict)


def read_data_file(recipe: Recipe, path: Path) -> list[Example]:
    if not path.exists():
        field = "data.heldout" if path == recipe.data.heldout else "data.train"
        raise DataError(
            path,
            None,
            "file not found",
            fix=f"looked for {path}: `{field}` is relative to the recipe's folder, not to the "
            "working directory; correct the path in the recipe (or pass an absolute one)",
        )
    csv = None
    if recipe.data.csv is not None:
        c = recipe.data.csv
        csv = CsvColumns(text=c.text, label=c.label, target=c.target)
    return read_examples(path, format=recipe.data.format, csv=csv)


def load_datasets(recipe: Recipe) -> Datasets:
    """Read, split if needed, refuse leakage, and apply the task instruction."""
    # Near-duplicates kept on one side, as `tuneloop data split` does: a paraphrase on both
    # sides would be a leak the exact check cannot see.
    near = recipe.data.split.near_threshold or None
    split = partial(split_examples, stratify="label", near_threshold=near)
    train, heldout, split_made = read_or_split(recipe.data, partial(read_data_file, recipe), split)
    check_no_leakage(train, heldout)
    instruction = recipe.task.instruction
    train = [example_with_instruction(ex, instruction) for ex in train]
    heldout = [example_with_instruction(ex, instruction) for ex in heldout]
    info = data_info(recipe.data, len(train), len(heldout), split_made)
    return Datasets(train, heldout, split_made, info)


def read_or_split(
    data: DataConfig,
    read: Callable[[Path], list[T]],
    split: Callable[[list[T], float, int], tuple[list[T], list[T]]],
) -> tuple[list[T], list[T], bool]:
    """Train and held-out rows, and whether the held-out side was split off here.

    One rule for every kind of row (examples, preference pairs): the recipe's held-out file when
    it names one, else a seeded split of `train` by `data.split`. `read` and `split` are the
    kind's own reader and splitter.
    """
    train = read(data.train)
    if data.heldout is not None:
        return train, read(data.heldout), False
    train, heldout = split(train, data.split.heldout_fraction, data.split.seed)
    return train, heldout, True


def data_info(data: DataConfig, n_train: int, n_heldout: int, split_made: bool) -> dict:
    """What a run records of its data, whatever the objective: the files with their hashes
    (resuming refuses changed data by them, the registry files datasets under them) and the
    size of each side."""
    return {
        "train_file": str(data.train),
        "train_sha256": sha256_file(data.train),
        "heldout_file": str(data.heldout) if data.heldout else None,
        "heldout_sha256": sha256_file(data.heldout) if data.heldout else None,
        "n_train": n_train,
        "n_heldout": n_heldout,
        "split_made": split_made,
    }


def run_examples(recipe: Recipe, saved: Path, side: Side) -> list[Example]:
    """A run's train or held-out rows as examples, whatever its objective, with the task
    instruction applied: what evaluation asks and draws its shots from.

    `saved` is the run's `data/` folder: the split training saved there, else the recipe's own
    file for that side. A preference pair (objective `dpo` or `reward`) becomes its prompt with
    the chosen answer as the reference:

        {"prompt": [{"role": "user", "content": "My card never arrived."}],
         "chosen": "Sorry! I can send a replacement today.", "rejected": "Not my problem."}
        -> Example(messages=[{"role": "user", "content": "My card never arrived."},
                             {"role": "assistant", "content": "Sorry! I can send a ..."}])
    """
    if recipe.train.objective in ("dpo", "reward"):
        return [pair.as_example() for pair in run_pairs(recipe, saved, side)]
    path = saved / f"{side}.jsonl"
    # A saved split is always `messages` JSONL (`split.write_split`); the recipe's file is read
    # as the recipe says.
    examples = (
        read_examples(path, format="messages")
        if path.exists()
        else read_data_file(recipe, _recipe_file(recipe, side))
    )
    return [example_with_instruction(ex, recipe.task.instruction) for ex in examples]


def run_pairs(recipe: Recipe, saved: Path, side: Side) -> list[PreferencePair]:
    """A DPO or reward run's train or held-out pairs as it trained on them: the split saved in
    `saved` (the run's `data/` folder), else the recipe's file, with the task instruction
    applied."""
    path = saved / f"{side}.jsonl"
    pairs = read_preferences(path if path.exists() else _recipe_file(recipe, side))
    return [pair_with_instruction(p, recipe.task.instruction) for p in pairs]


def _recipe_file(recipe: Recipe, side: Side) -> Path:
    path = recipe.data.train if side == "train" else recipe.data.heldout
    if path is None:
        raise UserError(
            f"the run saved no {side} split and its recipe names no data.{side} file",
            f"data.{side}",
            f"set data.{side} in the run's recipe.yaml to the file it was trained with",
        )
    return path
