"""The window generators: tiny GAN and diffusion runs on Sines and on the simulated plant, their run folders,
seeded sampling in raw units, `edgevae train-generator` / `augment` end to end, and `edgevae train --augment`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevae.cli.main import main
from edgevae.core.errors import ConfigError
from edgevae.training.checkpoint import load_run
from edgevae.training.generators import STATE_FILE, GeneratorMeta, load_generator
from edgevae.training.generators.augment import parse_augment
from edgevae.training.generators.config import GeneratorConfig, add_arguments, config_from_args, validate_config
from edgevae.training.generators.gan import Critic, GANConfig, GANTrainer, gradient_penalty
from edgevae.training.generators.nets import position_features, update_average
from edgevae.training.generators.train import train_generator
from edgevae.training.simulate import simulate_plant

REPO = Path(__file__).resolve().parents[1]
KINDS = ("diffusion", "gan")
STEPS = 30
# Small enough that each run trains in a second or two on one thread; sizes are explicit so that a change of
# the product's defaults changes what the tests check, not how long they take.
TINY = {"hidden": 16, "blocks": 2, "batch": 32, "timesteps": 50, "ddim_steps": 5, "n_critic": 2, "threads": 1}
TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()] + ["--steps", str(STEPS), "--no-progress"]
PLANT = ["--sim-rows", "3000", "--window", "16"]


def tiny(kind: str, out: Path, **overrides: object) -> GeneratorConfig:
    cfg = GeneratorConfig(kind=kind, data=None, out=out, sines=True, steps=STEPS, progress=False, **TINY)  # type: ignore[arg-type]
    return replace(cfg, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sines_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {kind: train_generator(tiny(kind, tmp_path_factory.mktemp(kind))) for kind in KINDS}


@pytest.fixture(scope="module")
def plant_npz(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Per kind, `edgevae augment`'s file of 400 windows from a generator of the simulated plant (raw units)."""
    out = {}
    for kind in KINDS:
        folder = tmp_path_factory.mktemp(f"plant-{kind}")
        assert main(["train-generator", "--kind", kind, "--out", str(folder / "gen"), *PLANT, *TINY_FLAGS]) == 0
        npz = folder / "synthetic.npz"
        args = ["augment", "--generator", str(folder / "gen"), "--n", "400", "--out", str(npz), "--seed", "1"]
        assert main([*args, "--no-progress"]) == 0
        out[kind] = npz
    return out


