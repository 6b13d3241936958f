"""The SQLite lineage registry of a workspace: datasets, runs, evaluations, gates, exports."""

from tuneloop.registry.store import Registry

__all__ = ["Registry"]
