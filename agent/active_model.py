"""The model an agent starts with, loaded, verified and warmed up: the release it took last, else the
bundle in its config."""

from __future__ import annotations

import logging

import numpy as np

from edgevae.agent.backends import Backend, create_backend
from edgevae.agent.bundle import Bundle, Manifest, load_bundle
from edgevae.agent.config import Config
from edgevae.agent.model_store import ModelStore
from edgevae.core.errors import BackendError, BundleError, ModelLoadError

logger = logging.getLogger(__name__)


def warm_up(backend: Backend, manifest: Manifest) -> None:
    """Run one inference at load, before READY=1.

    The first run of a session pays one-time costs (memory arenas, kernel selection; seconds for CUDA and
    TensorRT). Paying them here keeps them inside systemd's start timeout rather than the watchdog's
    interval, keeps the first real window's latency normal, and proves the model accepts this bundle's
    window and channels before the agent says it is ready.
    """
    channels = len(manifest.channels)
    try:
        out = backend.run(np.zeros((1, manifest.window, channels), dtype=np.float32))
    except BackendError as exc:
        msg = f"the model does not take the manifest's windows of {manifest.window} x {channels} channels: {exc}"
        raise ModelLoadError(msg) from exc
    if out.score.shape != (1,) or out.channel_error.shape != (1, channels):
        msg = (
            f"model outputs score {out.score.shape} and channel_error {out.channel_error.shape} for one window; "
            f"the manifest promises (1,) and (1, {channels})"
        )
        raise ModelLoadError(msg)


def open_model(config: Config, path: str) -> tuple[Bundle, Backend]:
    """Verify the bundle at `path`, load its model into the configured backend and warm it up."""
    bundle = load_bundle(path)
    try:
        backend = create_backend(bundle.model_path, config.model.backend_key, config.model.backend)
        warm_up(backend, bundle.manifest)
    except BaseException:
        bundle.close()
        raise
    return bundle, backend


def load_active(config: Config, models: ModelStore | None) -> tuple[Bundle, Backend]:
    """The release taken last (model updates on), else the configured bundle. An updated model that no
    longer loads is rolled back rather than keeping the agent down."""
    path = config.model.bundle
    if models is not None:
        note = models.recover()
        if note:
            logger.warning("update: %s", note)
        active = models.state.active
        if active is not None:
            try:
                return open_model(config, active.path)
            except (BundleError, ModelLoadError) as exc:
                models.roll_back(f"release {active.release} does not load: {exc}")
                logger.error("update: release %d does not load (%s); rolled back", active.release, exc)
                previous = models.state.active
                path = previous.path if previous is not None else path
    return open_model(config, path)
