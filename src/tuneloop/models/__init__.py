"""Models: load base models offline and attach adapters."""
