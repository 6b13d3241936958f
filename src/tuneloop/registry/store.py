"""The lineage registry: one SQLite file per workspace (`registry.db`).

dataset -> run -> evaluation -> gate -> export, each row pointing at its parent, so "which data and
which recipe made this adapter, how did it score, did it ship" is one query.

Crash safety comes from SQLite itself: WAL journal, every write one short transaction
(`BEGIN IMMEDIATE`, so concurrent writers queue instead of failing), and a busy timeout. A run
records the pid and host of the process training it; a run still marked `running` whose process is
gone (killed, crashed, machine rebooted) is marked `failed` the next time anyone opens the registry.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

# Each entry migrates the schema from version i to i+1. Append, never edit.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE datasets (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        n_examples INTEGER,
        hashes TEXT,            -- JSON list of per-example content hashes, for dataset diffs
        lint TEXT,              -- JSON summary of the lint findings
        created TEXT NOT NULL
    );
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        parent_id TEXT REFERENCES runs(id),
        path TEXT NOT NULL,
        status TEXT NOT NULL,   -- created | training | finished | failed
        recipe TEXT NOT NULL,   -- the resolved recipe as JSON
        model_name TEXT,
        weights_sha256 TEXT,
        train_dataset_id INTEGER REFERENCES datasets(id),
        heldout_dataset_id INTEGER REFERENCES datasets(id),
        seed INTEGER,
        hardware TEXT,
        summary TEXT,           -- JSON: steps, tokens, final loss, timings
        pid INTEGER,
        host TEXT,
        created TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    CREATE TABLE evals (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id),
        rung TEXT NOT NULL,
        suite TEXT NOT NULL,    -- heldout | general | safety | ...
        metrics TEXT NOT NULL,
        items_path TEXT,
        items_sha256 TEXT,
        created TEXT NOT NULL
    );
    CREATE TABLE gates (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id),
        passed INTEGER NOT NULL,
        reasons TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE TABLE exports (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id),
        kind TEXT NOT NULL,
        path TEXT NOT NULL,
        details TEXT,
        created TEXT NOT NULL
    );
    CREATE INDEX evals_run ON evals(run_id);
    CREATE INDEX gates_run ON gates(run_id);
    """,
    # The provenance file of a dataset a teacher wrote (`tuneloop distill generate`), as JSON.
    "ALTER TABLE datasets ADD COLUMN provenance TEXT",
]

