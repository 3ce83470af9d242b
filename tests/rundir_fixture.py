"""A small trained run directory (model.pt, meta.json, calibration.npz) built from synthetic sensor data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from edgevae.core.window import sliding_windows
from edgevae.training.models.vae import VAEConfig, WindowVAE

CHANNELS = ("temp_c", "pressure_hpa", "flow_lps", "vibration_g")
# Very different raw scales, so a graph that forgets to normalize scores visibly wrong.
_OFFSET = np.array([60.0, 1013.0, 2.5, 0.02])
_SCALE = np.array([4.0, 25.0, 0.4, 0.005])


def synthetic_readings(rows: int, seed: int = 0) -> np.ndarray:
    """(rows, 4) correlated channels in raw units: two latent oscillations mixed, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows, dtype=np.float64)
    latent = np.stack([np.sin(2 * np.pi * t / 48.0), np.sin(2 * np.pi * t / 17.0 + 0.7)], axis=1)
    mix = np.array([[1.0, 0.2], [0.8, -0.5], [-0.3, 1.0], [0.5, 0.5]])
    values = latent @ mix.T + 0.15 * rng.standard_normal((rows, len(CHANNELS)))
    return np.asarray(values * _SCALE + _OFFSET, dtype=np.float64)


def anomalous_windows(windows: np.ndarray, seed: int = 1) -> np.ndarray:
    """Copies of `windows` with a level shift on one random channel over the second half of each window."""
    rng = np.random.default_rng(seed)
    out = windows.copy()
    half = windows.shape[1] // 2
    for w in out:
        c = int(rng.integers(windows.shape[2]))
        w[half:, c] += 3.0 * _SCALE[c]
    return np.asarray(out)


def make_run_dir(
    root: Path,
    *,
    arch: str = "conv",
    likelihood: str = "mse",
    window: int = 32,
    stride: int = 8,
    steps: int = 200,
    rows: int = 6000,
    hidden: int = 32,
    seed: int = 0,
) -> Path:
    """Train a tiny WindowVAE and write a run directory under `root` as `edgevae train` would."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    values = synthetic_readings(rows, seed)
    n_train, n_val = int(rows * 0.70), int(rows * 0.15)
    # Chronological 70/15/15 split as in training; the validation part only matters for early stopping.
    train, holdout = values[:n_train], values[n_train + n_val :]
    mean, std = train.mean(axis=0), train.std(axis=0)

    def windows(part: np.ndarray, step: int) -> np.ndarray:
        return np.ascontiguousarray(sliding_windows(part, window, step), dtype=np.float32)

    train_w = windows(train, 2)
    cfg = VAEConfig(window=window, channels=len(CHANNELS), arch=arch, latent=4, hidden=hidden, likelihood=likelihood)
    data = torch.from_numpy(((train_w - mean) / std).astype(np.float32))
    # One thread: the model is tiny, and on a busy 2-core machine torch's thread pool makes it ten times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, history = _train(cfg, data, steps, seed)
    finally:
        torch.set_num_threads(threads)

    run = root / f"run-{arch}-{likelihood}"
    run.mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": cfg.to_dict(), "state_dict": model.state_dict()}, run / "model.pt")
    # Every hold-out window, as training writes them: the threshold is a tail statistic and needs samples.
    np.savez(run / "calibration.npz", holdout=windows(holdout, 1), train_sample=train_w[::4][:250])
    last = history[-1]
    meta = {
        "schema_version": 1,
        "created": "2025-01-01T00:00:00Z",
        "git_sha": "0" * 40,
        "config": {"arch": arch, "likelihood": likelihood, "steps": steps, "seed": seed},
        "data": {"paths": ["synthetic"], "sha256": "0" * 64, "rows": rows},
        "channels": list(CHANNELS),
        "window": window,
        "stride": stride,
        "sample_period_s": 1.0,
        "normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "model_config": cfg.to_dict(),
        "metrics": {
            "best_epoch": 1,
            "train_loss": last["loss"],
            "val_loss": last["loss"],
            "recon": last["recon"],
            "kl": last["kl"],
            "epochs": 1,
            "seconds": round(time.perf_counter() - started, 3),
            "device": "cpu",
        },
        "history": history,
    }
    (run / "meta.json").write_text(json.dumps(meta, indent=2))
    return run


def _train(cfg: VAEConfig, data: torch.Tensor, steps: int, seed: int) -> tuple[WindowVAE, list[dict[str, float]]]:
    model = WindowVAE(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    history = []
    for step in range(steps):
        x = data[rng.integers(len(data), size=64)]
        out = model(x)
        if out.recon_logvar is None:
            recon = ((x - out.recon) ** 2).mean()
        else:
            recon = 0.5 * (out.recon_logvar + (x - out.recon) ** 2 * torch.exp(-out.recon_logvar)).mean()
        kl = -0.5 * (1 + out.logvar - out.mu**2 - out.logvar.exp()).sum(dim=1).mean() / (cfg.window * cfg.channels)
        loss = recon + 0.1 * kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 49 or step == steps - 1:
            history.append({"step": step + 1, "loss": loss.item(), "recon": recon.item(), "kl": kl.item()})
    return model.eval(), history