# Sines: the run folder, seeded sampling


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_run_folder_is_readable_without_torch(sines_runs: dict[str, Path], kind: str) -> None:
    run = sines_runs[kind]
    assert (run / STATE_FILE).is_file()
    code = (
        "import sys; from pathlib import Path; from edgevae.training.generators import GeneratorMeta; "
        f"m = GeneratorMeta.read(Path({str(run)!r})); assert 'torch' not in sys.modules; print(m.to_json())"
    )
    meta = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    assert (meta["kind"], meta["window"], meta["seed"]) == (kind, 24, 0)
    assert meta["channels"] == [f"sine_{c}" for c in range(5)]
    # Sines values are (sin + 1) / 2 of phases in [0, 2.4]: the scaler's range is about [0.5, 1].
    assert np.allclose(meta["scaler"]["data_min"], 0.5, atol=1e-3)
    assert np.allclose(meta["scaler"]["data_max"], 1.0, atol=1e-3)
    training = meta["training"]
    assert (training["steps"], training["stopped_by"], training["windows"]) == (STEPS, "steps", 10_000)
    assert training["seconds"] > 0
    assert training["data"]["sha256"]
    assert all(np.isfinite(v) for v in training["final_losses"].values())
    assert training["config"]["hidden"] == 16
    # The critic's rate is recorded for a GAN only: by default, the generator's.
    assert training["config"]["critic_lr"] == (training["config"]["lr"] if kind == "gan" else None)
    if kind == "diffusion":
        assert meta["sampler"]["ddim_steps"] == 5
        assert set(training["final_losses"]) == {"loss"}
    else:
        assert set(training["final_losses"]) == {"wasserstein", "critic", "generator"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_samples_are_seeded_and_do_not_depend_on_the_batch(sines_runs: dict[str, Path], kind: str) -> None:
    generator = load_generator(sines_runs[kind])
    assert generator.meta.kind == kind
    first = generator.sample(300, seed=1, batch=300)
    assert first.shape == (300, 24, 5)
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    # Raw Sines units: within the training data's range, about [0.5, 1].
    assert first.min() >= 0.5 - 1e-3
    assert first.max() <= 1.0 + 1e-3
    np.testing.assert_array_equal(first, generator.sample(300, seed=1, batch=300))
    # Another batch size draws the same noise; the convs' blocking may change the last bits only.
    np.testing.assert_allclose(first, generator.sample(300, seed=1, batch=70), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first[:100], generator.sample(100, seed=1), rtol=1e-5, atol=1e-6)
    assert not np.array_equal(first, generator.sample(300, seed=2))
    # Different windows within a sample, not one window repeated.
    assert float(first.std(axis=0).mean()) > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_the_same_seed_gives_the_same_weights(sines_runs: dict[str, Path], kind: str, tmp_path: Path) -> None:
    again = torch.load(train_generator(tiny(kind, tmp_path / "a")) / STATE_FILE, weights_only=True)
    first = torch.load(sines_runs[kind] / STATE_FILE, weights_only=True)
    assert first["config"] == again["config"]
    assert all(torch.equal(first["state_dict"][k], v) for k, v in again["state_dict"].items())
    other = torch.load(train_generator(tiny(kind, tmp_path / "b", seed=1)) / STATE_FILE, weights_only=True)
    assert not all(torch.equal(first["state_dict"][k], v) for k, v in other["state_dict"].items())


@pytest.mark.slow
def test_more_ddim_steps_are_a_different_sampler(sines_runs: dict[str, Path]) -> None:
    from edgevae.training.generators.diffusion import load

    recorded = load(sines_runs["diffusion"])
    assert recorded.steps == 5
    few, more = recorded.sample(50, seed=1), load(sines_runs["diffusion"], steps=20).sample(50, seed=1)
    assert not np.array_equal(few, more)


@pytest.mark.slow
def test_the_time_budget_stops_training(tmp_path: Path) -> None:
    run = train_generator(tiny("gan", tmp_path / "g", steps=10_000, budget_s=1e-6))
    training = GeneratorMeta.read(run).training
    assert (training["steps"], training["stopped_by"]) == (1, "budget")
    assert load_generator(run).sample(3).shape == (3, 24, 5)


# The plant through the CLI: raw units, and the VAE's --augment


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_augment_writes_windows_in_raw_units(plant_npz: dict[str, Path], kind: str) -> None:
    plant = simulate_plant(3000)
    with np.load(plant_npz[kind]) as npz:
        windows, channels = npz["windows"], tuple(str(c) for c in npz["channels"])
        provenance = json.loads(str(npz["generator"]))
    assert windows.shape == (400, 16, len(plant.channels))
    assert windows.dtype == np.float32
    assert channels == plant.channels
    assert (provenance["kind"], provenance["sample_seed"]) == (kind, 1)
    # Every value within the plant's range per channel: in the scaled [0, 1] space they would all be far off
    # (the plant's voltage reads about 390).
    train_rows = plant.values[: int(0.85 * 3000)]
    lo, hi = train_rows.min(axis=0), train_rows.max(axis=0)
    flat = windows.reshape(-1, len(channels))
    assert ((flat >= lo - 1e-3 * np.abs(lo)) & (flat <= hi + 1e-3 * np.abs(hi))).all()


def _train(out: Path, *extra: str) -> int:
    return main(["train", "--out", str(out), "--sim-rows", "3000", "--window", "16", "--stride", "8",
                 "--epochs", "1", "--threads", "1", "--no-progress", *extra])  # fmt: skip


@pytest.mark.slow
def test_train_augment_mixes_synthetic_windows_into_training_only(plant_npz: dict[str, Path], tmp_path: Path) -> None:
    assert _train(tmp_path / "plain") == 0
    assert _train(tmp_path / "mixed", "--augment", f"{plant_npz['diffusion']}:0.1") == 0
    plain, mixed = load_run(tmp_path / "plain"), load_run(tmp_path / "mixed")
    augment = mixed.meta["augment"]
    real = plain.meta["metrics"]["train_windows"]
    assert plain.meta["augment"] is None
    assert (augment["ratio"], augment["real_windows"], augment["synthetic_windows"]) == (0.1, real, round(0.1 * real))
    assert augment["generator"]["kind"] == "diffusion"
    assert mixed.meta["metrics"]["train_windows"] == real + round(0.1 * real)
    # Validation and hold-out are the real data's, exactly as without --augment; so is the normalization.
    assert mixed.meta["metrics"]["val_windows"] == plain.meta["metrics"]["val_windows"]
    np.testing.assert_array_equal(mixed.holdout, plain.holdout)
    assert mixed.meta["normalization"] == plain.meta["normalization"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spec", "code", "message"),
    [
        # Sines has five channels named sine_*, the plant six others.
        ("sines", 3, "channels"),
        # The plant's windows are 16 rows; a VAE of 32-row windows cannot take them.
        ("window", 3, "windows of 16 rows"),
        # 400 windows in the file, 10 per each of the ~2,500 real training windows wanted.
        ("ratio", 3, "edgevae augment --n"),
        ("missing", 2, "no such file"),
    ],
)
def test_train_augment_refuses_windows_that_do_not_fit(
    sines_runs: dict[str, Path], plant_npz: dict[str, Path], tmp_path: Path, spec: str, code: int, message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    sines_npz = tmp_path / "sines.npz"
    assert main(["augment", "--generator", str(sines_runs["gan"]), "--n", "50", "--out", str(sines_npz)]) == 0
    args = {
        "sines": ["--augment", str(sines_npz)],
        "window": ["--augment", str(plant_npz["gan"]), "--window", "32"],
        "ratio": ["--augment", f"{plant_npz['gan']}:10"],
        "missing": ["--augment", str(tmp_path / "none.npz")],
    }[spec]
    assert _train(tmp_path / "run", *args) == code
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "model.pt").exists()


# Without training: options, validation, the gradient penalty


def test_an_existing_run_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "generator.json").write_text("{}")
    assert main(["train-generator", "--kind", "gan", "--sines", "--out", str(tmp_path / "old")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    validate_config(tiny("gan", tmp_path / "new"))  # a folder that does not exist yet is fine


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"kind": "vae"}, r"--kind must be one of"),
        ({"steps": 0}, r"--steps must be >= 1"),
        ({"window": 1}, r"--window must be >= 2"),
        ({"ddim_steps": 60}, r"--ddim-steps 60 exceeds --timesteps 50"),
        ({"ema_decay": 1.0}, r"--ema-decay"),
        ({"critic_lr": 0.0}, r"--critic-lr must be a finite number > 0"),
        ({"budget_s": 0.0}, r"--budget-s"),
        ({"data": Path("/nonexistent.csv")}, r"--sines and --data are exclusive"),
        ({"sines": False, "data": Path("/nonexistent.csv")}, r"--data .*no such file"),
        ({"seed": -1}, r"--seed"),
        ({"positions": 3}, r"--positions must be an even number >= 0"),
        ({"positions": -2}, r"--positions must be an even number >= 0"),
    ],
)
def test_bad_config(tmp_path: Path, overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate_config(replace(tiny("diffusion", tmp_path / "g"), **overrides))  # type: ignore[arg-type]


def test_every_option_is_a_flag() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(actions) == {f.name for f in fields(GeneratorConfig)}
    assert all(a.help for a in actions.values())
    cfg = config_from_args(parser.parse_args(["--kind", "gan", "--out", "g", "--sines", "--splits", "7", "2", "1"]))
    assert (cfg.kind, cfg.sines, cfg.splits, cfg.window_rows, cfg.total_steps, cfg.learning_rate) == (
        "gan", True, (7.0, 2.0, 1.0), 24, 2250, 1e-4,
    )  # fmt: skip
    assert config_from_args(parser.parse_args(["--kind", "diffusion", "--out", "g"])).window_rows == 32


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("s.npz", (Path("s.npz"), 1.0)),  # no ratio: one synthetic window per real one
        ("runs/s.npz:0.25", (Path("runs/s.npz"), 0.25)),
        ("s.npz:2", (Path("s.npz"), 2.0)),  # more synthetic than real windows
        ("a:b.npz", (Path("a:b.npz"), 1.0)),  # a colon inside the name is no ratio
    ],
)
def test_parse_augment(spec: str, expected: tuple[Path, float]) -> None:
    assert parse_augment(spec) == expected


