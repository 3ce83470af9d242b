"""The repository folder on disk: where each file lives, reading the current metadata, signing and writing.

    REPO/
      repo.json      how long each role's metadata stays valid, in days (written by `init`)
      keys/          0700: the private keys, one PEM file each (edgevae.export.repo_keys)
      metadata/      N.root.json (every version), V.targets.json, V.snapshot.json, timestamp.json
      targets/       bundles/<model id>/<release>/<sha256>.<file>, channels/{fleet,device}/<sha256>.<name>

Consistent snapshots: every file except timestamp.json is written once, under a name that carries its
version or hash, and never changed, so a client that has read timestamp.json finds exactly the files it
points to even while the next publish is being written. timestamp.json is written last: it is what commits
a change. A static web server of `metadata/` and `targets/` serves what `tuf.ngclient.Updater` asks for.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from securesystemslib.signer import Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Signed, Snapshot, Targets, Timestamp
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from edgevae.core.errors import ExportError
from edgevae.export import repo_keys

SETTINGS_NAME = "repo.json"
METADATA_DIR = "metadata"
TARGETS_DIR = "targets"
ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
ONLINE_ROLES = (Targets.type, Snapshot.type, Timestamp.type)  # their keys stay on the host to sign publishes
DEFAULT_EXPIRY_DAYS: Mapping[str, int] = {Root.type: 365, Targets.type: 90, Snapshot.type: 7, Timestamp.type: 1}
HASH = "sha256"
# A role with less than this part of its lifetime left is renewed by refresh-timestamp and flagged by
# status: for the timestamp (1 day, re-signed every 6 h) that is a timer that has missed a run.
SOON_FRACTION = 0.25

T = TypeVar("T", Root, Timestamp, Snapshot, Targets)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Repository:
    path: Path
    expiry_days: Mapping[str, int]

    @property
    def metadata_dir(self) -> Path:
        return self.path / METADATA_DIR

    @property
    def targets_dir(self) -> Path:
        return self.path / TARGETS_DIR

    @property
    def keys_dir(self) -> Path:
        return self.path / repo_keys.KEYS_DIR

    def expires(self, role: str, now: datetime) -> datetime:
        return now + timedelta(days=self.expiry_days[role])

    def running_out(self, signed: Signed, now: datetime) -> bool:
        return signed.expires - now < timedelta(days=self.expiry_days[signed.type]) * SOON_FRACTION

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the repository's lock: a publish and the timestamp timer must not both write version N+1."""
        with (self.path / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def open_repository(path: Path) -> Repository:
    settings = path / SETTINGS_NAME
    try:
        data = json.loads(settings.read_text())
        expiry = {role: int(data["expiry_days"][role]) for role in ROLES}
    except FileNotFoundError:
        msg = f"{path} is not an edgevae model repository (no {SETTINGS_NAME})"
        raise ExportError(msg, remedy=f"create one with `edgevae repo init --repo {path}`") from None
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"{settings}: expected {{'expiry_days': {{role: days}}}} for roles {list(ROLES)}: {exc!r}"
        raise ExportError(msg) from None
    for folder in (METADATA_DIR, TARGETS_DIR, repo_keys.KEYS_DIR):
        if not (path / folder).is_dir():
            msg = f"{path} has no {folder}/ folder; the repository is incomplete"
            raise ExportError(msg)
    return Repository(path, expiry)


def write_settings(repo: Repository) -> None:
    write_file(
        repo.path / SETTINGS_NAME, (json.dumps({"expiry_days": dict(repo.expiry_days)}, indent=2) + "\n").encode()
    )


def write_file(path: Path, data: bytes) -> None:
    """Write, fsync, rename: after a power cut a file is either the old one or the whole new one, and the
    timestamp.json that commits a change never reaches the disk before the files it points to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def load(path: Path, cls: type[T]) -> Metadata[T]:
    try:
        md: Metadata[Any] = Metadata.from_bytes(path.read_bytes())
    except FileNotFoundError:
        msg = f"{path} is missing; the repository is incomplete"
        raise ExportError(msg) from None
    except DeserializationError as exc:
        msg = f"{path}: not {cls.type} metadata: {exc}"
        raise ExportError(msg) from None
    if not isinstance(md.signed, cls):
        msg = f"{path}: expected {cls.type} metadata, found {md.signed.type}"
        raise ExportError(msg)
    return md


def filename(signed: Signed) -> str:
    # timestamp.json is the one file fetched without knowing its version; everything else is versioned.
    return "timestamp.json" if signed.type == Timestamp.type else f"{signed.version}.{signed.type}.json"


def root_versions(repo: Repository) -> list[int]:
    versions = sorted(int(p.name.split(".")[0]) for p in repo.metadata_dir.glob("*.root.json"))
    if not versions:
        msg = f"{repo.metadata_dir} holds no N.root.json; the repository is incomplete"
        raise ExportError(msg)
    return versions


@dataclass
class Current:
    """The metadata a client reading timestamp.json now would see."""

    root: Metadata[Root]
    timestamp: Metadata[Timestamp]
    snapshot: Metadata[Snapshot]
    targets: Metadata[Targets]


def load_current(repo: Repository) -> Current:
    meta = repo.metadata_dir
    root = load(meta / f"{root_versions(repo)[-1]}.root.json", Root)
    timestamp = load(meta / "timestamp.json", Timestamp)
    snapshot = load(meta / f"{timestamp.signed.snapshot_meta.version}.snapshot.json", Snapshot)
    targets = load(meta / f"{snapshot.signed.meta['targets.json'].version}.targets.json", Targets)
    return Current(root, timestamp, snapshot, targets)


def signers_for(repo: Repository, role: str, root: Root) -> list[Signer]:
    """The signers of `role`'s keys present in keys/; ExportError if fewer than its threshold."""
    delegation = root.roles[role]
    found: list[Signer] = []
    for keyid in delegation.keyids:
        signer = repo_keys.load(repo.keys_dir, role, root.keys[keyid])
        if signer is not None:
            found.append(signer)
    if len(found) < delegation.threshold:
        ids = ", ".join(repo_keys.short(k) for k in delegation.keyids)
        msg = (
            f"signing {role} needs {delegation.threshold} of its {len(delegation.keyids)} keys ({ids}); "
            f"{repo.keys_dir} holds {len(found)} of them"
        )
        remedy = (
            f"bring {delegation.threshold} root key files back into {repo.keys_dir}"
            if role == Root.type
            else f"restore {role}-<keyid>.pem from its backup, or replace the key with `edgevae repo rotate-key {role}`"
        )
        raise ExportError(msg, remedy=remedy)
    return found


def save(repo: Repository, md: Metadata[Any], signers: list[Signer], root: Root) -> bytes:
    """Sign `md` with exactly `signers`, check the result against `root`, write it; returns the bytes written."""
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)
    try:
        root.verify_delegate(md.signed.type, md.signed_bytes, md.signatures)
    except UnsignedMetadataError as exc:
        msg = f"{md.signed.type} version {md.signed.version} does not verify against root {root.version}: {exc}"
        raise ExportError(msg) from None
    data = md.to_bytes(JSONSerializer(compact=False))
    write_file(repo.metadata_dir / filename(md.signed), data)
    return data
