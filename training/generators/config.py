"""`edgevae train-generator`'s settings: one validated config, its flags, and the per-kind defaults.

The defaults train a usable generator of the Sines benchmark on two CPU cores in a few minutes
(docs/generators.md has the measurements).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

from edgevae.core.errors import ConfigError
from edgevae.training.sines import SINES_WINDOW

GENERATOR_KINDS = ("diffusion", "gan")
PREDICTIONS = ("eps", "x0")
# DDIM steps at sampling: docs/generators.md has the measurement behind the default.
DEFAULT_DDIM_STEPS = 50
DATA_WINDOW = 32  # `edgevae train`'s default window, so a generator's windows fit the VAE's by default
# Per kind: training steps and learning rate. A GAN step is n_critic critic updates, each with a double
# backward for the gradient penalty, plus one generator update: about six times a diffusion step's work.
KIND_STEPS = {"diffusion": 4000, "gan": 2250}
KIND_LR = {"diffusion": 1e-3, "gan": 1e-4}
# Sin/cos features of each step's position in the window: they brought the diffusion model closer to Sines
# (discriminative score 0.016 -> 0.012) and the GAN no closer (0.110 -> 0.130, within its spread), so only
# diffusion takes them by default (docs/generators.md, "Position features").
KIND_POSITIONS = {"diffusion": 16, "gan": 0}
# Windows per batch. 256 brought the diffusion model to the Sines metric's floor (discriminative score
# 0.012 -> 0.005 at the same 4,000 steps, 2.3x the training time; docs/generators.md, "Batch size"), where
# three times the steps at 64 had not moved it.
KIND_BATCH = {"diffusion": 256, "gan": 64}


@dataclass
class GeneratorConfig:
    # data
    kind: str
    data: Path | None  # a CSV file or folder of them; None with sines=False trains on the simulated plant
    out: Path
    sines: bool = False
    sim_rows: int = 50_000
    sim_seed: int = 0
    window: int | None = None  # None: SINES_WINDOW with --sines, DATA_WINDOW otherwise
    stride: int = 1
    max_windows: int = 100_000
    splits: tuple[float, float, float] | None = None
    # model
    hidden: int = 64
    blocks: int = 4
    timesteps: int = 500
    prediction: str = "eps"  # the measurement is in diffusion.DiffusionConfig
    ddim_steps: int = DEFAULT_DDIM_STEPS
    positions: int | None = None  # None: KIND_POSITIONS[kind]
    noise_dim: int = 8
    global_noise_dim: int = 16
    # optimization
    steps: int | None = None  # None: KIND_STEPS[kind]
    budget_s: float = 900.0
    batch: int | None = None  # None: KIND_BATCH[kind]
    lr: float | None = None  # None: KIND_LR[kind]
    ema_decay: float = 0.995
    critic_lr: float | None = None  # None: the generator's learning rate
    n_critic: int = 5
    gp_weight: float = 10.0
    # system
    # One thread: on an idle two-core machine two threads train 1.25x (GAN) to 1.4x (diffusion) faster, but
    # with another job on a core torch's second thread spin-waits and a diffusion step took 10x longer.
    threads: int = 1
    seed: int = 0
    progress: bool = True

    # The values a None default stands for.
    @property
    def window_rows(self) -> int:
        return self.window or (SINES_WINDOW if self.sines else DATA_WINDOW)

    @property
    def total_steps(self) -> int:
        return self.steps or KIND_STEPS[self.kind]

    @property
    def learning_rate(self) -> float:
        return self.lr or KIND_LR[self.kind]

    @property
    def critic_learning_rate(self) -> float:
        return self.critic_lr or self.learning_rate

    @property
    def batch_size(self) -> int:
        return self.batch or KIND_BATCH[self.kind]

    @property
    def position_features(self) -> int:
        return KIND_POSITIONS[self.kind] if self.positions is None else self.positions

    def resolved(self) -> GeneratorConfig:
        """The config with every None default replaced by the value it stands for (what generator.json records)."""
        return replace(
            self,
            window=self.window_rows,
            steps=self.total_steps,
            lr=self.learning_rate,
            positions=self.position_features,
            batch=self.batch_size,
            critic_lr=self.critic_learning_rate if self.kind == "gan" else None,
        )


_FLAGS: dict[str, dict[str, str]] = {
    "data": {
        "kind": "generator to train",
        "data": "CSV file or folder of CSV files of normal operation, as `edgevae train --data`; omit for the "
        "simulated plant",
        "out": "run folder to write (generator.json, generator.pt); must not exist or be empty",
        "sines": "train on the Sines benchmark (10,000 windows of 5 channels) instead of sensor data",
        "sim_rows": "rows of simulated data when neither --data nor --sines is given",
        "sim_seed": "seed of the simulated plant or of the Sines data",
        "window": f"window length in rows (default: {SINES_WINDOW} with --sines, else {DATA_WINDOW} as "
        "`edgevae train`)",
        "stride": "stride between training windows",
        "max_windows": "cap on training windows, a random subset drawn with --seed",
        "splits": "chronological train, validation and hold-out shares of each file, as `edgevae train --splits`: "
        "the generator fits the train share only, so its windows never carry validation or hold-out rows "
        "(default: as `edgevae train` chooses)",
    },
    "model": {
        "hidden": "width of the conv blocks",
        "blocks": "residual conv blocks (dilations 1, 2, 4, 8, repeating)",
        "timesteps": "diffusion: noising steps of the cosine schedule",
        "prediction": "diffusion: the denoiser predicts the clean window (x0) or the noise (eps)",
        "ddim_steps": "diffusion: DDIM steps when sampling (recorded in generator.json; `edgevae augment "
        "--ddim-steps` overrides it)",
        "positions": "sin/cos features of each step's position in the window given to the networks (0: none, "
        f"a purely convolutional model that sees only relative offsets; default: {KIND_POSITIONS['diffusion']} for "
        f"diffusion, {KIND_POSITIONS['gan']} for gan)",
        "noise_dim": "gan: noise channels per time step",
        "global_noise_dim": "gan: size of the per-window noise vector",
    },
    "optimization": {
        "steps": f"training steps (default: {KIND_STEPS['diffusion']} for diffusion, {KIND_STEPS['gan']} for gan; "
        "a gan step is --n-critic critic updates and one generator update)",
        "budget_s": "stop after this many seconds of training if --steps are not done by then",
        "batch": f"windows per batch (default: {KIND_BATCH['diffusion']} for diffusion, {KIND_BATCH['gan']} for gan)",
        "lr": f"Adam learning rate (default: {KIND_LR['diffusion']} for diffusion, {KIND_LR['gan']} for gan)",
        "ema_decay": "decay of the moving average of the weights that sampling uses (0: the last weights)",
        "critic_lr": "gan: Adam learning rate of the critic (default: the generator's, --lr)",
        "n_critic": "gan: critic updates per generator update",
        "gp_weight": "gan: weight of the gradient penalty",
    },
    "system": {
        "threads": "torch CPU threads; the same seed and thread count give the same weights",
        "seed": "seed of initialization, batches, noise and window subsets",
        "progress": "show a progress bar with the loss (only on a terminal)",
    },
}
_CHOICES: dict[str, tuple[str, ...]] = {"kind": GENERATOR_KINDS, "prediction": PREDICTIONS}
_TYPES: dict[str, type] = {
    "kind": str, "data": Path, "out": Path, "window": int, "steps": int, "lr": float, "critic_lr": float,
    "positions": int, "batch": int,
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = {f.name: f.default for f in fields(GeneratorConfig) if f.name not in ("kind", "data", "out")}
    for title, flags in _FLAGS.items():
        group = parser.add_argument_group(title)
        for name, text in flags.items():
            flag = "--" + name.replace("_", "-")
            default = defaults.get(name)
            if name in ("progress", "sines"):
                group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
            elif name == "splits":
                group.add_argument(flag, nargs=3, type=float, metavar=("TRAIN", "VAL", "HOLDOUT"), help=text)
            else:
                group.add_argument(
                    flag,
                    type=_TYPES.get(name, type(default)),
                    default=default,
                    choices=_CHOICES.get(name),
                    required=name in ("kind", "out"),
                    help=text + (" (default: %(default)s)" if default is not None else ""),
                )


def config_from_args(args: argparse.Namespace) -> GeneratorConfig:
    cfg = GeneratorConfig(**{f.name: getattr(args, f.name) for f in fields(GeneratorConfig)})
    if cfg.splits is not None:
        cfg.splits = tuple(cfg.splits)  # type: ignore[assignment]
    return cfg


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate_config(cfg: GeneratorConfig) -> None:
    """Reject settings that cannot train, naming the flag."""
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise ConfigError(f"{_flag(name)} must be one of {choices}, got {getattr(cfg, name)!r}")
    positive = ("sim_rows", "stride", "max_windows", "hidden", "blocks", "timesteps", "ddim_steps", "batch")
    for name in (*positive, "noise_dim", "global_noise_dim", "n_critic", "threads", "window", "steps"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ConfigError(f"{_flag(name)} must be >= 1, got {value}")
    for name in ("budget_s", "lr", "critic_lr"):
        value = getattr(cfg, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{_flag(name)} must be a finite number > 0, got {value}")
    if cfg.positions is not None and (cfg.positions < 0 or cfg.positions % 2):
        raise ConfigError(f"--positions must be an even number >= 0 (sin and cos pairs), got {cfg.positions}")
    if not (0 <= cfg.ema_decay < 1):
        raise ConfigError(f"--ema-decay must be in [0, 1), got {cfg.ema_decay}")
    if not (cfg.gp_weight >= 0 and math.isfinite(cfg.gp_weight)):
        raise ConfigError(f"--gp-weight must be a finite number >= 0, got {cfg.gp_weight}")
    if cfg.window is not None and cfg.window < 2:
        raise ConfigError(f"--window must be >= 2, got {cfg.window}")
    if cfg.ddim_steps > cfg.timesteps:
        raise ConfigError(f"--ddim-steps {cfg.ddim_steps} exceeds --timesteps {cfg.timesteps}")
    if cfg.seed < 0 or cfg.sim_seed < 0:
        raise ConfigError(f"--seed and --sim-seed must be >= 0, got {cfg.seed} and {cfg.sim_seed}")
    if cfg.sines and cfg.data is not None:
        msg = "--sines and --data are exclusive"
        raise ConfigError(msg, remedy="give one source of training windows")
    if cfg.data is not None and not Path(cfg.data).exists():
        raise ConfigError(f"--data {cfg.data}: no such file or folder")
    if cfg.splits is not None and not (cfg.splits[0] > 0 and cfg.splits[1] > 0 and cfg.splits[2] >= 0):
        raise ConfigError(f"--splits expects TRAIN > 0, VAL > 0 and HOLDOUT >= 0, got {list(cfg.splits)}")
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        msg = f"--out {out} exists and is not an empty folder"
        raise ConfigError(msg, remedy="give a new folder, or remove that one first")
