"""`edgevae train` then `edgevae export` with no tuning flags, on small and larger data, as a user runs them;
and our errors as the command line shows them: one line, a remedy, a distinct exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevae.agent.bundle import load_bundle
from edgevae.agent.table import write_table
from edgevae.cli import main as cli
from edgevae.core.errors import ConfigError, DataError, TrainingError
from edgevae.core.thresholds import POT_MIN_WINDOWS
from edgevae.training.simulate import simulate_plant

pytestmark = pytest.mark.slow


def _csv(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / f"plant-{rows}.csv"
    write_table(simulate_plant(rows, seed=rows), path)
    return path


@pytest.mark.parametrize(
    ("rows", "method"),
    [
        (250, "scaled-quantile"),  # the fewest rows the default window fits: 37 validation rows
        (400, "scaled-quantile"),  # SKAB's leaderboard fit (peaks-over-threshold used to fail here)
        (14_000, "pot"),  # past 10,000 rows a 15 % hold-out of its own, long enough for peaks-over-threshold
    ],
)
def test_defaults_train_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: int, method: str) -> None:
    data, run, bundle = _csv(tmp_path, rows), tmp_path / "run", tmp_path / "bundle"
    assert cli.main(["train", "--data", str(data), "--out", str(run), "--no-progress"]) == 0
    assert cli.main(["export", "--run", str(run), "--out", str(bundle)]) == 0
    printed = capsys.readouterr().out
    m = load_bundle(bundle).manifest
    assert m.threshold.method == method
    assert m.threshold.value > 0
    # export says which rule it chose and why
    assert f"threshold rule  {m.threshold.calibration_windows} hold-out windows" in printed
    assert (">=" if method == "pot" else "<") + f" {POT_MIN_WINDOWS}" in printed


@pytest.mark.parametrize(
    ("argv", "error", "says"),
    [
        # too little data for one window: the option to change and what to do
        (["--window", "32"], ConfigError, "use a smaller window or more data"),
        # a step size that makes the loss overflow
        (["--lr", "1e12", "--grad-clip", "0"], TrainingError, "lower --lr"),
    ],
)
def test_train_errors_are_one_line_with_their_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], error: type[Exception], says: str
) -> None:
    rows = 60 if error is ConfigError else 400
    code = cli.main(["train", "--data", str(_csv(tmp_path, rows)), "--out", str(tmp_path / "run"), *argv])
    err = capsys.readouterr().err
    assert code == error.exit_code  # type: ignore[attr-defined]
    assert err.startswith("edgevae train: error: ")
    assert says in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_exit_codes_are_distinct() -> None:
    from edgevae.core import errors

    classes = [errors.ConfigError, errors.DataError, errors.BundleError, errors.BackendError]
    classes += [errors.TrainingError, errors.ExportError]
    codes = [c.exit_code for c in classes]
    assert len(set(codes)) == len(codes)
    assert 1 not in codes  # 1 is an unexpected failure


def test_bad_data_is_a_data_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,a\n1,2\n2,oops\n")
    assert cli.main(["train", "--data", str(bad), "--out", str(tmp_path / "run")]) == DataError.exit_code
    assert "line 3: expected a finite number in column 'a'" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgevae.training.train_vae

    def broken(_cfg: object) -> Path:
        msg = "a bug"
        raise ZeroDivisionError(msg)

    monkeypatch.setattr(edgevae.training.train_vae, "train", broken)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        cli.main(["train", "--data", str(_csv(tmp_path, 60)), "--out", str(tmp_path / "run")])
