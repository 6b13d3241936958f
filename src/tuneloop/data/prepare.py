"""From a recipe's `data:` section to checked train and held-out examples.

The held-out split is fixed before anything trains: either the recipe names a held-out file
(checked for leakage against train), or a seeded, label-stratified split of `train` is made here
and saved with the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.config import Recipe
from tuneloop.data.formats import CsvColumns, read_examples
from tuneloop.data.records import Example
from tuneloop.data.split import check_no_leakage, split_examples
from tuneloop.data.templates import with_instruction
from tuneloop.files import sha256_file


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
    data = recipe.data
    train = read_data_file(recipe, data.train)
    if data.heldout is not None:
        heldout = read_data_file(recipe, data.heldout)
        split_made = False
    else:
        train, heldout = split_examples(
            train, data.split.heldout_fraction, data.split.seed, stratify="label"
        )
        split_made = True
    check_no_leakage(train, heldout)
    instruction = recipe.task.instruction
    train = [with_instruction(ex, instruction) for ex in train]
    heldout = [with_instruction(ex, instruction) for ex in heldout]
    info = {
        "train_file": str(data.train),
        "train_sha256": sha256_file(data.train),
        "heldout_file": str(data.heldout) if data.heldout else None,
        "heldout_sha256": sha256_file(data.heldout) if data.heldout else None,
        "n_train": len(train),
        "n_heldout": len(heldout),
        "split_made": split_made,
    }
    return Datasets(train, heldout, split_made, info)
