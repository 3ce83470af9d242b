"""Fidelity statistics of synthetic sensor windows that need no training: a kernel two-sample distance,
per-channel marginals, temporal and cross-channel correlation, and a nearest-neighbour memorization check.

Every function takes windows (n, window, channels) in raw units and first min-max scales all of them with the
REAL windows' per-channel range (as the generators train and TimeGAN evaluates), so a figure does not depend
on the sensors' units. Subsets are drawn with numpy's seeded generator: a figure is a function of its inputs
and `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgevae.core.errors import DataError

MMD_MAX_WINDOWS = 1000  # per side: the kernel matrices are (2n)^2 float64
MARGINAL_BINS = 50
ACF_LAGS = 10
# A generator that does not copy puts about 1 % of its windows closer to the training set than the 1st
# percentile of held-out real windows; five times that flags it.
MEMORIZATION_FLAG = 0.05
MEMORIZATION_MAX_WINDOWS = 2000  # synthetic and held-out windows each; the training windows are all used
EXACT_COPY = 1e-6  # an L2 distance in scaled units below which a synthetic window is a copy


def check_windows(real: np.ndarray, *others: np.ndarray) -> None:
    """Every array is (n >= 2, window, channels) with the real windows' window and channels."""
    for name, x in (("real", real), *((f"array {i + 1}", o) for i, o in enumerate(others))):
        if x.ndim != 3 or len(x) < 2:
            msg = f"{name} windows: expected (n >= 2, window, channels), got shape {x.shape}"
            raise DataError(msg)
        if x.shape[1:] != real.shape[1:]:
            msg = f"{name} windows are {x.shape[1:]} (window, channels), the real ones {real.shape[1:]}"
            raise DataError(msg, remedy="compare windows of the same length and channels")


