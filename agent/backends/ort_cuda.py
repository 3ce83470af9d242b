"""ONNX Runtime on an NVIDIA GPU through the CUDA execution provider (needs the onnxruntime-gpu package)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

import onnxruntime as ort

from edgevae.agent.backends import OrtCudaBackendConfig
from edgevae.agent.backends.ort_cpu import OrtBackend
from edgevae.core.errors import ModelLoadError

logger = logging.getLogger(__name__)

KEY: Final = "onnxruntime-cuda"
PROVIDER = "CUDAExecutionProvider"


def providers(cfg: OrtCudaBackendConfig) -> list[Any]:
    """The provider list, in one place: CUDA first, CPU for the nodes CUDA does not implement."""
    return [(PROVIDER, {"device_id": cfg.device_id}), "CPUExecutionProvider"]


class OrtCudaBackend(OrtBackend):
    key = KEY

    def __init__(self, model_path: Path, cfg: OrtCudaBackendConfig | None = None) -> None:
        cfg = cfg or OrtCudaBackendConfig()
        available = ort.get_available_providers()
        if PROVIDER not in available:
            msg = (
                f"backend {KEY!r} needs ONNX Runtime's {PROVIDER}; this onnxruntime offers {available}. "
                "Install onnxruntime-gpu (matching the CUDA version) in place of onnxruntime."
            )
            raise ModelLoadError(msg)
        super().__init__(model_path, cfg.threads, providers(cfg))
        # ORT falls back to the CPU silently when CUDA fails to initialise (driver, libcudnn missing).
        active = self._session.get_providers() if self._session is not None else []
        if not active or active[0] != PROVIDER:
            self.close()
            msg = f"onnxruntime could not start {PROVIDER} on device {cfg.device_id} (active providers: {active})"
            raise ModelLoadError(msg)
        logger.info("onnxruntime-cuda: %s on device %d", model_path, cfg.device_id)
