"""The examples in docstrings run, so they cannot drift from the code: every module of the package whose
source has one is collected."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "agent", "training", "export", "evaluation", "cli", "demo")


def modules_with_examples() -> list[str]:
    found = []
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            if ">>> " in path.read_text():
                parts = path.relative_to(ROOT).with_suffix("").parts
                found.append(".".join(("edgevae", *parts)).removesuffix(".__init__"))
    return found


def test_the_collection_finds_the_examples() -> None:
    assert {"edgevae.core.window", "edgevae.agent.readings", "edgevae.core.faults"} <= set(modules_with_examples())


@pytest.mark.parametrize("module", modules_with_examples())
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0