def scale_like(real: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """`real` and `others` min-max scaled (float64) with the real windows' per-channel range."""
    check_windows(real, *others)
    flat = real.reshape(-1, real.shape[-1]).astype(np.float64)
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    return [(np.asarray(x, dtype=np.float64) - lo) / span for x in (real, *others)]


def subset(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most `n` windows of `x`, a seeded random choice without replacement (all of them, in order, if fewer)."""
    if len(x) <= n:
        return x
    return x[np.sort(rng.choice(len(x), size=n, replace=False))]


def _flat(windows: np.ndarray) -> np.ndarray:
    return windows.reshape(len(windows), -1)


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d: np.ndarray = np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)
    return d


def mmd_rbf(real: np.ndarray, synthetic: np.ndarray, max_windows: int = MMD_MAX_WINDOWS, seed: int = 0) -> float:
    """Unbiased squared maximum mean discrepancy between the flattened scaled windows, RBF kernel.

    The bandwidth is the median heuristic (the median pairwise distance of the pooled windows), so the figure
    needs no tuning. Unbiased: two samples of one distribution give about 0 (and may give a little below).
    """
    x, y = scale_like(real, synthetic)
    rng = np.random.default_rng(seed)
    x, y = (_flat(subset(w, max_windows, rng)) for w in (x, y))
    pooled = np.concatenate([x, y])
    d2 = _sq_distances(pooled, pooled)
    off_diagonal = d2[np.triu_indices(len(pooled), k=1)]
    sigma2 = max(float(np.median(off_diagonal)), 1e-12)  # the median of squared distances = median distance^2
    k = np.exp(-d2 / (2.0 * sigma2))
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2.0 * kxy.mean()
    )


def marginal_distance(real: np.ndarray, synthetic: np.ndarray, bins: int = MARGINAL_BINS) -> np.ndarray:
    """Per channel, the total-variation distance (0 same, 1 disjoint) between the histograms of all values.

    The bins are equal-width over the pooled range of both sets in scaled units, so values the generator puts
    outside the real range count as mass where the real data has none.
    """
    x, y = scale_like(real, synthetic)
    out = np.empty(x.shape[-1])
    for c in range(x.shape[-1]):
        xc, yc = x[..., c].ravel(), y[..., c].ravel()
        edges = np.linspace(min(xc.min(), yc.min()), max(xc.max(), yc.max()) + 1e-9, bins + 1)
        p = np.histogram(xc, edges)[0] / xc.size
        q = np.histogram(yc, edges)[0] / yc.size
        out[c] = 0.5 * np.abs(p - q).sum()
    return out


def autocorrelation(windows: np.ndarray, lags: int = ACF_LAGS) -> np.ndarray:
    """(channels, lags) autocorrelation at lags 1..`lags` within windows, each channel standardized over all
    of the set's values (as Diffusion-TS's correlation code does), averaged over windows and time."""
    z = np.asarray(windows, dtype=np.float64)
    z = (z - z.mean(axis=(0, 1))) / np.maximum(z.std(axis=(0, 1)), 1e-12)
    lags = min(lags, z.shape[1] - 1)
    return np.stack([(z[:, lag:] * z[:, :-lag]).mean(axis=(0, 1)) for lag in range(1, lags + 1)], axis=1)


def acf_difference(real: np.ndarray, synthetic: np.ndarray, lags: int = ACF_LAGS) -> np.ndarray:
    """(channels, lags) |ACF(real) - ACF(synthetic)|; the report gives its mean."""
    check_windows(real, synthetic)
    out: np.ndarray = np.abs(autocorrelation(real, lags) - autocorrelation(synthetic, lags))
    return out


def correlation_difference(real: np.ndarray, synthetic: np.ndarray) -> float | None:
    """Mean |corr(real) - corr(synthetic)| of the lag-0 correlation over channel pairs (Diffusion-TS's
    "correlational score" up to its constant factor); None with one channel."""
    check_windows(real, synthetic)
    channels = real.shape[-1]
    if channels < 2:
        return None
    pairs = np.triu_indices(channels, k=1)

    def corr(w: np.ndarray) -> np.ndarray:
        flat = w.reshape(-1, channels).astype(np.float64)
        std = flat.std(axis=0)
        c = np.cov(flat, rowvar=False, bias=True) / np.maximum(np.outer(std, std), 1e-24)
        return np.asarray(c[pairs])

    return float(np.abs(corr(real) - corr(synthetic)).mean())


@dataclass(frozen=True)
class Memorization:
    """Nearest-neighbour L2 distances (scaled units, flattened windows) to the generator's training windows.

    The reference is how close real windows of the training data come to the other training windows, those
    that share no row with them (a stride-1 window's neighbours are the same rows shifted, not other data).
    It is drawn from the training period itself, so it holds on a plant that drifts; held-out windows,
    later rows, would come from further away and make fresh synthetic windows look like copies.
    """

    synthetic_median: float  # of each synthetic window to its nearest training window
    reference_median: float  # of training windows to their nearest training window that shares no row
    holdout_median: float  # of each held-out real window to its nearest training window (drift shows here)
    ratio: float  # synthetic_median / reference_median: about 1 or more is no copying, near 0 is copies
    reference_p1: float  # the 1st percentile of the reference distances
    fraction_closer: float  # synthetic windows closer than reference_p1: about 0.01 when nothing is copied
    exact_copies: float  # the share of synthetic windows within EXACT_COPY of a training window
    flagged: bool  # fraction_closer > MEMORIZATION_FLAG


def nearest_distances(queries: np.ndarray, reference: np.ndarray, chunk: int = 512) -> np.ndarray:
    """For each row of `queries` (n, d), the L2 distance to its nearest row of `reference` (m, d)."""
    out = np.empty(len(queries))
    ref_sq = (reference * reference).sum(1)
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        d2 = (q * q).sum(1)[:, None] + ref_sq[None, :] - 2.0 * q @ reference.T
        out[start : start + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def distances_to_other_windows(windows: np.ndarray, queries: np.ndarray, chunk: int = 256) -> np.ndarray:
    """For each index in `queries`, the L2 distance from that window of (n, steps, channels) `windows` to its
    nearest window that shares no row with it (rows compared exactly; the window itself shares all)."""
    n, steps, channels = windows.shape
    _, row_ids = np.unique(windows.reshape(-1, channels), axis=0, return_inverse=True)
    row_ids = row_ids.reshape(n, steps)
    # Which windows hold each row: windows sorted by row id, and each id's slice of them.
    flat_ids = row_ids.ravel()
    order = np.argsort(flat_ids, kind="stable")
    holders = order // steps
    starts = np.searchsorted(flat_ids[order], np.arange(flat_ids.max() + 2))
    flat = _flat(windows)
    sq = (flat * flat).sum(1)
    out = np.empty(len(queries))
    for begin in range(0, len(queries), chunk):
        idx = queries[begin : begin + chunk]
        d2 = sq[idx][:, None] + sq[None, :] - 2.0 * flat[idx] @ flat.T
        for k, i in enumerate(idx):
            sharing = np.concatenate([holders[starts[r] : starts[r + 1]] for r in np.unique(row_ids[i])])
            d2[k, sharing] = np.inf
        out[begin : begin + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def memorization(
    train: np.ndarray,
    holdout: np.ndarray,
    synthetic: np.ndarray,
    max_windows: int = MEMORIZATION_MAX_WINDOWS,
    seed: int = 0,
) -> Memorization:
    """Are synthetic windows copies of training windows? Compared with how close the training windows come to
    each other (`Memorization` says why not to held-out windows); the held-out median is reported beside.

    `train` are the windows the generator was fit on, `holdout` real windows it never saw.
    """
    tr, ho, sy = scale_like(train, holdout, synthetic)
    rng = np.random.default_rng(seed)
    flat_train = _flat(tr)
    d_syn = nearest_distances(_flat(subset(sy, max_windows, rng)), flat_train)
    d_hold = nearest_distances(_flat(subset(ho, max_windows, rng)), flat_train)
    queries = np.sort(rng.choice(len(tr), size=min(max_windows, len(tr)), replace=False))
    d_ref = distances_to_other_windows(tr, queries)
    d_ref = d_ref[np.isfinite(d_ref)]  # a window that shares a row with every other one has no reference
    syn_median, ref_median = float(np.median(d_syn)), float(np.median(d_ref))
    p1 = float(np.percentile(d_ref, 1))
    closer = float(np.mean(d_syn < p1))
    return Memorization(
        synthetic_median=syn_median,
        reference_median=ref_median,
        holdout_median=float(np.median(d_hold)),
        ratio=syn_median / ref_median if ref_median > 0 else float("inf"),
        reference_p1=p1,
        fraction_closer=closer,
        exact_copies=float(np.mean(d_syn < EXACT_COPY)),
        flagged=closer > MEMORIZATION_FLAG,
    )
