"""What lint reports (`Finding`) and what its checks are told (`LintOptions`).

Kept apart from `lint.py` so that each check module can build findings without importing the
list of checks (which imports every check module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from tuneloop.config import SplitConfig, TrainConfig
from tuneloop.data.records import Example

Severity = Literal["error", "warning"]

# Jaccard similarity of character 5-grams (see data/dedupe.py): the recipe's default.
DEFAULT_NEAR_THRESHOLD: float = SplitConfig.model_fields["near_threshold"].default


@dataclass
class Finding:
    """One thing lint found. `where` is "file:line" of the example concerned, or a file.

    Optional: `field` (the key or turn, e.g. "messages[1].content", or a CSV column),
    `column` (a character column on the line), `fix` (what to do), `related` (the other
    example of a pair: the earlier twin of a duplicate, the train twin of a leak).
    """

    code: str
    severity: Severity
    where: str
    message: str
    field: str | None = None
    column: int | None = None
    fix: str | None = None
    related: str | None = None

    @property
    def line(self) -> int | None:
        """The line number in `where`, if it names one."""
        _, sep, tail = self.where.rpartition(":")
        return int(tail) if sep and tail.isdigit() else None

    def to_json(self) -> dict:
        out = asdict(self)
        out["line"] = self.line
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class LintOptions:
    """What the checks may use beyond the examples. Defaults follow the recipe's."""

    near_threshold: float | None = DEFAULT_NEAR_THRESHOLD  # None: no near-duplicate search
    tokenizer: Any = None  # the model's tokenizer; None skips the token-length checks
    max_length: int = TrainConfig.model_fields["max_length"].default
    truncation: str = TrainConfig.model_fields["truncation"].default
    instruction: str | None = None  # the recipe's task.instruction, the default system prompt


Check = Callable[[list[Example], list[Example], LintOptions], list[Finding]]


def files_of(examples: list[Example], limit: int = 3) -> str:
    """The file(s) the examples came from ("path:line" sources), for findings about a side."""
    files = dict.fromkeys(_file(ex.source) for ex in examples if ex.source)
    names = list(files)
    if len(names) > limit:
        names = [*names[:limit], f"and {len(files) - limit} more"]
    return ", ".join(names) or "train"


def _file(source: str) -> str:
    path, sep, line = source.rpartition(":")
    return path if sep and line.isdigit() else source


def field_of(example: Example, index: int) -> str:
    """How a finding names message `index` of an example: "messages[2] (user)"."""
    return f"messages[{index}] ({example.messages[index]['role']})"


def shorten(text: str, width: int = 60) -> str:
    """A one-line quote of `text` for a message."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 1] + "…")