@pytest.mark.parametrize("spec", ["s.npz:0", "s.npz:-1", "s.npz:nan", "s.npz:inf"])
def test_parse_augment_refuses_a_ratio_that_is_not_positive(spec: str) -> None:
    with pytest.raises(ConfigError, match="ratio must be a number > 0"):
        parse_augment(spec)


def test_gradient_penalty_of_a_linear_critic() -> None:
    # A critic w . x + b has gradient w everywhere: the penalty is (||w|| - 1)^2 at any points.
    linear = torch.nn.Linear(16, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.full((1, 16), 0.5))  # ||w|| = 0.5 * 4 = 2

    def critic(x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = linear(x.flatten(1)).squeeze(1)
        return out

    real, fake = torch.rand(5, 8, 2), torch.rand(5, 8, 2)
    penalty = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(0))
    assert float(penalty.detach()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("decay", "steps", "expected"),
    [
        # The ramp (1 + step) / (10 + step): the first update moves 9/11 of the way, not 1 - decay of it.
        (0.999, 1, 9 / 11),
        (0.0, 1, 1.0),  # no averaging: the live weights
        # After 300 updates from 0 towards 1, what is left of the start is the product of each step's decay.
        (0.999, 300, 1 - float(np.prod([min(0.999, (1 + s) / (10 + s)) for s in range(1, 301)]))),
        # Past the ramp the decay is the one asked for: 10,000 steps at 0.995 leave nothing of the start.
        (0.995, 10_000, 1.0),
    ],
)
def test_the_moving_average_of_weights(decay: float, steps: int, expected: float) -> None:
    average, live = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        average.weight.fill_(0.0)
        live.weight.fill_(1.0)
    for step in range(1, steps + 1):
        update_average(average, live, decay, step)
    assert float(average.weight.detach()) == pytest.approx(expected, abs=1e-5)


