"""The examples in docstrings run, so they cannot drift from the code."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "edgevae.core.window",
        "edgevae.core.decision",
        "edgevae.core.metrics",
        "edgevae.agent.readings",
        "edgevae.agent.backends.tensorrt_engine",
        "edgevae.evaluation.gate",
        "edgevae.evaluation.retrain_config",
    ],
)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0
