"""The model in the field for a fleet group: the bundle its pointer names in the repository's current targets.

Read from the repository folder on the training host, as the devices of the group would see it now; the
stored file (`targets/<folders>/<sha256>.<name>`, consistent snapshots) is checked against the signed
length and sha256 before anyone scores with it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from edgevae.agent.release import Release, fleet_channel
from edgevae.core.errors import ExportError
from edgevae.export.repo_publish import releases
from edgevae.export.repo_store import HASH, load_current, open_repository


@dataclass(frozen=True)
class FieldModel:
    release: Release
    archive: Path  # the bundle's .tar.gz as stored under targets/
    pointer: str


def field_model(path: Path, group: str) -> FieldModel | None:
    """The bundle `channels/fleet/<group>` names, or None when nothing was published for the group yet."""
    repo = open_repository(path)
    with repo.locked():
        # Under the lock a publish cannot be half-read: the pointer and the bundle come from one targets version.
        targets = load_current(repo).targets.signed
    pointer = fleet_channel(group)
    if pointer not in targets.targets:
        return None
    release = releases(targets)[pointer]
    target = targets.targets.get(release.bundle)
    if target is None:
        msg = f"{pointer} names release {release.release}, whose bundle {release.bundle} the targets do not list"
        raise ExportError(msg, remedy="publish a bundle for the group again with `edgevae publish`")
    digest = target.hashes[HASH]
    folder, _, name = release.bundle.rpartition("/")
    archive = repo.targets_dir / folder / f"{digest}.{name}"
    try:
        data = archive.read_bytes()
    except FileNotFoundError:
        msg = f"{archive} is missing: release {release.release} for {pointer} cannot be read"
        raise ExportError(msg, remedy="restore it from a backup; devices cannot fetch it either") from None
    if len(data) != target.length or hashlib.sha256(data).hexdigest() != digest:
        msg = f"{archive} does not match the length and sha256 the targets metadata signs"
        raise ExportError(msg, remedy="restore it from a backup; devices would refuse it too")
    return FieldModel(release, archive, pointer)
