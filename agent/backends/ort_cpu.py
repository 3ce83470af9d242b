"""ONNX Runtime on the CPU: the default backend, available wherever onnxruntime installs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from edgevae.agent.backends import OrtCpuBackendConfig
from edgevae.agent.backends.base import ScoreOutputs
from edgevae.agent.bundle import CHANNEL_ERROR_OUTPUT, INPUT_NAME, SCORE_OUTPUT
from edgevae.core.errors import BackendError, ModelLoadError

logger = logging.getLogger(__name__)

KEY: Final = "onnxruntime-cpu"


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning workers burn a core between micro-batches on an otherwise idle edge device.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class OrtBackend:
    """An ONNX Runtime session checked against the graph contract; subclasses choose the providers."""

    key = KEY

    def __init__(self, model_path: Path, threads: int, providers: list[Any]) -> None:
        try:
            self._session: ort.InferenceSession | None = ort.InferenceSession(
                str(model_path), sess_options=session_options(threads), providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad models
            msg = f"onnxruntime could not load {model_path}: {exc}"
            raise ModelLoadError(msg) from exc
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if inputs != [INPUT_NAME] or {SCORE_OUTPUT, CHANNEL_ERROR_OUTPUT} - set(outputs):
            msg = (
                f"{model_path}: expected input [{INPUT_NAME!r}] and outputs {SCORE_OUTPUT!r}, "
                f"{CHANNEL_ERROR_OUTPUT!r}; the graph has inputs {inputs} and outputs {outputs}"
            )
            raise ModelLoadError(msg)
        self._outputs = [SCORE_OUTPUT, CHANNEL_ERROR_OUTPUT]

    def run(self, batch: np.ndarray) -> ScoreOutputs:
        if self._session is None:
            msg = "backend is closed"
            raise BackendError(msg)
        try:
            score, channel_error = self._session.run(
                self._outputs, {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}
            )
        except Exception as exc:
            msg = f"onnxruntime failed on a batch of shape {batch.shape}: {exc}"
            raise BackendError(msg) from exc
        return ScoreOutputs(np.asarray(score, dtype=np.float32), np.asarray(channel_error, dtype=np.float32))

    def close(self) -> None:
        self._session = None


class OrtCpuBackend(OrtBackend):
    key = KEY

    def __init__(self, model_path: Path, cfg: OrtCpuBackendConfig | None = None) -> None:
        cfg = cfg or OrtCpuBackendConfig()
        super().__init__(model_path, cfg.threads, ["CPUExecutionProvider"])