LIVE_STATUSES = ("created", "training")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Registry:
    """A handle on `<workspace>/registry.db`. Cheap to open; every method is one transaction."""

    def __init__(self, workspace: str | Path):
        self.path = Path(workspace) / "registry.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self._check_version()
        self._use_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        self.mark_dead_runs_failed()

    @classmethod
    def read_only(cls, workspace: str | Path) -> Registry:
        """A handle that never writes (the dashboard): no migration, no runs marked failed.
        Raises `FileNotFoundError` when the workspace has no registry, and `UserError` for one
        written by a newer tuneloop."""
        reg = cls.__new__(cls)
        reg.path = Path(workspace) / "registry.db"
        if not reg.path.is_file():
            raise FileNotFoundError(reg.path)
        uri = f"{reg.path.resolve().as_uri()}?mode=ro"
        reg.db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        reg.db.row_factory = sqlite3.Row
        reg._check_version()
        return reg

    def _check_version(self) -> None:
        """Refuse a registry whose schema is newer than this tuneloop knows: its rows could
        mean something else, and a migration from here would damage it."""
        version = self.version
        if version > len(MIGRATIONS):
            self.db.close()
            from tuneloop.errors import UserError

            raise UserError(
                f"the registry was written by a newer tuneloop (schema version {version}; this "
                f"one knows up to {len(MIGRATIONS)})",
                str(self.path),
                "upgrade tuneloop (pip install -U tuneloop), or use another --workspace",
            )

    def _use_wal(self, wait: float = 30.0) -> None:
        """Put the file in WAL mode (it stays so). Switching needs the database to itself, and
        SQLite answers "database is locked" at once, without the busy timeout, when another
        process opens the new file at the same moment: retry until `wait` seconds are over."""
        deadline = time.monotonic() + wait
        while True:
            try:
                if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @property
    def version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for i, script in enumerate(MIGRATIONS[version:], start=version):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {i + 1}")

    # -- datasets ------------------------------------------------------------------------------

    def add_dataset(self, sha256: str, path: str, hashes: list, lint: dict | None = None,
                    provenance: dict | None = None) -> int:  # fmt: skip
        """The dataset's id; a file already registered (same content hash) is not added twice
        (its lint and provenance are updated when given). A dataset of no examples is refused:
        registered, it would read as real data in every diff."""
        with self.transaction() as db:
            row = db.execute("SELECT id FROM datasets WHERE sha256 = ?", (sha256,)).fetchone()
            if row:
                for column, value in (("lint", lint), ("provenance", provenance)):
                    if value is not None:
                        db.execute(f"UPDATE datasets SET {column} = ? WHERE id = ?",
                                   (_j(value), row[0]))  # fmt: skip
                return row[0]
            if not hashes:
                raise ValueError(f"{path} has no examples: a dataset of 0 is not registered")
            cur = db.execute(
                "INSERT INTO datasets (sha256, path, n_examples, hashes, lint, provenance, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sha256, path, len(hashes), _j(hashes), _j(lint), _j(provenance), now()),
            )
            return cur.lastrowid

    def dataset(self, dataset_id: int) -> dict | None:
        row = self.db.execute("SELECT * FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
        return _row(row)

    # -- runs ----------------------------------------------------------------------------------

    def add_run(self, run_id: str, name: str, path: str, recipe: dict, parent: str | None = None,
                **fields) -> None:  # fmt: skip
        stamp = now()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs (id, name, parent_id, path, status, recipe, seed, pid, host, "
                "created, updated) VALUES (?, ?, ?, ?, 'created', ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    name,
                    parent,
                    path,
                    _j(recipe),
                    recipe.get("train", {}).get("seed"),
                    os.getpid(),
                    socket.gethostname(),
                    stamp,
                    stamp,
                ),  # fmt: skip
            )
        if fields:
            self.update_run(run_id, **fields)

    RUN_COLUMNS = ("status", "model_name", "weights_sha256", "train_dataset_id",
                   "heldout_dataset_id", "hardware", "summary", "parent_id")  # fmt: skip

    def update_run(self, run_id: str, **fields) -> None:
        """Set columns of a run; a status of `training` also claims it for this process."""
        unknown = set(fields) - set(self.RUN_COLUMNS)
        if unknown:
            raise ValueError(f"unknown run fields {sorted(unknown)}")
        if not fields:
            return
        values = {k: _j(v) if isinstance(v, dict | list) else v for k, v in fields.items()}
        if fields.get("status") in LIVE_STATUSES:
            values.update(pid=os.getpid(), host=socket.gethostname())
        values["updated"] = now()
        sets = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as db:
            db.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*values.values(), run_id))

    def run(self, run_id: str) -> dict | None:
        return _row(self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())

    def runs(self) -> list[dict]:
        return [_row(r) for r in self.db.execute("SELECT * FROM runs ORDER BY created, id")]

    def mark_dead_runs_failed(self) -> list[str]:
        """Runs left `created`/`training` by a process on this host that no longer exists."""
        host = socket.gethostname()
        live = self.db.execute(
            "SELECT id, pid, host FROM runs WHERE status IN (?, ?)", LIVE_STATUSES
        ).fetchall()
        dead = [r["id"] for r in live if r["host"] == host and not _alive(r["pid"])]
        for run_id in dead:
            with self.transaction() as db:
                db.execute(
                    "UPDATE runs SET status = 'failed', updated = ? WHERE id = ? AND status IN "
                    "(?, ?)",
                    (now(), run_id, *LIVE_STATUSES),
                )
        return dead

    # -- evaluations, gates, exports -----------------------------------------------------------

    def add_eval(self, run_id: str, rung: str, suite: str, metrics: dict,
                 items_path: str | None = None, items_sha: str | None = None) -> int:  # fmt: skip
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO evals (run_id, rung, suite, metrics, items_path, items_sha256, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, rung, suite, _j(metrics), items_path, items_sha, now()),
            )
            return cur.lastrowid

    def evals(self, run_id: str) -> list[dict]:
        rows = self.db.execute("SELECT * FROM evals WHERE run_id = ? ORDER BY id", (run_id,))
        return [_row(r) for r in rows]

    def add_gate(self, run_id: str, passed: bool, reasons: list | dict) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO gates (run_id, passed, reasons, created) VALUES (?, ?, ?, ?)",
                (run_id, int(passed), _j(reasons), now()),
            )
            return cur.lastrowid

    def gates(self, run_id: str) -> list[dict]:
        rows = self.db.execute("SELECT * FROM gates WHERE run_id = ? ORDER BY id", (run_id,))
        return [_row(r) for r in rows]

    def add_export(self, run_id: str, kind: str, path: str, details: dict | None = None) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO exports (run_id, kind, path, details, created) VALUES (?, ?, ?, ?, ?)",
                (run_id, kind, path, _j(details), now()),
            )
            return cur.lastrowid

    def exports(self, run_id: str) -> list[dict]:
        rows = self.db.execute("SELECT * FROM exports WHERE run_id = ? ORDER BY id", (run_id,))
        return [_row(r) for r in rows]

    def integrity(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) still answers kill(0): look closer.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _j(value) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


JSON_COLUMNS = {"recipe", "hardware", "summary", "hashes", "lint", "provenance", "metrics",
                "reasons", "details"}  # fmt: skip


def _row(row: sqlite3.Row | None) -> dict | None:
    if row is None:
        return None
    out = dict(row)
    for key in JSON_COLUMNS & out.keys():
        if out[key] is not None:
            out[key] = json.loads(out[key])
    return out
