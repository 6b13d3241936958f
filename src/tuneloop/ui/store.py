"""The dashboard's only way to the workspace: runs by id, files resolved inside the workspace,
the registry opened read-only. What cannot be read becomes a `PageError` (a clear page with a
status), never a traceback.

    >>> Workspace(Path("/tmp/ws")).inside(Path("/tmp/ws/runs/../../etc/passwd"))
    Traceback (most recent call last):
    ...
    tuneloop.ui.store.PageError: 403 outside the workspace: /etc/passwd is not under /tmp/ws
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import UserError
from tuneloop.workspace import Run

# A run id as `new_run` makes them (`20261202-025251-quickstart`), or any folder name of that
# alphabet: no separators, nothing that walks up.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
# An evaluation of a run: `tuned`, `probes/tuned-safety`, `train/tuned`.
RUNG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}(/[A-Za-z0-9][A-Za-z0-9._-]{0,100})?")


class PageError(Exception):
    """What a page says instead of its content: an HTTP status, a title, and the fix."""

    def __init__(self, status: int, title: str, message: str, fix: str | None = None):
        self.status, self.title, self.message, self.fix = status, title, message, fix
        super().__init__(f"{status} {title}: {message}")


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def runs_root(self) -> Path:
        return self.root / "runs"

    def inside(self, path: Path) -> Path:
        """`path` with every link and `..` resolved, refused unless it lies in the workspace."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.root):
            raise PageError(403, "outside the workspace", f"{resolved} is not under {self.root}")
        return resolved

    def run(self, run_id: str) -> Run:
        """The run folder `runs/<run_id>`, which must hold a run.json; 404 otherwise."""
        missing = PageError(
            404,
            "no such run",
            f"the workspace {self.root} has no run `{run_id}`",
            "pick one from the runs page",
        )
        if not RUN_ID.fullmatch(run_id or ""):
            raise missing
        path = self.runs_root / run_id
        resolved = path.resolve()
        if resolved.parent != self.runs_root.resolve() or not (resolved / "run.json").is_file():
            raise missing
        self.inside(resolved / "run.json")
        return Run(resolved)

    def run_ids(self) -> list[str]:
        """Every run folder (with a run.json) directly under runs/, oldest first."""
        if not self.runs_root.is_dir():
            return []
        return [
            p.name
            for p in sorted(self.runs_root.iterdir())
            if RUN_ID.fullmatch(p.name)
            and (p / "run.json").is_file()
            and p.resolve().parent == self.runs_root.resolve()
        ]

    def info(self, run: Run) -> dict:
        """run.json, or a 422 that names the file and what is wrong with it."""
        data = self.json(run.info_path)
        if not isinstance(data, dict):
            raise corrupt(run.info_path, "it is not a JSON object")
        return data

    def json(self, path: Path):
        path = self.inside(path)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise corrupt(path, str(err)) from None

    def jsonl(self, path: Path) -> list[dict]:
        """One dict per line; a broken line is a 422 naming file:line."""
        path = self.inside(path)
        if not path.is_file():
            return []
        out = []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise corrupt(path, str(err)) from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise corrupt(Path(f"{path}:{n}"), str(err)) from None
        return out

    def text(self, path: Path) -> str | None:
        path = self.inside(path)
        try:
            return path.read_text(encoding="utf-8") if path.is_file() else None
        except (OSError, UnicodeDecodeError) as err:
            raise corrupt(path, str(err)) from None

    def registry(self):
        """The registry opened read-only, or None when the workspace has none yet."""
        from tuneloop.registry.store import Registry

        try:
            return Registry.read_only(self.root)
        except FileNotFoundError:
            return None
        except UserError as err:
            problem = err.problems[0]
            raise PageError(
                409, "registry from a newer tuneloop", problem.what, problem.fix
            ) from None
        except sqlite3.DatabaseError as err:
            raise PageError(
                422,
                "unreadable registry",
                f"{self.root / 'registry.db'}: {err}",
                "restore it from a backup, or move it away: the run folders still show",
            ) from None


def corrupt(path: Path, why: str) -> PageError:
    return PageError(
        422,
        "corrupt run folder",
        f"{path} cannot be read: {why}",
        "fix or remove that file (the dashboard only reads it); other runs still show",
    )
