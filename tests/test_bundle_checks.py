"""A bundle whose manifest is implausible or whose archive is damaged is refused with a reason, as a device
would meet it: `load_bundle` raises BundleError, the agent exits 3 at start, and nothing is left in /tmp."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgevae.agent.bundle import MANIFEST_NAME, load_bundle, pack
from edgevae.core.errors import BundleError


def _edit(manifest: dict[str, Any], path: str, value: Any) -> None:
    *parents, key = path.split(".")
    for parent in parents:
        manifest = manifest[parent]
    manifest[key] = value


def _corrupted(tmp_path: Path, bundle: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    change(manifest)
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("threshold.value", "0.5", "threshold.value must be a finite number, got '0.5'"),  # a string
        ("threshold.value", True, "threshold.value must be a finite number"),  # a bool is not a number
        ("threshold.value", -1.0, "must be > 0 for an mse score"),  # flags every window
        ("threshold.value", 0.0, "must be > 0 for an mse score"),
        ("debounce.trigger", 1_000_000, "between 1 and 10000 windows"),  # an alert that can never open
        ("debounce.clear", 0, "trigger and clear must be integers >= 1"),  # refused by Debounce itself
    ],
)
def test_implausible_manifest_values_are_refused(
    tmp_path: Path, bundle: Path, path: str, value: Any, says: str
) -> None:
    copy = _corrupted(tmp_path, bundle, lambda m: _edit(m, path, value))
    with pytest.raises(BundleError, match="manifest") as caught:
        load_bundle(copy)
    assert says in str(caught.value)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile's folder, so a test can see what an archive load leaves behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_a_truncated_archive_is_refused_and_leaves_nothing(tmp_path: Path, bundle: Path, private_tmp: Path) -> None:
    archive = pack(bundle, tmp_path / "b.tar.gz")
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(BundleError, match="not a readable bundle archive"):
        load_bundle(truncated)
    assert list(private_tmp.iterdir()) == []


def test_an_archive_that_fails_verification_leaves_nothing(tmp_path: Path, bundle: Path, private_tmp: Path) -> None:
    copy = _corrupted(tmp_path, bundle, lambda m: _edit(m, "threshold.value", "x"))
    with pytest.raises(BundleError):
        load_bundle(pack(copy, tmp_path / "bad.tar.gz"))
    assert list(private_tmp.iterdir()) == []


def test_an_opened_archive_is_removed_on_close(tmp_path: Path, bundle: Path, private_tmp: Path) -> None:
    opened = load_bundle(pack(bundle, tmp_path / "b.tar.gz"))
    assert opened.temporary
    assert opened.model_path.is_file()
    opened.close()
    assert list(private_tmp.iterdir()) == []
    folder = load_bundle(bundle)
    folder.close()  # a bundle folder is the user's: close leaves it alone
    assert (bundle / MANIFEST_NAME).is_file()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        # one channel fewer than the model takes
        (lambda m: m.update(channels=m["channels"][:-1]), "does not take the manifest's windows"),
        (lambda m: m.update(window=m["window"] + 1), "does not take the manifest's windows"),
    ],
)
def test_the_agent_exits_3_when_the_model_does_not_fit_its_manifest(
    tmp_path: Path, bundle: Path, change: Callable[[dict[str, Any]], None], says: str
) -> None:
    copy = _corrupted(tmp_path, bundle, change)
    result = subprocess.run(
        [sys.executable, "-m", "edgevae.agent", "--bundle", str(copy), "--broker", "mqtt://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
