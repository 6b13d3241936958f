"""Training: one shared loop (`loop.py`), one readable path per objective (`sft.py`, ...)."""
