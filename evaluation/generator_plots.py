"""The plots of a generator report: real and synthetic windows side by side, per-channel marginals, the
autocorrelation per lag, and a 2-D PCA embedding of both sets (PCA fit on the real windows, in numpy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgevae.evaluation.fidelity_stats import autocorrelation, scale_like, subset
from edgevae.evaluation.generator_data import RealWindows, SyntheticWindows

PLOTTED_CHANNELS = 4  # in the windows plot
PLOTTED_WINDOWS = 8  # per panel
MARGINAL_CHANNELS = 8
PCA_WINDOWS = 1000  # per set
REAL, SYNTHETIC = "tab:blue", "tab:orange"


def pca_embedding(real: np.ndarray, synthetic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both (n, d) sets projected on the first two principal axes of `real` (centred on the real mean).

    >>> r, s = pca_embedding(np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]]), np.array([[2.0, 1.0]]))
    >>> np.abs(r[:, 0]).round(6).tolist(), np.abs(s).round(6).tolist()
    ([2.0, 0.0, 2.0], [[0.0, 1.0]])
    """
    mean = real.mean(axis=0)
    _, _, axes = np.linalg.svd(real - mean, full_matrices=False)
    if len(axes) < 2:  # d == 1: a second axis of zeros keeps the plot 2-D
        axes = np.vstack([axes, np.zeros_like(axes)])
    top = axes[:2].T
    return (real - mean) @ top, (synthetic - mean) @ top


def write_plots(real: RealWindows, synthetic: SyntheticWindows, out: Path, seed: int = 0) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    rng = np.random.default_rng(seed)
    return [
        _windows(real, synthetic, out / "windows.png", rng),
        _marginals(real, synthetic, out / "marginals.png"),
        _acf(real, synthetic, out / "autocorrelation.png"),
        _pca(real, synthetic, out / "pca.png", rng),
    ]


def _windows(real: RealWindows, synthetic: SyntheticWindows, path: Path, rng: np.random.Generator) -> Path:
    import matplotlib.pyplot as plt

    channels = min(PLOTTED_CHANNELS, len(real.channels))
    fig, axes = plt.subplots(channels, 2, figsize=(9, 2.2 * channels), sharex=True, squeeze=False)
    for c in range(channels):
        for col, (windows, color, title) in enumerate(
            [(real.train, REAL, "real"), (synthetic.windows, SYNTHETIC, "synthetic")]
        ):
            ax = axes[c, col]
            ax.plot(subset(windows, PLOTTED_WINDOWS, rng)[..., c].T, color=color, lw=0.8, alpha=0.7)
            ax.set_title(f"{title}: {real.channels[c]}", fontsize=9)
        # One scale per channel, so the two columns read alike.
        low = min(axes[c, 0].get_ylim()[0], axes[c, 1].get_ylim()[0])
        high = max(axes[c, 0].get_ylim()[1], axes[c, 1].get_ylim()[1])
        axes[c, 0].set_ylim(low, high)
        axes[c, 1].set_ylim(low, high)
    for ax in axes[-1]:
        ax.set_xlabel("step in window")
    fig.suptitle(f"{PLOTTED_WINDOWS} random windows per panel (raw units)", fontsize=10)
    return _save(fig, path)


def _marginals(real: RealWindows, synthetic: SyntheticWindows, path: Path) -> Path:
    import matplotlib.pyplot as plt

    channels = min(MARGINAL_CHANNELS, len(real.channels))
    cols = min(4, channels)
    rows = -(-channels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for c, ax in enumerate(axes.ravel()):
        if c >= channels:
            ax.axis("off")
            continue
        r, s = real.train[..., c].ravel(), synthetic.windows[..., c].ravel()
        edges = np.linspace(min(r.min(), s.min()), max(r.max(), s.max()) + 1e-9, 51)
        ax.hist(r, edges, density=True, histtype="step", color=REAL, label="real")
        ax.hist(s, edges, density=True, histtype="step", color=SYNTHETIC, label="synthetic")
        ax.set_title(real.channels[c], fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("per-channel marginal densities (raw units)", fontsize=10)
    return _save(fig, path)


def _acf(real: RealWindows, synthetic: SyntheticWindows, path: Path) -> Path:
    import matplotlib.pyplot as plt

    r, s = autocorrelation(real.train), autocorrelation(synthetic.windows)
    lags = np.arange(1, r.shape[1] + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in range(min(MARGINAL_CHANNELS, len(real.channels))):
        (line,) = ax.plot(lags, r[c], lw=1.2, label=real.channels[c])
        ax.plot(lags, s[c], lw=1.2, ls="--", color=line.get_color())
    ax.set(xlabel="lag (steps)", ylabel="autocorrelation", title="within-window autocorrelation: real —, synthetic --")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _pca(real: RealWindows, synthetic: SyntheticWindows, path: Path, rng: np.random.Generator) -> Path:
    import matplotlib.pyplot as plt

    r, s = scale_like(subset(real.train, PCA_WINDOWS, rng), subset(synthetic.windows, PCA_WINDOWS, rng))
    r2, s2 = pca_embedding(r.reshape(len(r), -1), s.reshape(len(s), -1))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(r2[:, 0], r2[:, 1], s=6, alpha=0.3, color=REAL, label="real")
    ax.scatter(s2[:, 0], s2[:, 1], s=6, alpha=0.3, color=SYNTHETIC, label="synthetic")
    ax.set(xlabel="PC 1 (of the real windows)", ylabel="PC 2", title="PCA of flattened windows (scaled)")
    ax.legend()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
