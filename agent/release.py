"""What a signed release says beyond TUF's hashes and lengths, and where a device finds the release meant for it.

The training host's TUF repository holds, per release, the bundle (`bundles/<model id>/<release>/<file>`)
and pointers to it: `channels/device/<agent id>` for one device and `channels/fleet/<group>` for a fleet
group. Both carry the same `edgevae` entry in their signed `custom` metadata (the targets role signs it,
so a device trusts it as much as the bundle's hash):

    {"edgevae": {"schema": 1, "release": 17, "bundle": "bundles/pump-vae/17/pump-vae-3.1.0.tar.gz",
                 "model_id": "pump-vae", "model_version": "3.1.0",
                 "compatibility": {"channels": ["flow", ...], "window": 32, "stride": 1,
                                   "precision": "int8", "backends": ["onnxruntime-cpu", ...],
                                   "hardware": []},
                 "fleet": ["canary"], "devices": []}}

`release` is a counter that only grows across the repository: a device takes a release only if it is
higher than the one it runs (TUF's own version checks stop replayed metadata; this stops an older bundle
published again). A device asks for its device pointer and its group pointer and takes the higher release.

Over MQTT the repository is mirrored as retained messages: `<prefix>/repo/metadata/<file>` and
`<prefix>/repo/targets/<target path with hash prefix>`; over HTTP(S) as `<base>/metadata/` and `<base>/targets/`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = 1
CUSTOM_KEY = "edgevae"
REPO_TOPIC = "repo"  # <prefix>/repo/metadata/..., <prefix>/repo/targets/...


def device_channel(agent_id: str) -> str:
    return f"channels/device/{agent_id}"


def fleet_channel(group: str) -> str:
    return f"channels/fleet/{group}"


def bundle_target(model_id: str, release: int, filename: str) -> str:
    return f"bundles/{model_id}/{release}/{filename}"


def repo_topic(prefix: str, kind: str, path: str) -> str:
    """The retained topic that mirrors a repository file: kind is "metadata" or "targets".

    >>> repo_topic("edgevae", "metadata", "2.root.json")
    'edgevae/repo/metadata/2.root.json'
    """
    return f"{prefix}/{REPO_TOPIC}/{kind}/{path}"


@dataclass(frozen=True)
class Compatibility:
    """What the bundle needs of a device; checked before download, and against the bundle's own manifest."""

    channels: tuple[str, ...]
    window: int
    stride: int
    precision: str
    backends: tuple[str, ...]  # runtimes that load it; a device whose backend is not listed refuses it
    hardware: tuple[str, ...] = ()  # hardware ids it is for (updates.hardware_id); empty: any

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Compatibility:
        return cls(
            channels=tuple(str(c) for c in data["channels"]),
            window=int(data["window"]),
            stride=int(data["stride"]),
            precision=str(data["precision"]),
            backends=tuple(str(b) for b in data["backends"]),
            hardware=tuple(str(h) for h in data.get("hardware", ())),
        )


@dataclass(frozen=True)
class Release:
    release: int
    bundle: str  # the bundle's target path
    model_id: str
    model_version: str
    compatibility: Compatibility
    fleet: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    schema: int = SCHEMA

    def to_custom(self) -> dict[str, Any]:
        data = asdict(self)
        return {CUSTOM_KEY: data}

    @classmethod
    def from_custom(cls, custom: dict[str, Any]) -> Release:
        """Raises ValueError on custom metadata that is not an edgevae release of a schema this code reads."""
        try:
            data = custom[CUSTOM_KEY]
            if int(data["schema"]) != SCHEMA:
                msg = f"release schema {data['schema']}, this agent reads {SCHEMA}"
                raise ValueError(msg)
            release = cls(
                release=int(data["release"]),
                bundle=str(data["bundle"]),
                model_id=str(data["model_id"]),
                model_version=str(data["model_version"]),
                compatibility=Compatibility.from_dict(data["compatibility"]),
                fleet=tuple(str(g) for g in data.get("fleet", ())),
                devices=tuple(str(d) for d in data.get("devices", ())),
            )
        except (KeyError, TypeError) as exc:
            msg = f"not an edgevae release: {exc!r}"
            raise ValueError(msg) from exc
        if release.release < 1:
            msg = f"release counter must be >= 1, got {release.release}"
            raise ValueError(msg)
        return release


@dataclass(frozen=True)
class Device:
    """What a device knows about itself when it judges a release."""

    agent_id: str
    group: str
    channels: tuple[str, ...]  # of the model it runs: what its sensors send
    backend: str
    hardware_id: str = ""
    release: int = 0  # the release it runs; 0 for the bundle it was installed with
    extra: dict[str, Any] = field(default_factory=dict)


def incompatibility(release: Release, device: Device) -> str | None:
    """Why `device` must not take `release`, or None. Each reason names the check that failed.

    >>> c = Compatibility(("a", "b"), 8, 1, "int8", ("onnxruntime-cpu",))
    >>> d = Device("edge-1", "fleet", ("a", "b"), "onnxruntime-cpu", release=3)
    >>> incompatibility(Release(4, "bundles/m/4/m.tar.gz", "m", "1", c, fleet=("fleet",)), d) is None
    True
    >>> incompatibility(Release(3, "bundles/m/3/m.tar.gz", "m", "1", c, fleet=("fleet",)), d)
    'older: release 3 is not newer than the running release 3'
    """
    if release.release <= device.release:
        return f"older: release {release.release} is not newer than the running release {device.release}"
    if device.agent_id not in release.devices and device.group not in release.fleet:
        audience = f"fleet {list(release.fleet)} and devices {list(release.devices)}"
        return f"not addressed: release {release.release} is for {audience}"
    compat = release.compatibility
    if set(compat.channels) != set(device.channels):
        sent = sorted(device.channels)
        return f"channels: the release reads {sorted(compat.channels)}, this device's sensors send {sent}"
    if device.backend not in compat.backends:
        return f"runtime: the release runs on {list(compat.backends)}, this device uses {device.backend}"
    if compat.hardware and device.hardware_id not in compat.hardware:
        return f"hardware: the release is for {list(compat.hardware)}, this device is {device.hardware_id or 'unnamed'}"
    return None
