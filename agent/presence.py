"""What the agent shows and answers on the broker besides alerts: the retained device states, Home Assistant
discovery, and control requests. Runs on the scoring thread, between scoring passes."""

from __future__ import annotations

import logging
import queue
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from edgevae.agent.bundle import Manifest
from edgevae.agent.config import Config
from edgevae.agent.control import Controller
from edgevae.agent.device_state import Acknowledgement, DeviceStates
from edgevae.agent.discovery import discovery_messages
from edgevae.agent.mqtt import MqttLink
from edgevae.agent.state import StateStore
from edgevae.agent.topics import Topics

logger = logging.getLogger(__name__)

# Requests answered per pass: a flood of them must not hold up scoring.
MAX_REQUESTS_PER_PASS = 20


class Presence:
    def __init__(
        self,
        config: Config,
        link: MqttLink,
        store: StateStore,
        states: DeviceStates,
        acknowledge: Callable[[str, Acknowledgement], None],
        stats: Callable[[], dict[str, Any]],
        selftest: Callable[[], bool],
    ) -> None:
        self.link = link
        self.topics: Topics = link.topics
        self.store = store
        self.states = states
        self.discovery = config.homeassistant
        self.discovered: set[str] = set()
        self.controller = Controller(self.topics, states, acknowledge, self.mute, stats, selftest)
        for device, until in store.mutes(time.time()).items():
            states.mute(device, until)
            logger.info("device %s stays muted until %s", device, time.strftime("%FT%TZ", time.gmtime(until)))

    def mute(self, device: str, until: float) -> None:
        """Mute (or with 0 unmute) a device, durably: a mute outlives a restart."""
        self.states.mute(device, until)
        try:
            self.store.save_mute(device, until)
        except sqlite3.Error as exc:
            logger.error("state database write failed (%s): the mute of %s lasts until a restart only", exc, device)

    def pump(self, manifest: Manifest) -> None:
        self._answer()
        for topic, payload in self.states.due():
            device = topic.rsplit("/", 2)[-2]
            if self.discovery.discovery and device not in self.discovered:
                self._announce(device, manifest)
            self.link.publish(topic, payload, kind="state", qos=1, retain=True)

    def rediscover(self) -> None:
        """Announce every device again (a model swap changes what their Home Assistant device says)."""
        self.discovered.clear()
        self.states.touch_all()

    def _announce(self, device: str, manifest: Manifest) -> None:
        for topic, payload in discovery_messages(self.topics, device, manifest, self.discovery.discovery_prefix):
            self.link.publish(topic, payload, kind="discovery", qos=1, retain=True)
        self.discovered.add(device)

    def _answer(self) -> None:
        for _ in range(MAX_REQUESTS_PER_PASS):
            try:
                request = self.link.requests.get_nowait()
            except queue.Empty:
                return
            response = self.controller.handle(request)
            self.link.publish(response.topic, response.payload, kind="response", correlation=response.correlation)

    def forget(self, device: str) -> None:
        """A device evicted for silence: its state is cleared, since nothing watches it any more."""
        if device in self.states.published_devices:
            self.link.publish(self.topics.state(device), b"", kind="state", qos=1, retain=True)
            self.states.published_devices.discard(device)
        self.states.forget(device)
