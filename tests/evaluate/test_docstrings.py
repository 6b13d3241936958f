"""The examples in the evaluation modules' docstrings are true."""

import doctest
import importlib

import pytest

MODULES = [
    "text_metrics",
    "refusal",
    "stats",
    "judge",
    "ladder",
    "probes",
    "scoring",
    "license",
    "advise",
    "suites",
    "ifeval",
    "knowledge",
    "cost",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"tuneloop.evaluate.{name}")
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0
