"""Score fidelity figures: torch against the exported ONNX, and a compressed model against FP32."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevae.agent.backends import ScoreOutputs, create_backend
from edgevae.core.decision import Threshold
from edgevae.core.metrics import average_ranks
from edgevae.export.graph import ScoringGraph

logger = logging.getLogger(__name__)

# torch and ONNX Runtime run the same float32 arithmetic, in a different order: the demo model's worst
# channel error differed by 1.1e-4 relative (a channel with errors near the floor). A broken export is off by
# 1e-1 or more; 1e-3 tells the two apart with room on both sides.
PARITY_RTOL = 1e-3
_BATCH = 256


def error_floor(reference: np.ndarray, score_kind: str = "mse") -> float:
    """The magnitude below which `relative_error` compares absolutely.

    1 % of the median |reference| for squared errors. A Gaussian NLL ("nll") is a sum of terms of about one
    nat per point that cancel to scores near zero, where float32 rounding alone reaches 1e-3 of the score;
    it is compared in nats below 1 nat.
    """
    ref = np.abs(np.asarray(reference, dtype=np.float64))
    floor = 1e-2 * float(np.median(ref)) if ref.size else 0.0
    return max(floor, 1.0) if score_kind == "nll" else floor


def relative_error(candidate: np.ndarray, reference: np.ndarray, floor: float | None = None) -> np.ndarray:
    """|candidate - reference| / max(|reference|, floor), element-wise; `floor` defaults to `error_floor`."""
    cand = np.asarray(candidate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if cand.shape != ref.shape:
        msg = f"expected arrays of the same shape, got {cand.shape} and {ref.shape}"
        raise ValueError(msg)
    if floor is None:
        floor = error_floor(ref)
    return np.abs(cand - ref) / np.maximum(np.abs(ref), max(floor, np.finfo(np.float64).tiny))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation; NaN when either side is constant (no order to compare)."""
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.size < 2 or np.all(ra == ra[0]) or np.all(rb == rb[0]):
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass(frozen=True)
class Fidelity:
    """How closely a compressed model's scores follow the FP32 model's on the same windows."""

    max_rel_error: float
    median_rel_error: float
    spearman: float
    # Windows whose alert decision differs, each model judged against the threshold calibrated on its own
    # scores (what a device would do), and against the FP32 threshold for both.
    decision_flips: float
    decision_flips_fp32_threshold: float
    windows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    reference_threshold: float,
    candidate_threshold: float | None = None,
    score_kind: str = "mse",
) -> Fidelity:
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    rel = relative_error(cand, ref, error_floor(ref, score_kind))
    own = Threshold(reference_threshold if candidate_threshold is None else candidate_threshold)
    fp32 = Threshold(reference_threshold)
    return Fidelity(
        max_rel_error=float(rel.max()),
        median_rel_error=float(np.median(rel)),
        spearman=spearman(cand, ref),
        decision_flips=float(np.mean(own.is_anomalous(cand) != fp32.is_anomalous(ref))),
        decision_flips_fp32_threshold=float(np.mean(fp32.is_anomalous(cand) != fp32.is_anomalous(ref))),
        windows=int(ref.size),
    )


def torch_scores(graph: ScoringGraph, windows: np.ndarray) -> ScoreOutputs:
    graph = graph.eval()
    scores, errors = [], []
    with torch.inference_mode():
        for start in range(0, len(windows), _BATCH):
            out = graph(torch.from_numpy(np.ascontiguousarray(windows[start : start + _BATCH], dtype=np.float32)))
            scores.append(out.score.numpy())
            errors.append(out.channel_error.numpy())
    return ScoreOutputs(np.concatenate(scores), np.concatenate(errors))


def onnx_scores(model_path: Path, windows: np.ndarray) -> ScoreOutputs:
    """Scores from the agent's own ONNX Runtime backend, so export measures what a device computes."""
    backend = create_backend(model_path)
    try:
        outs = [backend.run(windows[start : start + _BATCH]) for start in range(0, len(windows), _BATCH)]
    finally:
        backend.close()
    return ScoreOutputs(np.concatenate([o.score for o in outs]), np.concatenate([o.channel_error for o in outs]))


def torch_onnx_parity(graph: ScoringGraph, model_path: Path, windows: np.ndarray) -> dict[str, float | int]:
    """Max relative error of the FP32 ONNX model's score and channel error against torch."""
    expected = torch_scores(graph, windows)
    actual = onnx_scores(model_path, windows)
    figures: dict[str, float | int] = {
        "max_rel_error_score": float(
            relative_error(actual.score, expected.score, error_floor(expected.score, graph.score_kind)).max()
        ),
        "max_rel_error_channel_error": float(relative_error(actual.channel_error, expected.channel_error).max()),
        "windows": len(windows),
    }
    logger.info("torch vs onnx fp32: %s", figures)
    return figures
