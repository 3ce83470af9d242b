"""The signed model repository: create it, re-sign its timestamp, rotate its keys (python-tuf metadata).

Devices verify every model update against this repository with `tuf.ngclient.Updater`; what a release
carries beyond TUF's hashes is `edgevae.agent.release`. Publishing is `edgevae.export.repo_publish`, the
status table `edgevae.export.repo_status`, the folder layout `edgevae.export.repo_store`.

Roles and keys: root (k of n keys, kept offline: needed only to sign a new root when a key is rotated),
targets, snapshot and timestamp (one key each, online: a publish signs with them). Every change re-signs
the roles it touches and those above it, targets -> snapshot -> timestamp, each at version + 1.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp

from edgevae.core.errors import ConfigError, ExportError
from edgevae.export import repo_keys
from edgevae.export.repo_store import (
    DEFAULT_EXPIRY_DAYS,
    HASH,
    ONLINE_ROLES,
    ROLES,
    Current,
    Repository,
    load_current,
    open_repository,
    save,
    signers_for,
    utcnow,
    write_settings,
)

logger = logging.getLogger(__name__)

__all__ = ["Repository", "commit", "init", "open_repository", "refresh_timestamp", "rotate_key"]


def commit(
    repo: Repository, current: Current, now: datetime, *, targets: Targets | None = None, snapshot: bool = False
) -> Timestamp:
    """Write the next versions: `targets` (if given) and then snapshot (if targets changed or `snapshot`),
    then always timestamp. Returns the new timestamp."""
    root = current.root.signed
    targets_version = current.targets.signed.version
    if targets is not None:
        targets.version = targets_version + 1
        targets.expires = repo.expires(Targets.type, now)
        save(repo, Metadata(targets), signers_for(repo, Targets.type, root), root)
        targets_version = targets.version
        snapshot = True
    new_snapshot = current.snapshot.signed
    if snapshot:
        new_snapshot = copy.deepcopy(new_snapshot)
        new_snapshot.version += 1
        new_snapshot.expires = repo.expires(Snapshot.type, now)
        new_snapshot.meta["targets.json"] = MetaFile(targets_version)
        snapshot_bytes = save(repo, Metadata(new_snapshot), signers_for(repo, Snapshot.type, root), root)
    else:
        snapshot_bytes = (repo.metadata_dir / f"{new_snapshot.version}.snapshot.json").read_bytes()
    timestamp = copy.deepcopy(current.timestamp.signed)
    timestamp.version += 1
    timestamp.expires = repo.expires(Timestamp.type, now)
    # Length and hash as well as the version: a client then downloads no more than the real snapshot's bytes.
    timestamp.snapshot_meta = MetaFile.from_data(new_snapshot.version, snapshot_bytes, [HASH])
    save(repo, Metadata(timestamp), signers_for(repo, Timestamp.type, root), root)
    return timestamp


def _check_new(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        msg = f"{path} already exists and is not an empty folder; init never overwrites a repository"
        remedy = (
            "change an existing repository with `edgevae publish` and `edgevae repo rotate-key`, or choose a new folder"
        )
        raise ExportError(msg, remedy=remedy)


def init(
    path: Path,
    root_keys: int = 3,
    root_threshold: int = 2,
    expiry_days: Mapping[str, int] | None = None,
    now: datetime | None = None,
) -> Repository:
    """A new repository at `path` (absent or an empty folder) with fresh keys and version 1 of every role."""
    if not 1 <= root_threshold <= root_keys:
        msg = f"--root-threshold must be between 1 and --root-keys ({root_keys}), got {root_threshold}"
        raise ConfigError(msg)
    days = {**DEFAULT_EXPIRY_DAYS, **(expiry_days or {})}
    if set(days) != set(ROLES) or any(d < 1 for d in days.values()):
        msg = f"expiry_days must give a whole number of days >= 1 for each of {list(ROLES)}, got {days}"
        raise ConfigError(msg)
    _check_new(path)
    existed = path.exists()
    repo = Repository(path, days)
    try:
        _create(repo, root_keys, root_threshold, now or utcnow())
    except BaseException:
        # Half a repository is worse than none: a later init would refuse it and nothing could sign it.
        if existed:
            for child in path.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return repo


def _create(repo: Repository, root_keys: int, root_threshold: int, now: datetime) -> None:
    repo.path.mkdir(parents=True, exist_ok=True)
    repo_keys.make_keys_dir(repo.keys_dir)
    repo.metadata_dir.mkdir()
    repo.targets_dir.mkdir()
    write_settings(repo)
    root = Root(expires=repo.expires(Root.type, now), consistent_snapshot=True)
    root_signers = [repo_keys.generate(repo.keys_dir, Root.type) for _ in range(root_keys)]
    for signer in root_signers:
        root.add_key(signer.public_key, Root.type)
    root.roles[Root.type].threshold = root_threshold
    for role in ONLINE_ROLES:
        root.add_key(repo_keys.generate(repo.keys_dir, role).public_key, role)
    # Signed by all n root keys, not just k: any k of them then verify version 1 as devices first see it.
    save(repo, Metadata(root), list(root_signers), root)
    targets = Targets(expires=repo.expires(Targets.type, now))
    save(repo, Metadata(targets), signers_for(repo, Targets.type, root), root)
    snapshot = Snapshot(expires=repo.expires(Snapshot.type, now), meta={"targets.json": MetaFile(targets.version)})
    snapshot_bytes = save(repo, Metadata(snapshot), signers_for(repo, Snapshot.type, root), root)
    timestamp = Timestamp(
        expires=repo.expires(Timestamp.type, now), snapshot_meta=MetaFile.from_data(1, snapshot_bytes, [HASH])
    )
    save(repo, Metadata(timestamp), signers_for(repo, Timestamp.type, root), root)
    ids = ", ".join(repo_keys.short(k) for k in root.roles[Root.type].keyids)
    logger.info("repository %s: root keys %s, threshold %d", repo.path, ids, root_threshold)


def root_key_files(repo: Repository) -> list[Path]:
    return sorted(repo.keys_dir.glob(f"{Root.type}-*.pem"))


def refresh_timestamp(path: Path, now: datetime | None = None) -> Timestamp:
    """Re-sign timestamp with a new expiry, so that devices can tell a live repository from a frozen one.

    Targets and snapshot are renewed too (a new version, the same contents) once less than a quarter of
    their lifetime is left: a repository nobody publishes to must not expire under its devices.
    """
    repo = open_repository(path)
    now = now or utcnow()
    with repo.locked():
        current = load_current(repo)
        targets = current.targets.signed
        renew = copy.deepcopy(targets) if repo.running_out(targets, now) else None
        return commit(repo, current, now, targets=renew, snapshot=repo.running_out(current.snapshot.signed, now))


@dataclass(frozen=True)
class Rotation:
    role: str
    old_keyids: tuple[str, ...]
    new_keyids: tuple[str, ...]
    root_version: int
    new_key_files: tuple[Path, ...]


def rotate_key(path: Path, role: str, now: datetime | None = None) -> Rotation:
    """Replace `role`'s keys with new ones in a new root version signed by the root threshold.

    For root itself the new root is signed by the old threshold and by the new keys: a device trusts
    version N+1 only when both the keys of N and the keys N+1 names have signed it.
    """
    if role not in ROLES:
        msg = f"role must be one of {list(ROLES)}, got {role!r}"
        raise ConfigError(msg)
    repo = open_repository(path)
    now = now or utcnow()
    with repo.locked():
        current = load_current(repo)
        old_root = current.root.signed
        # Checked before any key is made: a refused rotation leaves keys/ as it was.
        old_root_signers = signers_for(repo, Root.type, old_root)
        new_root = copy.deepcopy(old_root)
        new_root.version += 1
        new_root.expires = repo.expires(Root.type, now)
        old_keyids = tuple(old_root.roles[role].keyids)
        count = len(old_keyids) if role == Root.type else 1
        new_signers = [repo_keys.generate(repo.keys_dir, role) for _ in range(count)]
        for keyid in old_keyids:
            new_root.revoke_key(keyid, role)
        for signer in new_signers:
            new_root.add_key(signer.public_key, role)
        root_signers: list[Signer] = list(old_root_signers)
        if role == Root.type:
            root_signers += new_signers
        _save_root(repo, new_root, old_root, root_signers)
        if role != Root.type:
            rotated = Current(Metadata(new_root), current.timestamp, current.snapshot, current.targets)
            # Re-signed at a new version with the new key; a version once published never changes.
            changed_targets = copy.deepcopy(current.targets.signed) if role == Targets.type else None
            commit(repo, rotated, now, targets=changed_targets, snapshot=role == Snapshot.type)
        for keyid in old_keyids:
            repo_keys.remove(repo.keys_dir, role, keyid)
    new_ids = tuple(s.public_key.keyid for s in new_signers)
    files = tuple(repo_keys.key_path(repo.keys_dir, role, k) for k in new_ids)
    return Rotation(role, old_keyids, new_ids, new_root.version, files)


def _save_root(repo: Repository, new_root: Root, old_root: Root, signers: list[Signer]) -> None:
    md = Metadata(new_root)
    for signer in signers:
        md.sign(signer, append=True)
    result = new_root.get_root_verification_result(old_root, md.signed_bytes, md.signatures)
    if not result.verified:
        msg = f"root {new_root.version} is not signed by the thresholds of both root {old_root.version} and itself"
        raise ExportError(msg)
    save(repo, md, signers, new_root)
