"""`edgevae evaluate`: detection quality on SKAB through exported bundles and the agent's runtime code.

Two protocols, both scored point-wise from the agent's debounced decisions (`edgevae.agent.offline.score_table`):

- leaderboard: SKAB's own. For each labelled file, fit on its first 400 rows, test on the rest.
- deployment: one model trained on `anomaly-free/anomaly-free.csv`, one threshold, every labelled file
  scored whole. This is how the product is used: a plant's normal data in, one bundle out.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.agent.offline import score_table
from edgevae.agent.table import Table, read_table, write_table
from edgevae.core import metrics
from edgevae.core.decision import Debounce
from edgevae.core.thresholds import needs_training_scores
from edgevae.core.window import sliding_windows
from edgevae.training.data import split_rows

logger = logging.getLogger(__name__)

PROTOCOLS = ("leaderboard", "deployment")
PRECISIONS = ("fp32", "int8")
FIT_ROWS = 400  # SKAB's leaderboard fits on each file's first 400 rows
LABELLED_FOLDERS = ("valve1", "valve2", "other")
ANOMALY_FREE = Path("anomaly-free") / "anomaly-free.csv"


@dataclass
class EvalConfig:
    data: Path
    out: Path
    protocols: tuple[str, ...] = PROTOCOLS
    precisions: tuple[str, ...] = PRECISIONS
    max_files: int | None = None
    # Model, training and decision: the winners of the model selection (docs/skab/model-selection.md).
    window: int = 32
    arch: str = "conv"
    hidden: int = 32
    latent: int = 4
    likelihood: str = "mse"
    beta: float = 0.02
    kl_warmup_epochs: int = 10
    std_floor_rel: float = 0.01
    splits: tuple[float, float, float] = (0.85, 0.15, 0.0)
    epochs: int = 15
    batch_size: int = 256
    patience: int = 8
    seed: int = 0
    threads: int | None = 1
    threshold_method: str = "scaled-quantile"
    threshold_params: dict[str, Any] = field(default_factory=lambda: {"q": 0.99, "ratio_q": 0.95, "margin": 1.85})
    trigger: int = 3
    clear: int = 30
    score_rows: int | None = 8  # 0: the whole window
    plots: bool = True


@dataclass
class FileResult:
    name: str
    labels: np.ndarray  # (rows,) 0/1 of the test rows
    predictions: np.ndarray  # (rows,) 0/1 debounced decisions
    ratio: np.ndarray  # (rows,) score / threshold (NaN before the first full window)
    timestamps: np.ndarray
    threshold: float

    @property
    def confusion(self) -> metrics.Confusion:
        return metrics.confusion(self.labels, self.predictions)


def labelled_files(root: Path) -> list[Path]:
    files = [p for folder in LABELLED_FOLDERS for p in sorted((root / folder).glob("*.csv"), key=_numeric_stem)]
    if not files:
        msg = f"{root}: no SKAB files under {', '.join(LABELLED_FOLDERS)} (expected SKAB's data/ folder)"
        raise FileNotFoundError(msg)
    return files


def _numeric_stem(path: Path) -> tuple[int, str]:
    return (int(path.stem), path.stem) if path.stem.isdigit() else (1 << 30, path.stem)


def _train(cfg: EvalConfig, data: Path, out: Path) -> Path:
    from edgevae.training.train_vae import TrainConfig, train

    train_cfg = TrainConfig(
        data=data,
        out=out,
        window=cfg.window,
        stride=1,  # point-wise evaluation: every row ends a window of its own
        arch=cfg.arch,
        hidden=cfg.hidden,
        latent=cfg.latent,
        likelihood=cfg.likelihood,
        beta=cfg.beta,
        kl_warmup_epochs=cfg.kl_warmup_epochs,
        std_floor_rel=cfg.std_floor_rel,
        splits=cfg.splits,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        patience=cfg.patience,
        seed=cfg.seed,
        threads=cfg.threads,
        device="cpu",
        progress=False,
    )
    return train(train_cfg)


def _export(cfg: EvalConfig, run: Path, out: Path, precision: str) -> Path:
    from edgevae.export.bundle_writer import export_bundle

    report = export_bundle(
        run,
        out,
        precision=precision,
        threshold_method=cfg.threshold_method,
        threshold_params=dict(cfg.threshold_params),
        model_version="eval",
        debounce=Debounce(cfg.trigger, cfg.clear),
        score_rows=cfg.score_rows,
    )
    return report.bundle


def _score(bundle: Path, table: Table, first_test_row: int, name: str) -> FileResult:
    rows = score_table(bundle, table)[first_test_row:]
    threshold = rows[0].threshold
    ratio = np.array([np.nan if r.score is None else r.score / threshold for r in rows])
    labels = table.labels[first_test_row:] if table.labels is not None else np.zeros(len(rows), dtype=np.int8)
    predictions = np.array([r.is_anomaly for r in rows], dtype=np.int8)
    return FileResult(name, labels.astype(np.int8), predictions, ratio, table.timestamps[first_test_row:], threshold)


def _calibrate_on_fit_rows(run: Path, values: np.ndarray, cfg: EvalConfig) -> None:
    """Calibrate the threshold on the fit rows only, as the leaderboard protocol allows nothing else.

    Four hundred rows leave too few unseen windows for a tail quantile of their own. A method that compares
    training with hold-out scores (scaled-quantile) gets every training window, and as hold-out every window
    whose scored rows all lie in the validation rows the model never fit. Any other method gets every window
    of the fit rows, most of them in-sample, which its margin has to make up for.
    """
    path = run / "calibration.npz"
    with np.load(path) as cal:
        arrays = {key: cal[key] for key in cal.files}
    windows = {"holdout": values}
    if needs_training_scores(cfg.threshold_method):
        train_rows = split_rows(len(values), cfg.splits)[0].stop
        first_holdout = max(0, train_rows + (cfg.score_rows or cfg.window) - cfg.window)
        windows = {"train_sample": values[:train_rows], "holdout": values[first_holdout:]}
    for key, rows in windows.items():
        arrays[key] = np.ascontiguousarray(sliding_windows(rows, cfg.window, 1), dtype=np.float32)
    np.savez_compressed(path, **arrays)


def run_leaderboard(cfg: EvalConfig, files: list[Path], work: Path) -> dict[str, list[FileResult]]:
    results: dict[str, list[FileResult]] = {p: [] for p in cfg.precisions}
    for path in files:
        table = read_table(path)
        name = f"{path.parent.name}/{path.stem}"
        fit = Table(f"{path}[:{FIT_ROWS}]", table.timestamps[:FIT_ROWS], table.values[:FIT_ROWS], table.channels, None)
        fit_csv = work / "fit" / f"{path.parent.name}-{path.stem}.csv"
        fit_csv.parent.mkdir(parents=True, exist_ok=True)
        write_table(fit, fit_csv)
        run = _train(cfg, fit_csv, work / "runs" / fit_csv.stem)
        _calibrate_on_fit_rows(run, fit.values, cfg)
        for precision in cfg.precisions:
            bundle = _export(cfg, run, work / "bundles" / f"{fit_csv.stem}-{precision}", precision)
            results[precision].append(_score(bundle, table, FIT_ROWS, name))
        logger.info("leaderboard %s: %s", name, {p: _brief(r[-1]) for p, r in results.items()})
    return results


def run_deployment(cfg: EvalConfig, files: list[Path], work: Path) -> dict[str, list[FileResult]]:
    run = _train(cfg, cfg.data / ANOMALY_FREE, work / "runs" / "anomaly-free")
    results: dict[str, list[FileResult]] = {p: [] for p in cfg.precisions}
    for precision in cfg.precisions:
        bundle = _export(cfg, run, work / "bundles" / f"anomaly-free-{precision}", precision)
        for path in files:
            results[precision].append(_score(bundle, read_table(path), 0, f"{path.parent.name}/{path.stem}"))
        logger.info("deployment %s: %s", precision, summarize(results[precision]))
    return results


def _brief(result: FileResult) -> str:
    c = result.confusion
    return f"tp={c.tp} fp={c.fp} fn={c.fn} tn={c.tn}"


def summarize(results: list[FileResult]) -> dict[str, float]:
    """SKAB's figures over all files: TP/FP/FN/TN summed first, then the ratios; AUCs over pooled rows."""
    total = sum((r.confusion for r in results), metrics.Confusion())
    labels = np.concatenate([r.labels for r in results])
    # Each file's score over its own threshold, so files scored by different models pool on one scale.
    ratio = np.concatenate([r.ratio for r in results])
    ratio = np.where(np.isnan(ratio), np.nanmin(ratio), ratio)
    summary = metrics.summarize(total, labels, ratio)
    trivial = metrics.trivial_flag_everything(labels)
    summary.update(
        {
            "tp": total.tp,
            "fp": total.fp,
            "fn": total.fn,
            "tn": total.tn,
            "rows": int(labels.size),
            "files": len(results),
            "trivial_f1": metrics.f1(trivial),
            "trivial_far": metrics.far(trivial),
            "trivial_mar": metrics.mar(trivial),
        }
    )
    return summary


def evaluate(cfg: EvalConfig, work: Path | None = None) -> dict[str, Any]:
    """Run the configured protocols; returns the results document that `edgevae.evaluation.report` writes out."""
    files = labelled_files(cfg.data)[: cfg.max_files]
    started = time.perf_counter()
    runs = {"leaderboard": run_leaderboard, "deployment": run_deployment}
    document: dict[str, Any] = {"config": _jsonable(asdict(cfg)), "files": [str(p) for p in files], "results": {}}
    per_file: dict[str, dict[str, list[FileResult]]] = {}
    with _workdir(work) as tmp:
        for protocol in cfg.protocols:
            if protocol not in runs:
                msg = f"protocol must be one of {PROTOCOLS}, got {protocol!r}"
                raise ValueError(msg)
            per_file[protocol] = runs[protocol](cfg, files, tmp / protocol)
            document["results"][protocol] = {p: summarize(r) for p, r in per_file[protocol].items()}
    document["seconds"] = round(time.perf_counter() - started, 1)
    document["per_file"] = per_file
    return document


@contextmanager
def _workdir(work: Path | None) -> Iterator[Path]:
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    tmp = Path(tempfile.mkdtemp(prefix="edgevae-eval-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
