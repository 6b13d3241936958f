"""tuneloop: fine-tune only when it pays, and prove it."""

__version__ = "0.1.0"
