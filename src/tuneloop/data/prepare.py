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
from typing import TypeVar

from tuneloop.config import DataConfig, Recipe
from tuneloop.data.formats import CsvColumns, read_examples
from tuneloop.data.records import Example
from tuneloop.data.split import check_no_leakage, split_examples
from tuneloop.data.templates import with_instruction
from tuneloop.files import sha256_file

T = TypeVar("T")  # a row: an Example, or a preference pair


@dataclass
class Datasets:
    train: list[Example]
    heldout: list[Example]
    split_made: bool  # True when the held-out set was carved out of `train` here
    info: dict = field(default_factory=dict)


def read_data_file(recipe: Recipe, path: Path) -> list[Example]:
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
    train = [with_instruction(ex, instruction) for ex in train]
    heldout = [with_instruction(ex, instruction) for ex in heldout]
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
