"""The block of figures `edgevae export` prints about a bundle it wrote."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgevae.export.bundle_writer import ExportReport


def _compression_lines(precision: str, fid: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    """The shipped model against FP32; an FP32 bundle ships the FP32 graph, so only its size."""
    if precision == "fp32":
        return [f"size            fp32 {sizes['shipped_bytes']:,} B"]
    return [
        f"{precision} vs fp32    max rel {fid['max_rel_error']:.4f}, median rel {fid['median_rel_error']:.4f}, "
        f"spearman {_fmt(fid['spearman'])}, decision flips {100 * fid['decision_flips']:.2f} % "
        f"({fid['windows']} hold-out windows)",
        f"size            fp32 {sizes['fp32_bytes']:,} B -> {precision} {sizes['shipped_bytes']:,} B "
        f"({sizes['shipped_bytes'] / sizes['fp32_bytes']:.2f}x)",
    ]


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
        *_compression_lines(m.precision, fid, sizes),
        f"threshold       {t.value:.6g}  ({t.method}: {params}; {t.calibration_windows} hold-out windows)",
        f"threshold rule  {exp.get('threshold_choice', {}).get('reason', t.method)}",
        f"debounce        trigger {m.debounce.trigger}, clear {m.debounce.clear}",
    ]
    if "tensorrt" in exp:
        trt = exp["tensorrt"]
        lines.append(f"tensorrt        {trt['plan_file']} (TensorRT {trt['tensorrt_version']}, {trt['gpu'] or 'GPU'})")
    if m.generator:
        g = m.generator
        steps = f"{len(g['schedule'])} DDIM steps" if g["schedule"] else "one pass"
        lines.append(
            f"generator       {g['file']} ({g['kind']}, {steps}; onnx vs torch {g['parity']:.1e} of a channel's range)"
        )
    lines += [
        f"took            {report.seconds:.2f} s",
    ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
