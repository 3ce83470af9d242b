"""The device's verification of a release through python-tuf, one row per attack or mistake: each is
refused with the check that failed, a good release verifies, and nothing here touches a running model."""

from __future__ import annotations

import contextlib
import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import CHANNELS, make_bundle, static_server
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root

from edgevae.agent.release import Device
from edgevae.agent.update_verify import Refused, Verified, Verifier
from edgevae.export import repo_keys
from edgevae.export.repo_publish import publish
from edgevae.export.repo_store import utcnow
from edgevae.export.repository import init, rotate_key

DEVICE = Device("edge-1", "canary", CHANNELS, "onnxruntime-cpu")


def verifier(tmp_path: Path, repo: Path, url: str, max_bytes: int = 1 << 26, name: str = "device") -> Verifier:
    root = tmp_path / "installed-root.json"
    if not root.exists():
        shutil.copyfile(repo / "metadata" / "1.root.json", root)
    return Verifier(tmp_path / name, root, f"{url}/metadata/", f"{url}/targets/", None, max_bytes)


def release_v2(tmp_path: Path, repo: Path, **bundle: Any) -> None:
    publish(repo, make_bundle(tmp_path / "v2", model_version="2.0.0", **bundle), fleet=["canary"])


def current(repo: Path, role: str) -> Path:
    versions = sorted(repo.glob(f"metadata/*.{role}.json"), key=lambda p: int(p.name.split(".")[0]))
    return versions[-1]


def resign_with_a_stranger(path: Path) -> None:
    md = Metadata.from_file(str(path))
    md.signatures.clear()
    md.sign(CryptoSigner.generate_ed25519())
    md.to_file(str(path))


def test_a_good_release_verifies(tmp_path: Path, repo: Path, served: str) -> None:
    release_v2(tmp_path, repo)
    got = verifier(tmp_path, repo, served).check(DEVICE)
    assert isinstance(got, Verified)
    assert (got.release.release, got.release.model_version) == (1, "2.0.0")
    assert got.bundle_file.stat().st_size > 0


def test_nothing_new_is_no_refusal(tmp_path: Path, repo: Path, served: str) -> None:
    assert verifier(tmp_path, repo, served).check(DEVICE) is None
    release_v2(tmp_path, repo)
    running = Device(DEVICE.agent_id, DEVICE.group, CHANNELS, DEVICE.backend, release=1)
    assert verifier(tmp_path, repo, served).check(running) is None, "the same release again is a no-op"


@pytest.mark.parametrize(
    ("case", "check"),
    [
        ("tampered bundle", "tampered"),
        ("targets signed by a stranger", "signature"),
        ("expired timestamp", "expired"),
        ("older release", "older"),
        ("snapshot of another version (mix-and-match)", "tampered"),
        ("oversized bundle", "oversized"),
        ("incompatible channels", "channels"),
        ("another runtime", "runtime"),
        ("another hardware id", "hardware"),
        ("root rotation signed by too few keys", "signature"),
        ("repository unreachable", "unreachable"),
    ],
)
def test_a_bad_release_is_refused_naming_the_check(
    tmp_path: Path, repo: Path, served: str, case: str, check: str
) -> None:
    device, max_bytes, url, stack = DEVICE, 1 << 26, served, contextlib.ExitStack()
    if case == "incompatible channels":
        release_v2(tmp_path, repo, channels=("a", "b", "c"))
    elif case == "another hardware id":
        publish(repo, make_bundle(tmp_path / "v2", model_version="2.0.0"), fleet=["canary"], hardware=["jetson-orin"])
    else:
        release_v2(tmp_path, repo)
    if case == "tampered bundle":
        (bundle,) = (repo / "targets" / "bundles").rglob("*.tar.gz")
        bundle.write_bytes(bundle.read_bytes()[:-10] + b"0123456789")
    elif case == "targets signed by a stranger":
        resign_with_a_stranger(current(repo, "targets"))
    elif case == "expired timestamp":
        init(tmp_path / "stale", now=utcnow() - timedelta(days=3))
        repo = tmp_path / "stale"
        shutil.rmtree(tmp_path / "v2")
        publish(
            repo,
            make_bundle(tmp_path / "v2", model_version="2.0.0"),
            fleet=["canary"],
            now=utcnow() - timedelta(days=3),
        )
        url = stack.enter_context(static_server(repo))
    elif case == "older release":
        device = Device(DEVICE.agent_id, DEVICE.group, CHANNELS, DEVICE.backend, release=5)
    elif case == "snapshot of another version (mix-and-match)":
        snapshot = current(repo, "snapshot")
        shutil.copyfile(repo / "metadata" / "1.snapshot.json", snapshot)
    elif case == "oversized bundle":
        max_bytes = 1024
    elif case == "another runtime":
        device = Device(DEVICE.agent_id, DEVICE.group, CHANNELS, "tensorrt")
    elif case == "root rotation signed by too few keys":
        root = Metadata[Root].from_file(str(repo / "metadata" / "1.root.json"))
        root.signed.version = 2
        root.signatures.clear()
        keyid = root.signed.roles["root"].keyids[0]
        signer = repo_keys.load(repo / "keys", "root", root.signed.keys[keyid])
        assert signer is not None
        root.sign(signer)  # one of three, threshold two
        root.to_file(str(repo / "metadata" / "2.root.json"))
    elif case == "repository unreachable":
        url = "http://127.0.0.1:9"
    with stack:
        got = verifier(tmp_path, repo, url, max_bytes).check(device)
    assert isinstance(got, Refused), got
    assert got.check == check, got.reason


def test_a_root_rotation_signed_by_the_threshold_is_followed(tmp_path: Path, repo: Path, served: str) -> None:
    v = verifier(tmp_path, repo, served)
    assert v.check(DEVICE) is None
    rotate_key(repo, "root")
    rotate_key(repo, "targets")
    release_v2(tmp_path, repo)
    got = v.check(DEVICE)
    assert isinstance(got, Verified), got
    trusted = json.loads((tmp_path / "device" / "metadata" / "root.json").read_text())
    assert trusted["signed"]["version"] == 3, "the device now trusts the rotated root, across restarts"
