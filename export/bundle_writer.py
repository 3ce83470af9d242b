"""Turn a training run directory into a verified bundle: export, check parity, compress, calibrate, write."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

from edgevae.agent.bundle import Manifest, describe_files, load_bundle, pack, write_manifest
from edgevae.agent.distribution import DriftReference
from edgevae.agent.golden import GOLDEN_FILE, GOLDEN_WINDOWS, write_golden
from edgevae.core.decision import Debounce, Threshold
from edgevae.core.errors import CalibrationError, ExportError
from edgevae.core.thresholds import AUTO, calibrate, choose_method, needs_training_scores
from edgevae.export import parity
from edgevae.export._rundir import Run, load_run
from edgevae.export.generator_onnx import export_generator
from edgevae.export.onnx import DEFAULT_OPSET, set_metadata, to_onnx
from edgevae.export.quantize import DEFAULT_PRECISION, Int8Settings, Precision, compress
from edgevae.export.tensorrt import PLAN_NAME, build_engine, require_tensorrt

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"


def auto_score_rows(window: int, stride: int, trigger: int) -> int:
    """A quarter of the window, but at least the rows that `trigger` windows in a row advance over.

    Measured (docs/model-selection.md): on SKAB at stride 1, scoring the newest 8 rows of a 32-row window cut
    the false alarms that trail a fault while it is still inside the window; on the simulated plant at stride
    8, a score over fewer rows than the debounce spans let short spikes through (17 of 24 faults caught,
    against 24 of 24 over 24 rows).
    """
    return min(window, max(window // 4, trigger * stride))


@dataclass(frozen=True)
class ExportReport:
    bundle: Path
    archive: Path | None
    manifest: Manifest
    seconds: float

    def summary(self) -> str:
        """The figures of the export in a readable block (what `edgevae export` prints)."""
        from edgevae.export.summary import format_report

        return format_report(self)


def export_bundle(
    run_dir: str | Path,
    out: str | Path,
    precision: Precision | str = DEFAULT_PRECISION,
    threshold_method: str = AUTO,
    threshold_params: dict[str, Any] | None = None,
    model_id: str | None = None,
    model_version: str | None = None,
    archive: bool = False,
    debounce: Debounce | None = None,
    tensorrt: bool = False,
    score_rows: int | None = None,
    generator: str | Path | None = None,
) -> ExportReport:
    """Export run `run_dir` into the bundle folder `out` (and `<out>.tar.gz` when `archive`).

    `threshold_method` "auto" picks the rule that fits the hold-out (`choose_method`); `score_rows`: how many
    of each window's newest rows the score covers, the rest being context; 0 scores the whole window, None
    picks `auto_score_rows`. `generator`: a generator run folder (`edgevae train-generator`) to ship for the
    device's self-test.
    """
    started = time.perf_counter()
    run_dir, out, precision = Path(run_dir), Path(out), Precision(precision)
    archive_path = _check_destination(out, archive)
    if tensorrt:
        require_tensorrt()  # fail before minutes of work, not after
    debounce = debounce or Debounce()
    run = load_run(run_dir)
    _set_score_rows(run, score_rows, debounce)
    model_id = model_id or str(run.meta.get("model_id") or run_dir.resolve().name)
    model_version = model_version or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d.%H%M%S")
    metadata = {"edgevae.model_id": model_id, "edgevae.model_version": model_version}
    metadata["edgevae.channels"] = ",".join(run.meta["channels"])
    rule = _threshold_rule(run, threshold_method, threshold_params)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be read by the agent's user
    try:
        # TensorRT takes only symmetric (zero-point 0) Q/DQ; ONNX Runtime is more accurate asymmetric.
        written = _write_model(run, staging, precision, rule, metadata, Int8Settings(symmetric=tensorrt))
        files = [MODEL_FILE, GOLDEN_FILE]
        golden = run.holdout[:GOLDEN_WINDOWS]
        golden_entry = write_golden(staging, golden, parity.onnx_scores(staging / MODEL_FILE, golden).score)
        generator_entry: dict[str, Any] = {}
        if generator is not None:
            channels = tuple(run.meta["channels"])
            generator_entry = export_generator(Path(generator), staging, channels, run.graph.window)
            files.append(generator_entry["file"])
        if tensorrt:
            written.info["tensorrt"] = build_engine(
                staging / MODEL_FILE, staging / PLAN_NAME, run.graph.window, run.graph.channels
            )
            files.append(PLAN_NAME)
        written.info["seconds"] = round(time.perf_counter() - started, 3)
        manifest = _manifest(run, staging, files, precision, written, debounce, (model_id, model_version), golden_entry)
        manifest = replace(manifest, generator=generator_entry)
        write_manifest(staging, manifest)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _pack_and_check(out, archive_path if archive else None, manifest, run.holdout[:8], written.scores[:8])
    seconds = time.perf_counter() - started
    logger.info("bundle %s written in %.2f s", out, seconds)
    return ExportReport(out, archive_path if archive else None, manifest, seconds)


def _check_destination(out: Path, archive: bool) -> Path:
    """Refuse to overwrite anything; returns where the archive would go."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        msg = f"{out} already exists and is not an empty folder"
        raise ExportError(msg, remedy="choose a new --out or remove it")
    archive_path = out.with_name(out.name + ".tar.gz")
    if archive and archive_path.exists():
        msg = f"{archive_path} already exists"
        raise ExportError(msg, remedy="choose a new --out or remove it")
    return archive_path


