"""What an objective (sft, dpo, distill) hands the shared training session.

Each objective module has two functions, read top to bottom in its own file:

    prepare(recipe, tokenizer) -> ObjectiveData     before any weights load: read, check and
                                                    tokenize the data (mistakes surface here)
    make_loss(recipe, model, source, device) -> LossFn
                                                    after the model loads: the loss, with
                                                    whatever it needs (a reference, a teacher)

The session (`train/session.py`) does the rest the same way for every objective: run folder,
model and method, optimizer, the loop, saving.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ObjectiveData:
    train: list  # what MicroBatches draws from: examples, or pairs
    heldout: list  # the same kind, for the held-out loss (may be empty)
    collate: Callable[[list], dict]  # a list of train/heldout items -> one batch
    info: dict  # file names, hashes and counts, recorded in run.json
    truncation: dict  # what the max_length policy did
    write_split: Callable[[Path], None] | None = None  # saves a split made here into the run
    # (tokens, supervised tokens) of each train item, all its sequences together: for the
    # memory estimate
    lengths: list[tuple[int, int]] = field(default_factory=list)
    # Sequences per train item (a preference pair has two) and the prompt tokens all train
    # sequences share (`train.share_prefix`: each batch runs at least these once): for the
    # memory estimate
    sequences_per_item: int = 1
    shared_prefix: int = 0
