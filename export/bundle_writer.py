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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

from edgevae.agent.bundle import Manifest, describe_files, load_bundle, pack, write_manifest
from edgevae.core.decision import Debounce, Threshold
from edgevae.core.errors import ExportError
from edgevae.core.thresholds import calibrate, needs_training_scores
from edgevae.export import parity
from edgevae.export._rundir import Run, load_run
from edgevae.export.onnx import DEFAULT_OPSET, set_metadata, to_onnx
from edgevae.export.quantize import Int8Settings, Precision, compress
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
        return format_report(self)


def export_bundle(
    run_dir: str | Path,
    out: str | Path,
    precision: Precision | str = Precision.INT8,
    threshold_method: str = "pot",
    threshold_params: dict[str, Any] | None = None,
    model_id: str | None = None,
    model_version: str | None = None,
    archive: bool = False,
    debounce: Debounce | None = None,
    tensorrt: bool = False,
    score_rows: int | None = None,
) -> ExportReport:
    """Export run `run_dir` into the bundle folder `out` (and `<out>.tar.gz` when `archive`).

    `score_rows`: how many of each window's newest rows the score covers, the rest being context; 0 scores
    the whole window, None picks `auto_score_rows`.
    """
    started = time.perf_counter()
    run_dir, out, precision = Path(run_dir), Path(out), Precision(precision)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        msg = f"{out} already exists and is not an empty folder; choose a new --out or remove it"
        raise ExportError(msg)
    archive_path = out.with_name(out.name + ".tar.gz")
    if archive and archive_path.exists():
        msg = f"{archive_path} already exists; choose a new --out or remove it"
        raise ExportError(msg)
    if tensorrt:
        require_tensorrt()  # fail before minutes of work, not after
    debounce = debounce or Debounce()
    run = load_run(run_dir)
    meta, graph = run.meta, run.graph
    if score_rows is None:
        score_rows = auto_score_rows(graph.window, int(meta["stride"]), debounce.trigger)
    try:
        graph.score_rows = min(score_rows, graph.window) or graph.window
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    model_id = model_id or str(meta.get("model_id") or run_dir.resolve().name)
    model_version = model_version or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d.%H%M%S")
    metadata = {"edgevae.model_id": model_id, "edgevae.model_version": model_version}
    metadata["edgevae.channels"] = ",".join(meta["channels"])

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be read by the agent's user
    try:
        threshold, export_info, shipped_scores = _write_model(
            run,
            staging,
            precision,
            threshold_method,
            threshold_params or {},
            metadata,
            # TensorRT takes only symmetric (zero-point 0) Q/DQ; ONNX Runtime is more accurate asymmetric.
            Int8Settings(symmetric=tensorrt),
        )
        files = [MODEL_FILE]
        if tensorrt:
            export_info["tensorrt"] = build_engine(
                staging / MODEL_FILE, staging / PLAN_NAME, graph.window, graph.channels
            )
            files.append(PLAN_NAME)
        export_info["seconds"] = round(time.perf_counter() - started, 3)
        manifest = Manifest(
            model_id=model_id,
            model_version=model_version,
            channels=tuple(meta["channels"]),
            window=graph.window,
            stride=int(meta["stride"]),
            sample_period_s=float(meta["sample_period_s"]),
            precision=precision.value,
            model_file=MODEL_FILE,
            threshold=threshold,
            debounce=debounce,
            files=describe_files(staging, files),
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            architecture=f"vae-{graph.vae.cfg.arch}",
            score_kind=graph.score_kind,
            score_rows=graph.score_rows,
            training=_training_section(run),
            export=export_info,
        )
        write_manifest(staging, manifest)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    try:
        if archive:
            pack(out, archive_path)
        _self_check(out, archive_path if archive else None, manifest, run.holdout[:8], shipped_scores[:8])
    except BaseException:
        # A bundle that does not read back as written must not be left where a deployment could pick it up.
        shutil.rmtree(out, ignore_errors=True)
        archive_path.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - started
    logger.info("bundle %s written in %.2f s", out, seconds)
    return ExportReport(out, archive_path if archive else None, manifest, seconds)


def _write_model(
    run: Run,
    staging: Path,
    precision: Precision,
    threshold_method: str,
    threshold_params: dict[str, Any],
    metadata: dict[str, str],
    int8: Int8Settings,
) -> tuple[Threshold, dict[str, Any], np.ndarray]:
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
        shipped_scores = parity.onnx_scores(shipped, run.holdout).score
        fp32_scores = parity.onnx_scores(fp32_path, run.holdout).score
        with_training = needs_training_scores(threshold_method)
        shipped_train = parity.onnx_scores(shipped, run.train_sample).score if with_training else None
        fp32_train = parity.onnx_scores(fp32_path, run.train_sample).score if with_training else None
        threshold = calibrate(shipped_scores, threshold_method, shipped_train, **threshold_params)
        fp32_threshold = calibrate(fp32_scores, threshold_method, fp32_train, **threshold_params)
        fidelity = parity.compare(fp32_scores, shipped_scores, fp32_threshold.value, threshold.value, graph.score_kind)
        fp32_bytes = fp32_path.stat().st_size
    export_info: dict[str, Any] = {
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
    }
    return threshold, export_info, shipped_scores


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


def format_report(report: ExportReport) -> str:
    m = report.manifest
    exp = m.export
    tvo = exp["parity"]["torch_vs_onnx_fp32"]
    fid = exp["parity"]["shipped_vs_fp32"]
    sizes = exp["sizes"]
    t = m.threshold
    params = ", ".join(f"{k}={v}" for k, v in t.params.items())
    lines = [
        f"bundle          {report.bundle}" + (f"  (+ {report.archive})" if report.archive else ""),
        f"model           {m.model_id} {m.model_version}  {m.architecture}, score {m.score_kind}, {m.precision}",
        f"torch vs onnx   max rel error {tvo['max_rel_error_score']:.2e} score, "
        f"{tvo['max_rel_error_channel_error']:.2e} channel error  ({tvo['windows']} windows)",
        f"{m.precision} vs fp32    max rel {fid['max_rel_error']:.4f}, median rel {fid['median_rel_error']:.4f}, "
        f"spearman {_fmt(fid['spearman'])}, decision flips {100 * fid['decision_flips']:.2f} % "
        f"({fid['windows']} hold-out windows)",
        f"size            fp32 {sizes['fp32_bytes']:,} B -> {m.precision} {sizes['shipped_bytes']:,} B "
        f"({sizes['shipped_bytes'] / sizes['fp32_bytes']:.2f}x)",
        f"threshold       {t.value:.6g}  ({t.method}: {params}; {t.calibration_windows} hold-out windows)",
        f"debounce        trigger {m.debounce.trigger}, clear {m.debounce.clear}",
    ]
    if "tensorrt" in exp:
        trt = exp["tensorrt"]
        lines.append(f"tensorrt        {trt['plan_file']} (TensorRT {trt['tensorrt_version']}, {trt['gpu'] or 'GPU'})")
    lines += [
        f"took            {report.seconds:.2f} s",
    ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
