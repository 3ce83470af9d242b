"""`edgevae evaluate --data FILE_OR_FOLDER --label-column COL`: SKAB's two protocols on the user's own files.

- lead (the default): for each labelled file, fit a model on its normal rows before the first labelled
  anomaly (their leading share `--fit-fraction`), and test on every row after the fit rows. SKAB's
  leaderboard protocol, with the fit rows found from the labels instead of a fixed 400.
- normal-data (with `--train NORMAL`): one model and threshold from the normal data, every labelled file
  scored whole. SKAB's deployment protocol.

Both score through exported bundles and the agent's runtime, with the same figures as on SKAB.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.agent.table import Table, read_table, write_table
from edgevae.agent.table_csv import csv_paths, read_header
from edgevae.agent.table_options import ReadOptions
from edgevae.core.errors import ConfigError, DataError
from edgevae.evaluation.evaluate import (
    EvalConfig,
    FileResult,
    export_bundle,
    progress,
    score_file,
    summarize,
    train_model,
)

logger = logging.getLogger(__name__)

LABELLED_PROTOCOLS = ("lead", "normal-data")
_NO_LEAD = "pass --train NORMAL to fit one model on normal data and score every file whole"


def evaluate_labelled(cfg: EvalConfig, work: Path) -> dict[str, Any]:
    """The protocol the config asks for on its labelled files; the document `edgevae.evaluation.report` writes."""
    started = time.perf_counter()
    paths = csv_paths(cfg.data)[: cfg.max_files]
    tables = [read_table(p, cfg.read) for p in paths]
    names = [_name(cfg.data, p) for p in paths]
    column = cfg.read.label_column
    if not any(t.labels is not None and t.labels.any() for t in tables):
        where = "in its 1 file" if len(tables) == 1 else f"in any of {len(tables)} files"
        msg = f"{cfg.data}: no row labelled 1 in column {column!r} {where}"
        raise DataError(msg, remedy="detection is measured against labelled anomalies; check --label-column")
    _log_missing(tables)
    if cfg.train is None:
        protocol, (per_file, fit_rows) = "lead", run_lead(cfg, tables, names, work / "lead")
    else:
        protocol, (per_file, fit_rows) = "normal-data", run_normal_data(cfg, tables, names, work / "normal-data")
    document: dict[str, Any] = {
        "config": _jsonable(cfg),
        "files": [str(p) for p in paths],
        "dataset": {
            "label_column": column,
            "train": None if cfg.train is None else str(cfg.train),
            "read": cfg.read.describe(),
            "read_flags": cfg.read.flags(),
            "fit_rows": fit_rows,
            "missing": {
                name: {"rows_dropped": t.rows_dropped, "rows_filled": t.rows_filled}
                for name, t in zip(names, tables, strict=True)
            },
        },
        "results": {protocol: {p: summarize(r) for p, r in per_file.items()}},
    }
    document["seconds"] = round(time.perf_counter() - started, 1)
    document["per_file"] = {protocol: per_file}
    return document


def run_lead(
    cfg: EvalConfig, tables: list[Table], names: list[str], work: Path
) -> tuple[dict[str, list[FileResult]], dict[str, int]]:
    """Per file: fit on the normal rows before its first anomaly, test on the rows after the fit rows."""
    results: dict[str, list[FileResult]] = {p: [] for p in cfg.precisions}
    # Every file's fit rows first, so that a file without a normal lead is refused before any training.
    fit_rows = {
        n: lead_rows(t, cfg.read.label_column or "", cfg.fit_fraction) for n, t in zip(names, tables, strict=True)
    }
    for table, name in progress(list(zip(tables, names, strict=True)), "lead"):
        rows = fit_rows[name]
        slug = _slug(name)
        fit = Table(f"{table.path}[:{rows}]", table.timestamps[:rows], table.values[:rows], table.channels, None)
        fit_csv = work / "fit" / f"{slug}.csv"
        write_table(fit, fit_csv)
        what = f"{table.path}: fitting on its first {rows} rows, before its first labelled anomaly"
        run = _train_or_explain(cfg, fit_csv, rows, work / "runs" / slug, what)
        for precision in cfg.precisions:
            bundle = export_bundle(cfg, run, work / "bundles" / f"{slug}-{precision}", precision)
            results[precision].append(score_file(bundle, table, rows, name))
    return results, fit_rows


def run_normal_data(
    cfg: EvalConfig, tables: list[Table], names: list[str], work: Path
) -> tuple[dict[str, list[FileResult]], dict[str, int]]:
    """One model from `cfg.train` (its leading share `cfg.fit_fraction` per file), every labelled file whole."""
    assert cfg.train is not None
    fit_dir = work / "fit"
    rows = 0
    for path in csv_paths(cfg.train):
        table = read_table(path, _normal_read(cfg, path, tables[0].channels))
        keep = max(1, int(table.rows * cfg.fit_fraction))
        part = Table(table.path, table.timestamps[:keep], table.values[:keep], table.channels,
                     None if table.labels is None else table.labels[:keep])  # fmt: skip
        write_table(part, fit_dir / f"{_slug(_name(cfg.train, path))}.csv")
        rows += keep
    run = _train_or_explain(cfg, fit_dir, rows, work / "runs" / "normal-data", f"--train {cfg.train}")
    results: dict[str, list[FileResult]] = {p: [] for p in cfg.precisions}
    for precision in cfg.precisions:
        bundle = export_bundle(cfg, run, work / "bundles" / f"normal-data-{precision}", precision)
        for table, name in progress(list(zip(tables, names, strict=True)), f"normal-data {precision}"):
            results[precision].append(score_file(bundle, table, 0, name))
    return results, {str(cfg.train): rows}


def lead_rows(table: Table, column: str, fraction: float = 1.0) -> int:
    """How many rows the lead protocol fits on: the leading `fraction` of those before the first anomaly."""
    labels = table.labels if table.labels is not None else np.zeros(table.rows, dtype=np.int8)
    anomalous = np.flatnonzero(labels)
    if anomalous.size == 0:
        msg = (
            f"{table.path}: no row labelled 1 in column {column!r}; the lead protocol fits on the rows before a "
            "file's first anomaly and tests on the rest"
        )
        raise DataError(msg, remedy=f"leave the file out, or {_NO_LEAD}")
    if anomalous[0] == 0:
        msg = (
            f"{table.path}: its first row is labelled 1 in column {column!r}; expected normal rows before the "
            "first anomaly to fit on"
        )
        raise DataError(msg, remedy=_NO_LEAD)
    return max(1, int(int(anomalous[0]) * fraction))


def _train_or_explain(cfg: EvalConfig, data: Path, rows: int, out: Path, what: str) -> Path:
    """`edgevae train`, with a message that says which fit rows were too few when they were."""
    try:
        return train_model(cfg, data, rows, out)
    except ConfigError as exc:
        raise DataError(f"{what}: {exc}", remedy=exc.remedy) from exc


def _normal_read(cfg: EvalConfig, path: Path, channels: tuple[str, ...]) -> ReadOptions:
    """The labelled files' read options for a file of normal data: the same channels, and the label column
    only if the file has one (normal data often has none)."""
    label = cfg.read.label_column
    if label is not None and label.lower() not in {c.lower() for c in read_header(path)}:
        label = None
    return replace(cfg.read, channels=cfg.read.channels or channels, label_column=label)


def _log_missing(tables: list[Table]) -> None:
    dropped, filled = sum(t.rows_dropped for t in tables), sum(t.rows_filled for t in tables)
    if dropped or filled:
        logger.info(
            "%d labelled files: %d rows dropped, %d forward-filled for missing cells", len(tables), dropped, filled
        )


def _name(root: Path, path: Path) -> str:
    """A file's name in the report: its path under the folder given, without .csv (the stem for a file)."""
    return path.relative_to(root).with_suffix("").as_posix() if root.is_dir() else path.stem


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _jsonable(cfg: EvalConfig) -> Any:
    return json.loads(json.dumps(asdict(cfg), default=str))
