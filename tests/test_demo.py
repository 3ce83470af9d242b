"""`edgevae demo` reuses the model it trained when the data and settings are the same (`--retrain` forces)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevae.cli.main import main

SMALL = ["--epochs", "1", "--devices", "1", "--rows", "800", "--faults", "1", "--rate", "4000"]


@pytest.mark.slow
def test_the_demo_reuses_its_model_until_something_it_depends_on_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = ["--workdir", str(tmp_path / "demo")]
    main(["demo", *work, *SMALL])
    first = capsys.readouterr().out
    model = tmp_path / "demo" / "bundle" / "model.onnx"
    assert "training a VAE" in first
    trained_at = model.stat().st_mtime_ns

    main(["demo", *work, *SMALL])
    again = capsys.readouterr().out
    assert "reusing the bundle" in again
    assert "training a VAE" not in again
    assert model.stat().st_mtime_ns == trained_at

    main(["demo", *work, *SMALL, "--retrain"])
    assert "training a VAE" in capsys.readouterr().out

    main(["demo", *work, *SMALL, "--seed", "1"])  # another setting: another model
    assert "training a VAE" in capsys.readouterr().out
