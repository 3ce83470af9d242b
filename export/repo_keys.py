"""The private keys of the signed model repository: one PEM file per key under `REPO/keys/`, owner-only.

A key file is named after its role and key id (`targets-<keyid>.pem`), so that the public half in root
metadata finds its private half without a key index to keep in step. The folder is 0700 and each file
0600 from the moment it exists (created with os.open's mode, never chmod-ed afterwards). Root keys are
moved offline after `init` and brought back, a threshold of them, only to sign a new root.

Nothing here prints or logs key material: only key ids.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Key, SSlibKey

from edgevae.core.errors import ExportError

logger = logging.getLogger(__name__)

KEYS_DIR = "keys"
SHORT_ID = 8  # hex digits of a key id shown to people


def short(keyid: str) -> str:
    return keyid[:SHORT_ID]


def make_keys_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=False, exist_ok=False)
    # mkdir's mode is filtered by the umask, which can only narrow it; chmod makes it exactly 0700.
    path.chmod(0o700)


def key_path(keys_dir: Path, role: str, keyid: str) -> Path:
    return keys_dir / f"{role}-{keyid}.pem"


def generate(keys_dir: Path, role: str) -> CryptoSigner:
    """A new Ed25519 key for `role`, its private half written to `keys_dir` (0600, never world-readable)."""
    signer = CryptoSigner.generate_ed25519()
    path = key_path(keys_dir, role, signer.public_key.keyid)
    # O_EXCL: never overwrite a key file; the mode applies at creation, so no moment exists at 0644.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, signer.private_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)
    logger.info("new %s key %s", role, short(signer.public_key.keyid))
    return signer


def load(keys_dir: Path, role: str, key: Key) -> CryptoSigner | None:
    """The signer of `key` if its private half is in `keys_dir`, else None (an offline root key)."""
    path = key_path(keys_dir, role, key.keyid)
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("key file %s is readable by others (mode %o); run chmod 600 on it", path, mode)
    if not isinstance(key, SSlibKey):
        msg = f"{role} key {short(key.keyid)} is a {type(key).__name__}; this repository signs with file keys only"
        raise ExportError(msg)
    try:
        return CryptoSigner(load_pem_private_key(pem, password=None), key)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # A key file that does not hold the private half of the key root names: never sign with it.
        msg = f"{path} is not the private key of {role} key {short(key.keyid)}: {type(exc).__name__}"
        raise ExportError(msg, remedy="restore the key file from its backup") from None


def remove(keys_dir: Path, role: str, keyid: str) -> None:
    """Delete a revoked key's file: a key root no longer lists must not be found and used again."""
    key_path(keys_dir, role, keyid).unlink(missing_ok=True)
