"""Data: readers into the canonical record, split, tokenization with loss masks."""

from tuneloop.data.records import Example, content_hash

__all__ = ["Example", "content_hash"]
