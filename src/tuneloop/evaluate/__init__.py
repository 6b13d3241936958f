"""Evaluate: score a model's answers against references, per item, so runs can be compared."""
