"""Every test in this folder is part of the fault suite (`faults` marker): `make test` runs it at the quick
scale, `make faults` at the full one, and `make test-fast` leaves it out."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.faults)
