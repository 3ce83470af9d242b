"""Is there a release for this device, and may it take it? Every check through python-tuf's Updater.

One `check` refreshes the repository metadata (root rotations, timestamp, snapshot, targets: signatures
against thresholds, versions against rollback, expiry against freeze, hashes and lengths against
mix-and-match and endless data), reads the device's and its fleet group's release pointers, judges the
newest against the device (`edgevae.agent.release.incompatibility`), and downloads the bundle, which TUF
checks against its signed length and hashes. The outcome is a verified bundle file or a refusal that
names the check that failed. Nothing here touches the running model.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from tuf.api import exceptions as tuf_errors
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from edgevae.agent.release import Device, Release, device_channel, fleet_channel, incompatibility

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verified:
    release: Release
    bundle_file: Path  # the downloaded .tar.gz, its length and hashes checked by TUF


@dataclass(frozen=True)
class Refused:
    check: str  # which check failed: signature, rollback, expired, tampered, unreachable, older, channels, ...
    reason: str
    release: int | None = None  # the release refused, when it got that far


def describe_tuf_error(exc: Exception) -> Refused:
    """The check a python-tuf error stands for, in the words an operator searches for."""
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return Refused("expired", f"repository metadata expired (a frozen or stale repository): {exc}")
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return Refused("signature", f"metadata not signed by enough trusted keys: {exc}")
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return Refused("rollback", f"metadata older than what this device trusts: {exc}")
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return Refused("tampered", f"a file does not match its signed length or hashes: {exc}")
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return Refused("oversized", f"a file is longer than its signed length allows: {exc}")
    if isinstance(exc, tuf_errors.DownloadError):
        return Refused("unreachable", f"the repository cannot be read: {exc}")
    if isinstance(exc, tuf_errors.RepositoryError):
        return Refused("metadata", f"repository metadata refused: {exc}")
    return Refused("metadata", f"{type(exc).__name__}: {exc}")


class Verifier:
    """TUF client state lives in `directory` (trusted metadata, downloads); `trusted_root` seeds it once."""

    def __init__(
        self,
        directory: Path,
        trusted_root: Path,
        metadata_url: str,
        targets_url: str,
        fetcher: FetcherInterface | None,
        max_bundle_bytes: int,
    ) -> None:
        self.metadata_dir = directory / "metadata"
        self.download_dir = directory / "downloads"
        self.metadata_url = metadata_url
        self.targets_url = targets_url
        self.fetcher = fetcher
        self.max_bundle_bytes = max_bundle_bytes
        self.metadata_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.download_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        root = self.metadata_dir / "root.json"
        if not root.exists():
            # The root shipped with the install is trusted on first use only; TUF updates root.json itself
            # after that, so a rotation survives restarts and an old install root cannot roll it back.
            shutil.copyfile(trusted_root, root)

    def _updater(self) -> Updater:
        config = UpdaterConfig(targets_max_length=5_000_000)
        return Updater(
            str(self.metadata_dir),
            self.metadata_url,
            str(self.download_dir),
            self.targets_url,
            fetcher=self.fetcher,
            config=config,
            bootstrap=None,
        )

    def check(self, device: Device) -> Verified | Refused | None:
        """None when no release newer than the device's is addressed to it."""
        try:
            updater = self._updater()
            updater.refresh()
            pointers = [
                updater.get_targetinfo(path) for path in (device_channel(device.agent_id), fleet_channel(device.group))
            ]
        except Exception as exc:  # python-tuf raises its own errors, and ValueError/OSError on bad input
            return describe_tuf_error(exc)
        releases: list[Release] = []
        for info in pointers:
            if info is None:
                continue
            try:
                releases.append(Release.from_custom(info.custom))
            except ValueError as exc:
                return Refused("release", f"{info.path}: {exc}")
        if not releases:
            return None
        release = max(releases, key=lambda r: r.release)
        if release.release == device.release:
            return None  # the release it runs: a duplicate or replayed push is a no-op
        if release.release < device.release:
            msg = f"the newest release offered, {release.release}, is older than the running release {device.release}"
            return Refused("older", msg, release.release)
        reason = incompatibility(release, device)
        if reason is not None:
            check = reason.split(":", 1)[0]
            return Refused(check, reason, release.release)
        try:
            bundle = updater.get_targetinfo(release.bundle)
        except Exception as exc:
            refused = describe_tuf_error(exc)
            return Refused(refused.check, refused.reason, release.release)
        if bundle is None:
            return Refused(
                "bundle",
                f"release {release.release} points to {release.bundle}, which the repository does not list",
                release.release,
            )
        try:
            described = Release.from_custom(bundle.custom)
        except ValueError as exc:
            return Refused("bundle", f"{release.bundle}: {exc}", release.release)
        if described != release:
            msg = (
                "the pointer and the bundle's own metadata describe different releases "
                f"({release.release} vs {described.release})"
            )
            return Refused("mix-and-match", msg, release.release)
        if bundle.length > self.max_bundle_bytes:
            msg = f"bundle of {bundle.length} bytes, over updates.max_bundle_bytes ({self.max_bundle_bytes})"
            return Refused("oversized", msg, release.release)
        target = self.download_dir / f"release-{release.release}.tar.gz"
        try:
            path = updater.download_target(bundle, str(target))
        except Exception as exc:
            refused = describe_tuf_error(exc)
            return Refused(refused.check, refused.reason, release.release)
        return Verified(release, Path(path))
