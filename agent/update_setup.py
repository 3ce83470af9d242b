"""Wiring of model updates into the agent: where their files live, which transport, and the thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from edgevae.agent.config import Config
from edgevae.agent.model_store import ModelStore
from edgevae.agent.release import Device
from edgevae.agent.state import database_name
from edgevae.agent.update_fetch import BASE_URL, MqttFetcher, RepositoryMirror
from edgevae.agent.update_verify import Verifier
from edgevae.agent.updates import Updates


def updates_dir(config: Config) -> Path:
    """`<state>/<agent id>/`: models taken, the update state and TUF's trusted metadata of this agent."""
    return config.state.path / database_name(config.agent_id).removesuffix(".sqlite3")


def model_store(config: Config) -> ModelStore | None:
    return ModelStore(updates_dir(config)) if config.updates.enabled else None


class UpdateRunner:
    """The update thread and, for the MQTT transport, its own broker connection."""

    def __init__(
        self,
        config: Config,
        store: ModelStore,
        password: str | None,
        publish: Callable[[bytes], None],
        device: Callable[[], Device],
    ) -> None:
        cfg = config.updates
        self.mirror: RepositoryMirror | None = None
        if cfg.transport == "mqtt":
            # Twice the largest bundle: a new release's bundle arrives while the current one is still retained.
            limit = 2 * cfg.max_bundle_bytes + 8 * 1024 * 1024
            self.mirror = RepositoryMirror(config.mqtt, f"{config.agent_id}-updates", password, limit)
            verifier = Verifier(
                updates_dir(config) / "tuf", Path(cfg.trusted_root), BASE_URL + "metadata/", BASE_URL + "targets/",
                MqttFetcher(self.mirror), cfg.max_bundle_bytes,
            )  # fmt: skip
        else:
            base = cfg.url.rstrip("/")
            verifier = Verifier(
                updates_dir(config) / "tuf", Path(cfg.trusted_root), f"{base}/metadata/", f"{base}/targets/",
                None, cfg.max_bundle_bytes,
            )  # fmt: skip
        self.updates = Updates(config, store, verifier, publish, device)
        if self.mirror is not None:
            self.updates.wake = self.mirror.changed
            self.updates.settled = self.mirror.settled
            mirror = self.mirror
            self.updates.published = lambda: mirror.read("metadata/timestamp.json") is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.updates.run, args=(self._stop,), name="updates", daemon=True)

    def start(self) -> None:
        if self.mirror is not None:
            self.mirror.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.updates.wake.set()
        self._thread.join(10)
        if self.mirror is not None:
            self.mirror.stop()
