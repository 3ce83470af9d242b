"""The post-hoc GRU figures of TimeGAN (Yoon et al., NeurIPS 2019), as TimeVAE and Diffusion-TS report them:
the discriminative score (can a small classifier tell real from synthetic windows?) and the predictive score
(does a small forecaster trained on synthetic windows forecast real ones?).

Both min-max scale every window with the REAL windows' per-channel range, train with Adam (learning rate
1e-3, batches of 128) and repeat over `runs` runs, each with its own split, subsets, initialization and
batches drawn from (seed, run): on CPU a figure is a function of its inputs, `seed` and torch's thread count.
The modules are TimeGAN's size (one GRU layer of max(1, channels // 2) units): the figures are only
comparable with the published ones at that size, and a larger classifier would score every generator worse.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgevae.evaluation.fidelity_stats import scale_like, subset

RUNS = 5
DISCRIMINATIVE_STEPS = 2000  # TimeGAN's iterations for the classifier
PREDICTIVE_STEPS = 5000  # and for the forecaster
BATCH = 128
TEST_SHARE = 0.2


@dataclass(frozen=True)
class Spread:
    """A figure over runs: mean, population std (as numpy's default, which the papers use) and each run's."""

    mean: float
    std: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(float(np.mean(values)), float(np.std(values)), tuple(values))

    def times(self, factor: float) -> Spread:
        return Spread.of([v * factor for v in self.values])


@dataclass(frozen=True)
class Predictive:
    """Mean absolute error of next-step forecasts on held-out real windows, in scaled units.

    Times `target_span` (the real windows' range of the forecast channel) it is in that channel's own units.
    Those are the units of the published Sines figures: TimeGAN scales its stock and energy data to [0, 1]
    but evaluates Sines as generated, with values in [0.5, 1], so its MAE there is half the scaled one.
    """

    synthetic: Spread  # forecaster trained on the synthetic windows ("train on synthetic, test on real")
    real: Spread  # the same forecaster trained on the other real windows: the floor a generator can reach
    target_span: float

    @property
    def raw(self) -> tuple[Spread, Spread]:
        """(synthetic, real) in the forecast channel's raw units."""
        return self.synthetic.times(self.target_span), self.real.times(self.target_span)


def hidden_size(channels: int) -> int:
    return max(1, channels // 2)


class _Classifier(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gru = nn.GRU(channels, hidden_size(channels), batch_first=True)
        self.head = nn.Linear(hidden_size(channels), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(x)  # the final state (layers, batch, hidden) reads the whole window
        logits: torch.Tensor = self.head(last[-1]).squeeze(-1)
        return logits


class _Forecaster(nn.Module):
    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(inputs, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(x)
        # A sigmoid, as TimeGAN's: targets are in [0, 1] scaled units.
        out: torch.Tensor = torch.sigmoid(self.head(states))
        return out


@contextmanager
def _torch_seed(seed: int, run: int) -> Iterator[None]:
    """Seed torch's global generator (module initialization) for one run, then restore the caller's state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.random.SeedSequence([seed, run]).generate_state(1)[0]))
        yield


@contextmanager
def _one_thread() -> Iterator[None]:
    """Train on one CPU thread: a GRU of a few units gains nothing from more, and on a busy 2-core machine
    torch's spinning thread pool made 4 x 500 steps take 160 s, against 19 s on one thread. The figures
    then also do not depend on the machine's core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _split(n: int, rng: np.random.Generator, test_share: float = TEST_SHARE) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    cut = int(n * (1.0 - test_share))
    return order[:cut], order[cut:]


def _batch(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    return x[torch.from_numpy(rng.choice(len(x), size=min(size, len(x)), replace=False))]


def discriminative_score(
    real: np.ndarray,
    synthetic: np.ndarray,
    runs: int = RUNS,
    steps: int = DISCRIMINATIVE_STEPS,
    seed: int = 0,
    batch: int = BATCH,
) -> Spread:
    """|accuracy - 0.5| of a GRU classifier of real vs synthetic windows on a held-out 20 % of each.

    0 means the classifier cannot tell them apart, 0.5 that it always can. Both sets are cut to the same
    number of windows (a seeded subset of the larger one), so a classifier that guesses scores 0 rather
    than the class imbalance. Each step trains on `batch` real and `batch` synthetic windows.
    """
    x_real, x_syn = scale_like(real, synthetic)
    n = min(len(x_real), len(x_syn))
    with _one_thread():
        return Spread.of([_discriminate(x_real, x_syn, n, steps, seed, run, batch) for run in range(runs)])


def _discriminate(x_real: np.ndarray, x_syn: np.ndarray, n: int, steps: int, seed: int, run: int, batch: int) -> float:
    """One run of `discriminative_score`: |accuracy - 0.5| on the held-out windows."""
    rng = np.random.default_rng([seed, run])
    r = torch.from_numpy(subset(x_real, n, rng).astype(np.float32))
    s = torch.from_numpy(subset(x_syn, n, rng).astype(np.float32))
    (r_train, r_test), (s_train, s_test) = _split(n, rng), _split(n, rng)
    r_fit, s_fit = r[r_train], s[s_train]
    with _torch_seed(seed, run):
        model = _Classifier(x_real.shape[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        real_batch, syn_batch = _batch(r_fit, batch, rng), _batch(s_fit, batch, rng)
        # One pass over both halves: the GRU's cost is per time step, not per window.
        logits = model(torch.cat([real_batch, syn_batch]))
        # TimeGAN's loss: the mean cross-entropy of the real half plus that of the synthetic half.
        loss = F.binary_cross_entropy_with_logits(
            logits[: len(real_batch)], torch.ones(len(real_batch))
        ) + F.binary_cross_entropy_with_logits(logits[len(real_batch) :], torch.zeros(len(syn_batch)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        # A logit above 0 is a sigmoid above 0.5: "real".
        correct = int((model(r[r_test]) > 0).sum()) + int((model(s[s_test]) <= 0).sum())
    return abs(correct / (len(r_test) + len(s_test)) - 0.5)


def forecast_pairs(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TimeGAN's task: from the first channels-1 channels of steps 0..T-2, forecast the LAST channel at steps
    1..T-1. With a single channel there is nothing else to read, so its own past forecasts it.

    >>> x, y = forecast_pairs(np.arange(12.0).reshape(1, 4, 3))
    >>> x[0].tolist(), y[0, :, 0].tolist()
    ([[0.0, 1.0], [3.0, 4.0], [6.0, 7.0]], [5.0, 8.0, 11.0])
    """
    inputs = windows[:, :-1, :-1] if windows.shape[-1] > 1 else windows[:, :-1]
    return inputs, windows[:, 1:, -1:]


def _fit_and_test(
    train: np.ndarray, test: np.ndarray, steps: int, seed: int, run: int, batch: int, rng: np.random.Generator
) -> float:
    x, y = (torch.from_numpy(a.astype(np.float32)) for a in forecast_pairs(train))
    x_test, y_test = (torch.from_numpy(a.astype(np.float32)) for a in forecast_pairs(test))
    # Both forecasters of a run start from the same weights: the rows differ by their training data only.
    with _torch_seed(seed, run):
        model = _Forecaster(x.shape[-1], hidden_size(train.shape[-1]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(x), size=min(batch, len(x)), replace=False))
        loss = (model(x[idx]) - y[idx]).abs().mean()  # TimeGAN trains on the error it reports
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((model(x_test) - y_test).abs().mean())


def predictive_score(
    real: np.ndarray,
    synthetic: np.ndarray,
    runs: int = RUNS,
    steps: int = PREDICTIVE_STEPS,
    seed: int = 0,
    batch: int = BATCH,
) -> Predictive:
    """Train on synthetic, test on real: the MAE (scaled units) of a GRU forecaster (`forecast_pairs`)
    trained on every synthetic window, on a held-out 20 % of the real windows; and the same forecaster
    trained on the other 80 % of the real windows, tested on the same 20 %.

    TimeGAN tests on all real windows, which its generator was trained on; testing on held-out windows lets
    the real-trained row be measured on windows its forecaster never saw, and changes the expected error of
    the synthetic-trained one not at all.
    """
    x_real, x_syn = scale_like(real, synthetic)
    on_synthetic, on_real = [], []
    with _one_thread():
        for run in range(runs):
            rng = np.random.default_rng([seed, run])
            train, test = _split(len(x_real), rng)
            on_synthetic.append(_fit_and_test(x_syn, x_real[test], steps, seed, run, batch, rng))
            on_real.append(_fit_and_test(x_real[train], x_real[test], steps, seed, run, batch, rng))
    target = np.asarray(real[..., -1], dtype=np.float64)
    span = float(target.max() - target.min())
    return Predictive(Spread.of(on_synthetic), Spread.of(on_real), span if span > 1e-12 else 1.0)
