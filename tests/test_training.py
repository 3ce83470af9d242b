"""Training data preparation, the ELBO terms, and a tiny end-to-end training run and its run directory."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevae.agent.bundle import sha256_file
from edgevae.agent.table import Table, write_table
from edgevae.agent.table_options import ReadOptions
from edgevae.core.errors import ConfigError
from edgevae.training import data
from edgevae.training.checkpoint import RUN_FILES, load_run
from edgevae.training.config import TrainConfig, add_arguments, config_from_args
from edgevae.training.losses import beta_schedule, gaussian_nll, kl_to_standard_normal, reconstruction_nll
from edgevae.training.simulate import Fault, simulate_plant
from edgevae.training.train_vae import train

REPO = Path(__file__).resolve().parents[1]
META_KEYS = {
    "schema_version", "created", "git_sha", "config", "data", "channels", "window", "stride",
    "sample_period_s", "normalization", "model_config", "metrics", "history",
}  # fmt: skip


def tiny_config(out: Path, **overrides: object) -> TrainConfig:
    # One thread: on a busy 2-core machine torch's thread pool spins and a tiny model trains many times slower.
    cfg = TrainConfig(data=None, out=out, window=16, stride=8, epochs=3, sim_rows=3000, progress=False, threads=1)
    return replace(cfg, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tiny_config(tmp_path_factory.mktemp("run")))


def test_data_and_simulate_do_not_import_torch() -> None:
    code = (
        "import sys, edgevae.training, edgevae.training.data, edgevae.training.simulate, edgevae.agent.table; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# Data preparation


def test_split_rows_is_chronological_70_15_15() -> None:
    assert data.split_rows(100) == [slice(0, 70), slice(70, 85), slice(85, 100)]


def test_normal_runs_skip_labelled_rows() -> None:
    values = np.arange(10.0).reshape(10, 1)
    runs = data.normal_runs(values, np.array([1, 0, 0, 1, 1, 0, 0, 0, 1, 0]))
    assert [run[:, 0].tolist() for run in runs] == [[1.0, 2.0], [5.0, 6.0, 7.0], [9.0]]


def test_normalization_floors_a_constant_channel() -> None:
    mean, std = data.fit_normalization([np.array([[1.0, 0.0], [3.0, 0.0]]), np.array([[2.0, 0.0]])])
    np.testing.assert_allclose(mean, [2.0, 0.0])
    assert std[0] == pytest.approx(np.std([1.0, 3.0, 2.0]))
    assert std[1] > 0


def test_make_windows_never_spans_runs_and_subsets_by_seed() -> None:
    runs = [np.arange(20.0).reshape(10, 2), np.arange(100.0, 112.0).reshape(6, 2)]
    windows = data.make_windows(runs, window=4, stride=2)
    assert windows.shape == (data.count_windows(runs, 4, 2), 4, 2) == (6, 4, 2)
    assert windows.dtype == np.float32
    assert all(np.all(np.diff(w[:, 0]) == 2) for w in windows)
    subset = data.make_windows(runs, 4, 2, max_windows=3, rng=np.random.default_rng(0))
    again = data.make_windows(runs, 4, 2, max_windows=3, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(subset, again)
    assert len(subset) == 3
    assert all(any(np.array_equal(s, w) for w in windows) for s in subset)


@pytest.mark.parametrize(
    ("lengths", "max_windows"),
    [
        ([10, 3, 7], None),  # no cap: every window
        ([10, 3, 7], 4),  # a subset drawn across runs
        ([10, 3, 7], 1),  # a single window
        ([10, 3, 7], 13),  # a cap of exactly the total keeps everything
        ([2, 9], 3),  # a run too short for one window adds none
    ],
)
def test_training_and_holdout_subsets_keep_the_order(lengths: list[int], max_windows: int | None) -> None:
    runs = [np.arange(float(n))[:, None] + 100.0 * i for i, n in enumerate(lengths)]
    full = data.make_windows(runs, 3, 1)
    subset = data.make_windows(runs, 3, 1, max_windows, np.random.default_rng(0))
    assert len(subset) == min(len(full), max_windows or len(full))
    firsts = full[:, 0, 0].tolist()
    positions = [firsts.index(w[0, 0]) for w in subset]
    assert positions == sorted(set(positions))  # distinct windows of the full set, in their order
    np.testing.assert_array_equal(subset, full[positions])
    # With no context rows before its runs, the hold-out draws the same windows, every row of them unseen.
    held, unseen = data.holdout_windows([(run, 0) for run in runs], 3, max_windows, np.random.default_rng(0))
    np.testing.assert_array_equal(held, subset)
    assert unseen.tolist() == [3] * len(subset)


def test_load_training_data_drops_anomalous_rows(tmp_path: Path) -> None:
    plant = simulate_plant(2000, seed=0, faults=[Fault("flow", 100, 50, "offset", 5.0)])
    write_table(plant, tmp_path / "a.csv")
    dataset = data.load_training_data(tmp_path)
    assert dataset.anomalous_rows == 50
    assert sum(len(r) for runs in dataset.splits.values() for r in runs) == 1950
    assert len(dataset.splits["train"]) == 2  # split around the fault
    assert dataset.sample_period_s == pytest.approx(1.0)
    assert dataset.sha256 == sha256_file(tmp_path / "a.csv")
    assert dataset.describe()["rows"] == 2000


def test_mismatched_channels_name_the_file(tmp_path: Path) -> None:
    plant = simulate_plant(200, seed=0)
    write_table(plant, tmp_path / "a.csv")
    write_table(Table("b", plant.timestamps, plant.values[:, ::-1], plant.channels[::-1], None), tmp_path / "b.csv")
    with pytest.raises(ConfigError, match=r"b\.csv: channels .* differ"):
        data.load_training_data(tmp_path)


def test_simulated_data_hash_depends_on_seed() -> None:
    a, b = data.load_training_data(None, sim_rows=500, seed=0), data.load_training_data(None, sim_rows=500, seed=1)
    assert a.sha256 != b.sha256
    assert a.simulated == {"rows": 500, "seed": 0}


# Losses


def test_loss_terms() -> None:
    mu, logvar = torch.zeros(2, 3), torch.zeros(2, 3)
    assert kl_to_standard_normal(mu, logvar).tolist() == [0.0, 0.0]
    assert kl_to_standard_normal(mu + 1.0, logvar).tolist() == [1.5, 1.5]
    x, recon = torch.ones(2, 4, 3), torch.zeros(2, 4, 3)
    assert reconstruction_nll(x, recon, None).tolist() == [12.0, 12.0]
    nll = reconstruction_nll(x, recon, torch.zeros_like(x))
    np.testing.assert_allclose(nll.numpy(), 12 * 0.5 * (1 + np.log(2 * np.pi)), rtol=1e-6)


@pytest.mark.parametrize(
    ("error", "variance"),
    [
        (0.0, 1.0),  # on the mean, unit variance: the normalizing constant alone
        (1.0, 1.0),  # one standard deviation away
        (2.0, 4.0),  # one standard deviation of a wider Gaussian
        (0.1, 0.01),  # a confident decoder: the NLL goes negative
        (3.0, 0.01),  # a confident decoder far off: a large NLL
    ],
)
def test_gaussian_nll_is_the_negative_log_density(error: float, variance: float) -> None:
    expected = -math.log(math.exp(-(error**2) / (2 * variance)) / math.sqrt(2 * math.pi * variance))
    got = gaussian_nll(
        torch.tensor([error**2], dtype=torch.float64), torch.tensor([math.log(variance)], dtype=torch.float64)
    )
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("epoch", "warmup", "expected"),
    [
        (0, 0, 2.0),  # no warm-up
        (0, 4, 0.5),  # first epoch already has a small weight
        (3, 4, 2.0),  # reaches beta on the last warm-up epoch
        (50, 4, 2.0),  # and stays there
    ],
)
def test_beta_schedule(epoch: int, warmup: int, expected: float) -> None:
    assert beta_schedule(epoch, 2.0, warmup) == pytest.approx(expected)


# Training run


@pytest.mark.slow
def test_run_directory(run_dir: Path) -> None:
    assert all((run_dir / name).is_file() for name in RUN_FILES)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert set(meta) >= META_KEYS
    assert meta["window"] == 16
    assert meta["stride"] == 8
    assert meta["channels"] == list(simulate_plant(1).channels)
    assert len(meta["history"]) == meta["metrics"]["epochs_run"] == 3
    assert {"best_epoch", "val_loss", "val_recon", "val_kl", "train_loss", "seconds", "device"} <= set(meta["metrics"])
    assert set(meta["config"]) == {f.name for f in fields(TrainConfig)}
    assert meta["config"]["read"] == ReadOptions().describe()
    assert (meta["data"]["missing_rows_dropped"], meta["data"]["missing_rows_filled"]) == (0, 0)
    assert meta["data"]["sha256"]
    checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
    assert set(checkpoint) == {"model_config", "state_dict"}


@pytest.mark.slow
def test_load_run_round_trips(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert not run.model.training
    assert run.holdout.shape[1:] == run.train_sample.shape[1:] == (16, 6)
    assert run.holdout.dtype == np.float32
    assert 0 < len(run.train_sample) <= 2000
    # hold-out windows are raw readings, far from normalized units
    assert abs(float(run.holdout[..., run.channels.index("voltage")].mean()) - 390) < 15
    x = torch.from_numpy(((run.holdout - run.mean) / run.std).astype(np.float32))
    with torch.no_grad():
        recon = run.model(x, sample=False).recon
    assert torch.isfinite(recon).all()
    assert float((recon - x).pow(2).mean()) < 1.0


@pytest.mark.slow
def test_reproducible_with_the_same_seed(run_dir: Path, tmp_path: Path) -> None:
    again = train(tiny_config(tmp_path / "again"))
    first, second = (json.loads((d / "meta.json").read_text())["history"] for d in (run_dir, again))
    assert [h["val_loss"] for h in first] == [h["val_loss"] for h in second]
    np.testing.assert_array_equal(load_run(run_dir).train_sample, load_run(again).train_sample)


@pytest.mark.slow
def test_early_stopping_keeps_the_best_epoch(tmp_path: Path) -> None:
    # No epoch can beat the first by min_delta, so patience 1 stops after the second.
    out = train(tiny_config(tmp_path, epochs=10, patience=1, kl_warmup_epochs=0, min_delta=1e9))
    metrics = json.loads((out / "meta.json").read_text())["metrics"]
    assert (metrics["epochs_run"], metrics["best_epoch"], metrics["stopped_early"]) == (2, 1, True)


@pytest.mark.slow
def test_load_run_patches_older_meta(run_dir: Path, tmp_path: Path) -> None:
    for name in RUN_FILES:
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    meta = json.loads((tmp_path / "meta.json").read_text())
    for key in ("stride", "git_sha", "history", "sample_period_s", "model_config"):
        del meta[key]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    run = load_run(tmp_path)
    assert run.stride == 8  # from the recorded config
    assert run.meta["history"] == []
    assert run.meta["model_config"]["window"] == 16


def test_load_run_names_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing model\.pt, meta\.json, calibration\.npz"):
        load_run(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"window": 18}, r"--window must be divisible by 4"),
        ({"window": 0}, r"--window must be >= 1"),
        ({"sim_rows": 60}, r"--window 16: the val split has 9 normal rows"),
        ({"arch": "rnn"}, r"--arch must be one of"),
        ({"lr": -1.0}, r"--lr must be"),
        ({"data": Path("/nonexistent/data.csv")}, r"--data .*no such file"),
        ({"max_train_windows": 0}, r"--max-train-windows"),
        ({"threads": 0}, r"--threads must be >= 1"),
    ],
)
def test_bad_config(tmp_path: Path, overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        train(tiny_config(tmp_path, **overrides))


def test_every_option_is_a_flag() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    # The read options are one field of the config and a group of flags of their own.
    assert set(actions) == {f.name for f in fields(TrainConfig)} - {"read"} | {f.name for f in fields(ReadOptions)}
    assert all(a.help for a in actions.values())
    args = parser.parse_args(["--out", "runs/x", "--window", "16", "--no-progress", "--max-train-windows", "5"])
    cfg = config_from_args(args)
    assert (cfg.out, cfg.window, cfg.progress, cfg.max_train_windows, cfg.data) == (Path("runs/x"), 16, False, 5, None)
    assert cfg.read == ReadOptions()
    args = parser.parse_args(["--out", "x", "--period", "2", "--channels", "b,a", "--missing", "drop"])
    assert config_from_args(args).read == ReadOptions(period=2.0, channels=("b", "a"), missing="drop")


def test_training_data_is_read_with_the_read_options(tmp_path: Path) -> None:
    rows = ["a,b,note"] + [f"{i % 7},{'' if i == 50 else i % 5},x" for i in range(300)]
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    read = ReadOptions(period=0.5, channels=("b", "a"), missing="ffill")
    dataset = data.load_training_data(tmp_path / "p.csv", read=read)
    assert (dataset.channels, dataset.sample_period_s, dataset.rows) == (("b", "a"), 0.5, 300)
    assert (dataset.describe()["missing_rows_filled"], dataset.describe()["missing_rows_dropped"]) == (1, 0)


@pytest.mark.slow
def test_the_run_records_how_its_data_was_read(tmp_path: Path) -> None:
    # No time column, evenly spaced rows and one gap: meta.json says how they were read and what was left out.
    plant = simulate_plant(600, seed=0)
    lines = [",".join(plant.channels)] + [",".join(map(str, row)) for row in plant.values.tolist()]
    lines[100] = lines[100].replace(lines[100].split(",")[0], "", 1)
    (tmp_path / "plant.csv").write_text("\n".join(lines) + "\n")
    read = ReadOptions(period=2.0, missing="drop")
    meta = load_run(train(tiny_config(tmp_path / "run", data=tmp_path / "plant.csv", read=read))).meta
    assert meta["config"]["read"] == read.describe()
    assert (meta["data"]["missing_rows_dropped"], meta["data"]["missing_rows_filled"]) == (1, 0)
    assert meta["sample_period_s"] == 2.0


@pytest.mark.slow
def test_each_epoch_says_how_many_there_are_and_how_long_is_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import re

    from trained_runs import train_run

    with caplog.at_level(logging.INFO, logger="edgevae.training.train_vae"):
        train_run(tmp_path, "--epochs", "3", "--patience", "10")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1 of 3", "epoch 2 of 3", "epoch 3 of 3"]
    assert re.search(r"\| [\d.]+ s/epoch, at most \d+ s left$", lines[0]), lines[0]
    assert lines[-1].endswith("at most 0 s left")
