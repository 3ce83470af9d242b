"""The repository mirrored to MQTT: each file a retained QoS 1 message, for devices without a web server.

Topics are `edgevae.agent.release.repo_topic(prefix, kind, path)`: `metadata/N.root.json` for every root
version (a device walks N+1, N+2, ...), the current `timestamp.json`, `V.snapshot.json` and
`V.targets.json`, and `targets/<folders>/<sha256>.<name>` for every target the current targets metadata
lists. timestamp.json goes last, once the broker has acknowledged everything else, because its arrival is
what tells a device to look. Files of the repository that are no longer current (older snapshot and
targets versions, superseded pointers, bundles no pointer names) have their retained message cleared.

The mirror is a transport only: devices verify every byte with TUF, so it needs no trust of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edgevae.agent.release import REPO_TOPIC, repo_topic
from edgevae.core.errors import ExportError
from edgevae.export.mqtt_client import close, connect
from edgevae.export.repo_store import Current, Repository, load_current, open_repository, root_versions

logger = logging.getLogger(__name__)

MAX_PAYLOAD = 268_435_455  # MQTT's limit for one message; paho refuses more, mosquitto's default takes it
Entry = tuple[str, str]  # (kind, path): "metadata" or "targets", and the file's path in that folder


@dataclass(frozen=True)
class Mirrored:
    files: int
    bytes: int
    cleared: int
    topic_root: str

    def summary(self) -> str:
        return f"mirrored {self.files} files ({self.bytes} bytes) under {self.topic_root}, cleared {self.cleared}"


def current_files(repo: Repository, current: Current) -> list[Entry]:
    """What a device needs now, timestamp.json last."""
    entries: list[Entry] = [("metadata", f"{v}.root.json") for v in root_versions(repo)]
    entries += [("metadata", f"{current.targets.signed.version}.targets.json")]
    entries += [("metadata", f"{current.snapshot.signed.version}.snapshot.json")]
    targets = [("targets", t.get_prefixed_paths()[0]) for t in current.targets.signed.targets.values()]
    return targets + entries + [("metadata", "timestamp.json")]


def stale_files(repo: Repository, keep: Iterable[Entry]) -> list[Entry]:
    """Files on disk a device must no longer be offered: every one not in `keep` (roots are always kept)."""
    keep = set(keep)
    found: list[Entry] = [
        ("metadata", p.name)
        for pattern in ("*.snapshot.json", "*.targets.json")
        for p in sorted(repo.metadata_dir.glob(pattern))
    ]
    found += [
        ("targets", p.relative_to(repo.targets_dir).as_posix())
        for p in sorted(repo.targets_dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    ]
    return [entry for entry in found if entry not in keep]


class _Publisher:
    """One MQTT 5 connection that publishes retained QoS 1 messages and waits for each PUBACK."""

    def __init__(self, url: str, username: str | None, password: str | None, ca_file: Path | None, timeout: float):
        self.timeout = timeout
        self.refused: dict[int, ReasonCode] = {}
        self.client = connect(url, username, password, ca_file, timeout)
        self.client.on_publish = self._on_publish

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        # A PUBACK can carry a refusal (e.g. "Not authorized" from an ACL): acknowledged is not accepted.
        if reason.is_failure:
            self.refused[mid] = reason

    def publish(self, items: list[tuple[str, bytes]]) -> None:
        infos = [(topic, self.client.publish(topic, payload, qos=1, retain=True)) for topic, payload in items]
        for topic, info in infos:
            try:
                info.wait_for_publish(self.timeout)
            except RuntimeError as exc:
                msg = f"could not publish {topic}: {exc}"
                raise ExportError(msg) from None
            if not info.is_published():
                msg = f"the broker did not acknowledge {topic} within {self.timeout:.0f} s"
                raise ExportError(msg)
            if info.mid in self.refused:
                msg = f"the broker refused {topic}: {self.refused[info.mid]}"
                raise ExportError(msg, remedy="the mirror's account needs write access to the repository topics")

    def close(self) -> None:
        close(self.client)


def mirror(
    path: Path,
    broker_url: str,
    prefix: str = "edgevae",
    username: str | None = None,
    password: str | None = None,
    ca_file: Path | None = None,
    timeout: float = 60.0,
) -> Mirrored:
    repo = open_repository(path)
    with repo.locked():
        # Under the lock only timestamp.json could change; read together, the chain it commits is whole.
        current = load_current(repo)
        wanted = current_files(repo, current)
        payloads = {entry: _read(repo, entry) for entry in wanted}
    stale = stale_files(repo, wanted)
    publisher = _Publisher(broker_url, username, password, ca_file, timeout)
    try:
        *rest, last = [(repo_topic(prefix, kind, p), payloads[(kind, p)]) for kind, p in wanted]
        publisher.publish(rest)
        publisher.publish([last])
        # An empty retained message removes the retained one: devices that subscribe later never see it.
        publisher.publish([(repo_topic(prefix, kind, p), b"") for kind, p in stale])
    finally:
        publisher.close()
    result = Mirrored(len(wanted), sum(len(b) for b in payloads.values()), len(stale), f"{prefix}/{REPO_TOPIC}")
    logger.info("%s", result.summary())
    return result


def _read(repo: Repository, entry: Entry) -> bytes:
    kind, rel = entry
    try:
        data = ((repo.metadata_dir if kind == "metadata" else repo.targets_dir) / rel).read_bytes()
    except FileNotFoundError:
        msg = f"{kind}/{rel} is listed in the current metadata but missing from {repo.path}"
        raise ExportError(
            msg, remedy="restore it from a backup; devices cannot verify the repository without it"
        ) from None
    if len(data) > MAX_PAYLOAD:
        msg = f"{kind}/{rel} is {len(data)} bytes; one MQTT message holds at most {MAX_PAYLOAD}"
        raise ExportError(msg, remedy="serve the repository over HTTP for bundles this large")
    return data