def test_a_short_run_samples_trained_weights_not_its_initialization() -> None:
    # At 0.999 without the ramp, 300 steps would leave 74 % of the random initialization in the average.
    trainer = GANTrainer(GANConfig(window=8, channels=2, hidden=8, blocks=1), 1e-3, 4e-3, 1, 10.0, 0.999, seed=0)
    start = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
    real = torch.rand(16, 8, 2)
    for _ in range(300):
        trainer.step(lambda: real)
    saved, live = trainer.state()["state_dict"], trainer.generator.state_dict()
    moved = sum(float((saved[k] - start[k]).norm()) for k in start)
    trained = sum(float((live[k] - start[k]).norm()) for k in start)
    assert moved > 0.5 * trained
    # The run folder keeps the average, not the last weights.
    assert not all(torch.equal(saved[k], live[k]) for k in saved)


def test_the_critic_scores_any_window_length() -> None:
    for window in (8, 24, 100):
        critic = Critic(GANConfig(window=window, channels=3, hidden=8))
        assert critic(torch.rand(4, window, 3)).shape == (4,)


def test_the_critic_with_positions_scores_any_window_length() -> None:
    for window in (8, 24, 100):
        critic = Critic(GANConfig(window=window, channels=3, hidden=8, positions=4))
        assert critic(torch.rand(4, window, 3)).shape == (4,)


def test_position_features_are_the_steps_sin_and_cos() -> None:
    features = position_features(5, 4)
    assert features.shape == (4, 5)
    # Frequencies 1 and 1/100 (10,000 ** -(i / half)): sin rows first, then cos rows.
    steps = torch.arange(5, dtype=torch.float32)
    expected = torch.stack([steps.sin(), (steps / 100).sin(), steps.cos(), (steps / 100).cos()])
    torch.testing.assert_close(features, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_folder_written_without_positions_still_loads(
    sines_runs: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    """Run folders from before position features record no `positions`: they load as the model they were."""
    old = tmp_path / "old"
    old.mkdir()
    (old / "generator.json").write_bytes((sines_runs[kind] / "generator.json").read_bytes())
    state = torch.load(sines_runs[kind] / STATE_FILE, weights_only=True)
    assert state["config"].pop("positions") == (16 if kind == "diffusion" else 0)  # the defaults
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if ".pos." not in f".{k}"}
    torch.save(state, old / STATE_FILE)
    windows = load_generator(old).sample(3, seed=0)
    assert windows.shape == (3, 24, 5)
    assert np.isfinite(windows).all()
