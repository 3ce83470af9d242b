"""`edgevae publish`: a model bundle into the signed repository as the next release, for groups and devices.

Per release the targets role signs the bundle (`bundles/<model id>/<release>/<model id>-<version>.tar.gz`)
and one pointer per audience (`channels/fleet/<group>`, `channels/device/<agent id>`); all of them carry
the same `Release.to_custom()`, and a pointer's file is that same JSON. A bundle no pointer names any more
leaves the targets metadata (its file stays on disk), so metadata and the MQTT mirror hold only what a
device may be sent. The release counter is one above the highest release listed: the newest release is
always still the pointer of every audience it was published to, since only a newer one replaces it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tuf.api.metadata import TargetFile, Targets

from edgevae.agent.backends.tensorrt_engine import PLAN_NAME
from edgevae.agent.bundle import Manifest, load_bundle
from edgevae.agent.release import Compatibility, Release, bundle_target, device_channel, fleet_channel
from edgevae.core.errors import ConfigError, ExportError
from edgevae.export.bundle_archive import pack_bytes
from edgevae.export.repo_store import HASH, Repository, load_current, open_repository, utcnow, write_file
from edgevae.export.repository import commit

# A name becomes a target path level, a URL path segment and an MQTT topic level: no '/', '+', '#', spaces.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
ONNX_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda")  # both load every precision export writes
TENSORRT_BACKEND = "tensorrt"
BUNDLES, CHANNELS = "bundles/", "channels/"


@dataclass(frozen=True)
class Published:
    release: Release
    sha256: str
    size: int
    pointers: tuple[str, ...]
    timestamp_version: int  # 0 when nothing changed
    unchanged: bool = False

    def summary(self) -> str:
        r = self.release
        if self.unchanged:
            return (
                f"nothing to publish: {', '.join(self.pointers)} already point(s) at release {r.release} "
                f"({r.model_id} {r.model_version}, sha256 {self.sha256[:12]})"
            )
        return (
            f"release {r.release}: {r.model_id} {r.model_version} as {r.bundle} ({self.size} bytes, "
            f"sha256 {self.sha256[:12]}) for {', '.join(self.pointers)}; timestamp version {self.timestamp_version}"
        )


def _check_name(kind: str, value: str, error: type[ConfigError] | type[ExportError] = ConfigError) -> str:
    if not NAME.fullmatch(value):
        msg = f"{kind} {value!r} cannot name a target: expected {NAME_RULE}"
        raise error(msg)
    return value


def backends_for(manifest: Manifest) -> tuple[str, ...]:
    """The runtimes that load the bundle: ONNX Runtime always; TensorRT only with an engine in the bundle."""
    return (*ONNX_BACKENDS, TENSORRT_BACKEND) if PLAN_NAME in manifest.files else ONNX_BACKENDS


def _archive(bundle_path: Path) -> tuple[Manifest, bytes]:
    bundle = load_bundle(bundle_path)  # verifies the manifest and every file's sha256
    try:
        data = bundle_path.read_bytes() if bundle_path.is_file() else pack_bytes(bundle)
    finally:
        bundle.close()
    return bundle.manifest, data


def _release_of(path: str, target: TargetFile) -> Release:
    try:
        return Release.from_custom(target.custom or {})
    except ValueError as exc:
        msg = f"target {path} has no edgevae release in its custom metadata: {exc}"
        raise ExportError(msg) from None


def releases(targets: Targets) -> dict[str, Release]:
    """Target path -> the release its custom metadata carries, for every target."""
    return {path: _release_of(path, t) for path, t in targets.targets.items()}


def _already(targets: Targets, pointers: Sequence[str], sha256: str, compat: Compatibility) -> Release | None:
    """The release every pointer already names, if it is this very archive with the same compatibility."""
    found = None
    for pointer in pointers:
        current = targets.targets.get(pointer)
        if current is None:
            return None
        release = _release_of(pointer, current)
        bundle = targets.targets.get(release.bundle)
        if bundle is None or bundle.hashes.get(HASH) != sha256 or release.compatibility != compat:
            return None
        found = release
    return found


def _add_target(repo: Repository, targets: Targets, path: str, data: bytes, custom: dict[str, Any]) -> None:
    digest = hashlib.sha256(data).hexdigest()
    folder, _, name = path.rpartition("/")
    stored = repo.targets_dir / folder / f"{digest}.{name}"  # consistent snapshot: the name carries the hash
    if not stored.exists():
        write_file(stored, data)
    targets.targets[path] = TargetFile(len(data), {HASH: digest}, path, {"custom": custom})


def publish(
    path: Path,
    bundle_path: Path,
    fleet: Sequence[str] = (),
    devices: Sequence[str] = (),
    hardware: Sequence[str] = (),
    now: datetime | None = None,
) -> Published:
    if not fleet and not devices:
        msg = "a release needs an audience: give at least one --fleet GROUP or --device ID"
        raise ConfigError(msg)
    pointers = [fleet_channel(_check_name("fleet group", g)) for g in fleet]
    pointers += [device_channel(_check_name("device id", d)) for d in devices]
    hardware_ids = tuple(_check_name("hardware id", h) for h in hardware)
    repo = open_repository(path)
    manifest, data = _archive(bundle_path)
    _check_name("the bundle's model_id", manifest.model_id, ExportError)
    _check_name("the bundle's model_version", manifest.model_version, ExportError)
    compat = Compatibility(
        manifest.channels, manifest.window, manifest.stride, manifest.precision, backends_for(manifest), hardware_ids
    )
    sha256 = hashlib.sha256(data).hexdigest()
    with repo.locked():
        current = load_current(repo)
        targets = copy.deepcopy(current.targets.signed)
        same = _already(targets, pointers, sha256, compat)
        if same is not None:
            return Published(same, sha256, len(data), tuple(pointers), 0, unchanged=True)
        number = max((r.release for r in releases(targets).values()), default=0) + 1
        filename = f"{manifest.model_id}-{manifest.model_version}.tar.gz"
        release = Release(
            number,
            bundle_target(manifest.model_id, number, filename),
            manifest.model_id,
            manifest.model_version,
            compat,
            fleet=tuple(dict.fromkeys(fleet)),
            devices=tuple(dict.fromkeys(devices)),
        )
        # Through JSON once: tuples become lists, so the metadata signed is exactly what a device reads back.
        custom: dict[str, Any] = json.loads(json.dumps(release.to_custom()))
        _add_target(repo, targets, release.bundle, data, custom)
        pointer_file = (json.dumps(custom, sort_keys=True, separators=(",", ":")) + "\n").encode()
        for pointer in pointers:
            _add_target(repo, targets, pointer, pointer_file, custom)
        named = {r.bundle for p, r in releases(targets).items() if p.startswith(CHANNELS)}
        for stale in [p for p in targets.targets if p.startswith(BUNDLES) and p not in named]:
            del targets.targets[stale]
        timestamp = commit(repo, current, now or utcnow(), targets=targets)
    return Published(release, sha256, len(data), tuple(dict.fromkeys(pointers)), timestamp.version)