def _set_score_rows(run: Run, score_rows: int | None, debounce: Debounce) -> None:
    graph = run.graph
    if score_rows is None:
        score_rows = auto_score_rows(graph.window, int(run.meta["stride"]), debounce.trigger)
    try:
        graph.score_rows = min(score_rows, graph.window) or graph.window
    except ValueError as exc:
        raise ExportError(str(exc)) from exc


@dataclass(frozen=True)
class _Rule:
    method: str
    params: dict[str, Any]
    reason: str  # why this rule: chosen for the data, or given by the caller
    windows: np.ndarray  # the hold-out windows it calibrates on


def _threshold_rule(run: Run, method: str, params: dict[str, Any] | None) -> _Rule:
    """The threshold rule and the hold-out windows whose scored rows the model never fit."""
    windows = run.calibration_windows(run.graph.score_rows)
    if len(windows) == 0:
        msg = (
            f"{run.root}: none of the {len(run.holdout)} hold-out windows has {run.graph.score_rows} unseen rows "
            "to calibrate a threshold on"
        )
        raise CalibrationError(msg, remedy="train on more normal data, or export with a smaller --score-rows")
    if method == AUTO:
        choice = choose_method(len(windows), run.graph.score_kind)
        return _Rule(choice.method, dict(params or {}), choice.reason, windows)
    return _Rule(method, dict(params or {}), "set by --threshold-method", windows)


@dataclass
class _Written:
    threshold: Threshold
    info: dict[str, Any]  # the manifest's `export` section
    scores: np.ndarray  # the shipped model's scores of the run's hold-out windows
    calibration_scores: np.ndarray  # its scores of the windows the threshold was calibrated on


def _write_model(
    run: Run, staging: Path, precision: Precision, rule: _Rule, metadata: dict[str, str], int8: Int8Settings
) -> _Written:
    """Export, check against torch, compress into `staging`, and calibrate on the shipped model's scores."""
    graph = run.graph
    with tempfile.TemporaryDirectory(prefix="edgevae-export-") as tmp:
        fp32_path = to_onnx(graph, Path(tmp) / "fp32.onnx", graph.window, graph.channels, metadata=metadata)
        torch_vs_onnx = parity.torch_onnx_parity(graph, fp32_path, np.concatenate([run.train_sample, run.holdout]))
        worst = max(torch_vs_onnx["max_rel_error_score"], torch_vs_onnx["max_rel_error_channel_error"])
        if not worst <= parity.PARITY_RTOL:
            msg = f"the FP32 ONNX model does not match torch: max relative error {worst:.3g} > {parity.PARITY_RTOL}"
            raise ExportError(msg)

        shipped = staging / MODEL_FILE
        compression = compress(fp32_path, shipped, precision, run.train_sample, int8)
        set_metadata(shipped, {**metadata, "edgevae.precision": precision.value})
        # The threshold is calibrated on the scores of the model that ships, through the agent's backend.
        threshold, calibration_scores = _calibrate(shipped, run, rule)
        fp32_threshold, fp32_scores = _calibrate(fp32_path, run, rule)
        shipped_scores = parity.onnx_scores(shipped, run.holdout).score
        fidelity = parity.compare(
            fp32_scores, calibration_scores, fp32_threshold.value, threshold.value, graph.score_kind
        )
        fp32_bytes = fp32_path.stat().st_size
    info: dict[str, Any] = {
        "exporter": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "opset": DEFAULT_OPSET,
            "dynamo": False,
        },
        "compression": compression,
        "parity": {"torch_vs_onnx_fp32": torch_vs_onnx, "shipped_vs_fp32": _finite(fidelity.to_dict())},
        "sizes": {"fp32_bytes": fp32_bytes, "shipped_bytes": shipped.stat().st_size},
        "fp32_threshold": fp32_threshold.value,
        "threshold_choice": {"method": rule.method, "reason": rule.reason},
    }
    return _Written(threshold, info, shipped_scores, calibration_scores)


