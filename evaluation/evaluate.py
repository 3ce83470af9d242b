"""`edgevae evaluate`: detection quality on SKAB through exported bundles and the agent's runtime code.

Two protocols, both scored point-wise from the agent's debounced decisions (`edgevae.agent.offline.score_table`):

- leaderboard: SKAB's own. For each labelled file, fit on its first 400 rows, test on the rest.
- deployment: one model trained on `anomaly-free/anomaly-free.csv`, one threshold, every labelled file
  scored whole. This is how the product is used: a plant's normal data in, one bundle out.

With a label column, the same two protocols run on the user's own labelled files instead
(`edgevae.evaluation.labelled`).
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

from edgevae.agent.bundle import Precision, load_bundle
from edgevae.agent.offline import score_table
from edgevae.agent.table import Table, read_table, write_table
from edgevae.agent.table_options import ReadOptions
from edgevae.core import metrics
from edgevae.core.errors import ConfigError, DataError
from edgevae.evaluation.augmentation import Augmentation, train_augmented
from edgevae.evaluation.commands import run_export, run_train

logger = logging.getLogger(__name__)

PROTOCOLS = ("leaderboard", "deployment")
# The FP32 reference and the INT8 that `edgevae export` ships by default, out of the bundle's PRECISIONS.
PRECISIONS = (Precision.FP32.value, Precision.INT8.value)
FIT_ROWS = 400  # SKAB's leaderboard fits on each file's first 400 rows
LABELLED_FOLDERS = ("valve1", "valve2", "other")
ANOMALY_FREE = Path("anomaly-free") / "anomaly-free.csv"


@dataclass
class EvalConfig:
    """What to evaluate. Models are trained and exported with `edgevae train` and `edgevae export`'s own
    defaults; `train_flags` and `export_flags` add flags to those commands (the model-selection sweep's
    variants), and a report states them."""

    data: Path
    out: Path
    protocols: tuple[str, ...] = PROTOCOLS
    precisions: tuple[str, ...] = PRECISIONS
    max_files: int | None = None
    seed: int = 0
    # One torch thread: results are reproducible for a given thread count, and two evaluations can share a
    # 2-core machine.
    threads: int = 1
    train_flags: tuple[str, ...] = ()
    export_flags: tuple[str, ...] = ()
    plots: bool = True
    # Synthetic windows from a generator trained on each model's own fit rows (edgevae.evaluation.augmentation).
    augment: Augmentation | None = None
    # deployment: the model fits this leading share of anomaly-free.csv (a plant with little normal data yet);
    # on labelled data, of each file's normal lead or of `train`.
    fit_fraction: float = 1.0
    # How the CSVs are read. With a label column, `data` is the user's labelled file or folder, not SKAB's.
    read: ReadOptions = field(default_factory=ReadOptions)
    train: Path | None = None  # labelled data: normal data for one model, instead of each file's lead


@dataclass
class FileResult:
    name: str
    labels: np.ndarray  # (rows,) 0/1 of the test rows
    predictions: np.ndarray  # (rows,) 0/1 debounced decisions
    ratio: np.ndarray  # (rows,) score / threshold (NaN before the first full window)
    timestamps: np.ndarray
    threshold: float
    model: dict[str, Any]  # what the defaults made: architecture, sizes, threshold rule, debounce

    @property
    def confusion(self) -> metrics.Confusion:
        return metrics.confusion(self.labels, self.predictions)


def labelled_files(root: Path) -> list[Path]:
    files = [p for folder in LABELLED_FOLDERS for p in sorted((root / folder).glob("*.csv"), key=_numeric_stem)]
    if not files:
        msg = f"{root}: no SKAB files under {', '.join(LABELLED_FOLDERS)}"
        raise DataError(msg, remedy="pass SKAB's data/ folder to --data, or --label-column COL for your own CSVs")
    return files


def _numeric_stem(path: Path) -> tuple[int, str]:
    return (int(path.stem), path.stem) if path.stem.isdigit() else (1 << 30, path.stem)


def train_model(cfg: EvalConfig, data: Path, rows: int, out: Path) -> Path:
    """`edgevae train --data DATA --out OUT` with the evaluation's seed and thread count (and synthetic windows
    when the evaluation augments)."""
    system = ["--seed", str(cfg.seed), "--threads", str(cfg.threads), "--device", "cpu", "--no-progress"]
    if cfg.augment is not None:
        return train_augmented(cfg.augment, data, rows, out, system, cfg.train_flags)
    return run_train(["--data", str(data), "--out", str(out), *system, *cfg.train_flags])


def export_bundle(cfg: EvalConfig, run: Path, out: Path, precision: str) -> Path:
    """`edgevae export --run RUN --out OUT --precision P`."""
    argv = ["--run", str(run), "--out", str(out), "--precision", precision, "--model-version", "eval"]
    return run_export([*argv, *cfg.export_flags]).bundle


def _describe(bundle: Path) -> dict[str, Any]:
    m = load_bundle(bundle).manifest
    model_cfg = m.training.get("model_config", {})
    return {
        "model_id": m.model_id,
        "architecture": m.architecture,
        "window": m.window,
        "stride": m.stride,
        "score_rows": m.score_rows,
        "hidden": model_cfg.get("hidden"),
        "latent": model_cfg.get("latent"),
        "epochs_run": m.training.get("metrics", {}).get("epochs_run"),
        "threshold_method": m.threshold.method,
        "threshold_params": m.threshold.params,
        "calibration_windows": m.threshold.calibration_windows,
        "debounce": [m.debounce.trigger, m.debounce.clear],
    }


def score_file(bundle: Path, table: Table, first_test_row: int, name: str) -> FileResult:
    rows = score_table(bundle, table)[first_test_row:]
    threshold = rows[0].threshold
    ratio = np.array([np.nan if r.score is None else r.score / threshold for r in rows])
    labels = table.labels[first_test_row:] if table.labels is not None else np.zeros(len(rows), dtype=np.int8)
    predictions = np.array([r.is_anomaly for r in rows], dtype=np.int8)
    timestamps = table.timestamps[first_test_row:]
    return FileResult(name, labels.astype(np.int8), predictions, ratio, timestamps, threshold, _describe(bundle))


def progress(items: list[Any], desc: str) -> Any:
    """A progress bar over the files on a terminal (the per-file figures are at debug level)."""
    import sys

    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", disable=not sys.stderr.isatty(), leave=False)


def run_leaderboard(cfg: EvalConfig, files: list[Path], work: Path) -> dict[str, list[FileResult]]:
    results: dict[str, list[FileResult]] = {p: [] for p in cfg.precisions}
    for path in progress(files, "leaderboard"):
        table = read_table(path, cfg.read)
        name = f"{path.parent.name}/{path.stem}"
        fit = Table(f"{path}[:{FIT_ROWS}]", table.timestamps[:FIT_ROWS], table.values[:FIT_ROWS], table.channels, None)
        fit_csv = work / "fit" / f"{path.parent.name}-{path.stem}.csv"
        fit_csv.parent.mkdir(parents=True, exist_ok=True)
        write_table(fit, fit_csv)
        run = train_model(cfg, fit_csv, FIT_ROWS, work / "runs" / fit_csv.stem)
        for precision in cfg.precisions:
            bundle = export_bundle(cfg, run, work / "bundles" / f"{fit_csv.stem}-{precision}", precision)
            results[precision].append(score_file(bundle, table, FIT_ROWS, name))
        logger.debug("leaderboard %s: %s", name, {p: _brief(r[-1]) for p, r in results.items()})
    return results


def run_deployment(cfg: EvalConfig, files: list[Path], work: Path) -> dict[str, list[FileResult]]:
    data = cfg.data / ANOMALY_FREE
    table = read_table(data, cfg.read)
    rows = len(table.timestamps)
    if cfg.fit_fraction < 1.0:
        rows = int(rows * cfg.fit_fraction)
        data = work / "fit" / f"anomaly-free-first-{rows}.csv"
        data.parent.mkdir(parents=True, exist_ok=True)
        part = Table(f"{table.path}[:{rows}]", table.timestamps[:rows], table.values[:rows], table.channels, None)
        write_table(part, data)
    run = train_model(cfg, data, rows, work / "runs" / "anomaly-free")
    results: dict[str, list[FileResult]] = {p: [] for p in cfg.precisions}
    for precision in cfg.precisions:
        bundle = export_bundle(cfg, run, work / "bundles" / f"anomaly-free-{precision}", precision)
        for path in progress(files, f"deployment {precision}"):
            table = read_table(path, cfg.read)
            results[precision].append(score_file(bundle, table, 0, f"{path.parent.name}/{path.stem}"))
        logger.debug("deployment %s: %s", precision, summarize(results[precision]))
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
    if cfg.read.label_column is not None:
        from edgevae.evaluation.labelled import evaluate_labelled

        with _workdir(work) as tmp:
            return evaluate_labelled(cfg, tmp)
    files = labelled_files(cfg.data)[: cfg.max_files]
    started = time.perf_counter()
    runs = {"leaderboard": run_leaderboard, "deployment": run_deployment}
    document: dict[str, Any] = {"config": _jsonable(asdict(cfg)), "files": [str(p) for p in files], "results": {}}
    per_file: dict[str, dict[str, list[FileResult]]] = {}
    with _workdir(work) as tmp:
        for protocol in cfg.protocols:
            if protocol not in runs:
                msg = f"protocol must be one of {PROTOCOLS}, got {protocol!r}"
                raise ConfigError(msg)
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