def _calibrate(model: Path, run: Run, rule: _Rule) -> tuple[Threshold, np.ndarray]:
    """The threshold `model` gets on the rule's windows, and its scores of them (for the fidelity figures)."""
    scores = parity.onnx_scores(model, rule.windows).score
    training = parity.onnx_scores(model, run.train_sample).score if needs_training_scores(rule.method) else None
    return calibrate(scores, rule.method, training, **rule.params), scores


def _manifest(
    run: Run,
    staging: Path,
    files: list[str],
    precision: Precision,
    written: _Written,
    debounce: Debounce,
    name: tuple[str, str],
    golden: dict[str, Any],
) -> Manifest:
    graph = run.graph
    model_id, model_version = name
    ranges, source = run.channel_ranges()
    return Manifest(
        model_id=model_id,
        model_version=model_version,
        channels=tuple(run.meta["channels"]),
        window=graph.window,
        stride=int(run.meta["stride"]),
        sample_period_s=float(run.meta["sample_period_s"]),
        precision=precision.value,
        model_file=MODEL_FILE,
        threshold=written.threshold,
        debounce=debounce,
        files=describe_files(staging, files),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        architecture=f"vae-{graph.vae.cfg.arch}",
        score_kind=graph.score_kind,
        score_rows=graph.score_rows,
        training=_training_section(run),
        export=written.info,
        golden=golden,
        distribution=DriftReference.build(ranges, written.calibration_scores, source).to_entry(),
    )


def _pack_and_check(
    out: Path, archive: Path | None, manifest: Manifest, windows: np.ndarray, scores: np.ndarray
) -> None:
    try:
        if archive is not None:
            pack(out, archive)
        _self_check(out, archive, manifest, windows, scores)
    except BaseException:
        # A bundle that does not read back as written must not be left where a deployment could pick it up.
        shutil.rmtree(out, ignore_errors=True)
        if archive is not None:
            archive.unlink(missing_ok=True)
        raise


def _training_section(run: Run) -> dict[str, Any]:
    keys = ("created", "git_sha", "metrics", "data", "config", "model_config", "normalization")
    section = {key: run.meta[key] for key in keys if key in run.meta}
    section["run"] = run.root.resolve().name
    section["holdout_windows"] = len(run.holdout)
    section["train_sample_windows"] = len(run.train_sample)
    return section


def _finite(figures: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN; an undefined figure (a constant score, say) is written as null.
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in figures.items()}


def _self_check(
    folder: Path, archive: Path | None, expected: Manifest, windows: np.ndarray, scores: np.ndarray
) -> None:
    """Reopen what was written exactly as a device would, and score a few windows through it."""
    for path in (folder, archive):
        if path is None:
            continue
        bundle = load_bundle(path)
        # Compared as JSON: the manifest read back has lists where the written one may have tuples.
        if bundle.manifest.to_dict() != json.loads(json.dumps(expected.to_dict())):
            msg = f"{path}: the manifest read back differs from the one written"
            raise ExportError(msg)
        again = parity.onnx_scores(bundle.model_path, windows).score
        if not np.allclose(again, scores, rtol=1e-4, atol=1e-6):
            msg = f"{path}: the bundled model scores differently from the model that was calibrated"
            raise ExportError(msg)
        if path == archive:
            shutil.rmtree(bundle.root, ignore_errors=True)
