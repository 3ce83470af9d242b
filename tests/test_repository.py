"""The signed model repository, read back the way devices read it: python-tuf's own Updater over a real HTTP
server on loopback, and retained messages from a real mosquitto."""

from __future__ import annotations

import dataclasses
import doctest
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import Collector, make_bundle
from tuf.api.exceptions import ExpiredMetadataError
from tuf.api.metadata import Metadata, Root, Timestamp
from tuf.ngclient import Updater

from edgevae.agent.backends import REGISTRY
from edgevae.agent.backends.tensorrt_engine import PLAN_NAME
from edgevae.agent.bundle import describe_files, load_bundle, write_manifest
from edgevae.agent.release import Release, device_channel, fleet_channel, repo_topic
from edgevae.cli.main import main
from edgevae.core.errors import ConfigError, ExportError
from edgevae.demo.broker import Broker
from edgevae.export import repo_status
from edgevae.export.repo_mirror import mirror
from edgevae.export.repo_publish import ONNX_BACKENDS, TENSORRT_BACKEND, backends_for, publish
from edgevae.export.repo_status import status
from edgevae.export.repo_store import load_current, open_repository, utcnow
from edgevae.export.repository import init, refresh_timestamp, rotate_key

# --- helpers ---------------------------------------------------------------------------------------------


def _updater(base: str, device_dir: Path, bootstrap: bytes | None) -> Updater:
    """A device's Updater: it trusts `bootstrap` (or the root it saved in device_dir before)."""
    (device_dir / "metadata").mkdir(parents=True, exist_ok=True)
    (device_dir / "targets").mkdir(exist_ok=True)
    return Updater(
        metadata_dir=str(device_dir / "metadata"),
        metadata_base_url=f"{base}/metadata/",
        target_dir=str(device_dir / "targets"),
        target_base_url=f"{base}/targets/",
        bootstrap=bootstrap,
    )


def _root_1(repo: Path) -> bytes:
    return (repo / "metadata" / "1.root.json").read_bytes()


def _trusted_root_version(device_dir: Path) -> int:
    root: Metadata[Root] = Metadata.from_bytes((device_dir / "metadata" / "root.json").read_bytes())
    return root.signed.version


def _timestamp(repo: Path) -> Timestamp:
    md: Metadata[Timestamp] = Metadata.from_bytes((repo / "metadata" / "timestamp.json").read_bytes())
    return md.signed


def _other_bundle(root: Path, threshold: float) -> Path:
    return make_bundle(root, threshold=threshold)


# --- init ------------------------------------------------------------------------------------------------


def test_init_writes_owner_only_keys_and_the_root_threshold_asked_for(tmp_path: Path) -> None:
    # umask 0: modes must come from how the files are created, not from a kind umask.
    old = os.umask(0)
    try:
        repo = init(tmp_path / "repo", root_keys=4, root_threshold=3)
    finally:
        os.umask(old)
    assert stat.S_IMODE(repo.keys_dir.stat().st_mode) == 0o700
    key_files = sorted(repo.keys_dir.iterdir())
    assert [p.name.split("-")[0] for p in key_files].count("root") == 4
    assert {p.name.split("-")[0] for p in key_files} == {"root", "targets", "snapshot", "timestamp"}
    assert len(key_files) == 7
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in key_files)
    root_md: Metadata[Root] = Metadata.from_bytes((repo.metadata_dir / "1.root.json").read_bytes())
    root = root_md.signed
    assert root.consistent_snapshot is True
    assert root.roles["root"].threshold == 3
    assert len(root.roles["root"].keyids) == 4
    assert len(root_md.signatures) == 4  # every root key signed version 1
    assert {r: root.roles[r].threshold for r in ("targets", "snapshot", "timestamp")} == dict.fromkeys(
        ("targets", "snapshot", "timestamp"), 1
    )


def test_init_refuses_an_existing_repository_and_an_impossible_threshold(repo: Path, tmp_path: Path) -> None:
    before = sorted(p.name for p in (repo / "keys").iterdir())
    with pytest.raises(ExportError, match="already exists") as info:
        init(repo)
    assert info.value.remedy
    assert sorted(p.name for p in (repo / "keys").iterdir()) == before
    with pytest.raises(ConfigError, match="between 1 and --root-keys"):
        init(tmp_path / "other", root_keys=2, root_threshold=3)
    assert not (tmp_path / "other").exists()


# --- publish, read back by the TUF client ---------------------------------------------------------------


def test_a_published_release_reaches_a_tuf_client_over_http(
    repo: Path, served: str, bundle: Path, tmp_path: Path
) -> None:
    published = publish(repo, bundle, fleet=["canary"], hardware=["jetson-orin"])
    assert published.release.release == 1

    updater = _updater(served, tmp_path / "device", _root_1(repo))
    updater.refresh()
    pointer = updater.get_targetinfo(fleet_channel("canary"))
    assert pointer is not None
    release = Release.from_custom(pointer.custom)
    manifest = load_bundle(bundle).manifest
    assert release.release == 1
    assert release.compatibility.channels == manifest.channels
    assert (release.compatibility.window, release.compatibility.stride) == (manifest.window, manifest.stride)
    assert release.compatibility.backends == ONNX_BACKENDS
    assert release.compatibility.hardware == ("jetson-orin",)
    assert release.fleet == ("canary",)
    assert release.devices == ()
    assert updater.get_targetinfo(device_channel("edge-1")) is None

    info = updater.get_targetinfo(release.bundle)
    assert info is not None
    assert Release.from_custom(info.custom) == release
    downloaded = Path(updater.download_target(info, str(tmp_path / "bundle.tar.gz")))
    digest = hashlib.sha256(downloaded.read_bytes()).hexdigest()
    assert digest == info.hashes["sha256"] == published.sha256
    opened = load_bundle(downloaded)  # the bytes a device gets are a whole, verifiable bundle
    assert opened.manifest == manifest
    opened.close()
    # The pointer's own file is the same release, so a device that downloads it reads the same thing.
    pointer_file = Path(updater.download_target(pointer, str(tmp_path / "pointer.json")))
    assert Release.from_custom(json.loads(pointer_file.read_bytes())) == release


def test_releases_count_up_and_the_same_bundle_for_the_same_audience_is_a_no_op(
    repo: Path, served: str, bundle: Path, tmp_path: Path
) -> None:
    assert publish(repo, bundle, fleet=["canary"]).release.release == 1
    timestamp = (repo / "metadata" / "timestamp.json").read_bytes()
    # The folder is packed again: the archive must come out byte for byte the same to be recognised.
    again = publish(repo, bundle, fleet=["canary"])
    assert again.unchanged
    assert again.release.release == 1
    assert (repo / "metadata" / "timestamp.json").read_bytes() == timestamp

    newer = _other_bundle(tmp_path / "newer", threshold=2.0)
    second = publish(repo, newer, fleet=["canary"], devices=["edge-1"])
    assert second.release.release == 2
    assert not second.unchanged
    assert publish(repo, newer, fleet=["canary"], devices=["edge-1"]).unchanged
    # The same bytes for another audience, or with other compatibility, are a new release.
    assert publish(repo, newer, fleet=["prod"]).release.release == 3
    assert publish(repo, newer, fleet=["prod"], hardware=["x86"]).release.release == 4

    updater = _updater(served, tmp_path / "device", _root_1(repo))
    updater.refresh()
    releases = {}
    for name in (fleet_channel("canary"), device_channel("edge-1"), fleet_channel("prod")):
        info = updater.get_targetinfo(name)
        assert info is not None
        releases[name] = Release.from_custom(info.custom).release
    assert releases == {fleet_channel("canary"): 2, device_channel("edge-1"): 2, fleet_channel("prod"): 4}
    # Release 1 and 3 are no pointer's any more: they leave the signed targets (so the mirror drops them).
    assert updater.get_targetinfo("bundles/tiny-zscore/1/tiny-zscore-1.0.0.tar.gz") is None
    assert updater.get_targetinfo("bundles/tiny-zscore/3/tiny-zscore-1.0.0.tar.gz") is None
    assert updater.get_targetinfo("bundles/tiny-zscore/2/tiny-zscore-1.0.0.tar.gz") is not None


def test_publish_refuses_no_audience_and_names_that_cannot_be_a_target(repo: Path, bundle: Path) -> None:
    with pytest.raises(ConfigError, match="audience"):
        publish(repo, bundle)
    with pytest.raises(ConfigError, match="device id 'a/b'"):
        publish(repo, bundle, devices=["a/b"])
    with pytest.raises(ConfigError, match="fleet group 'x#'"):
        publish(repo, bundle, fleet=["x#"])


def test_the_status_modules_examples_run() -> None:
    result = doctest.testmod(repo_status)
    assert result.attempted > 0
    assert result.failed == 0


def test_backends_are_registry_keys_and_tensorrt_needs_an_engine(bundle: Path) -> None:
    assert {*ONNX_BACKENDS, TENSORRT_BACKEND} <= set(REGISTRY)
    manifest = load_bundle(bundle).manifest
    assert backends_for(manifest) == ONNX_BACKENDS
    with_engine = dataclasses.replace(manifest, files={**manifest.files, PLAN_NAME: {"sha256": "0" * 64, "bytes": 1}})
    assert backends_for(with_engine) == (*ONNX_BACKENDS, TENSORRT_BACKEND)


# --- keys and freshness ----------------------------------------------------------------------------------


def test_a_rotated_timestamp_key_is_learnt_by_a_device_that_trusts_the_old_root(
    repo: Path, served: str, bundle: Path, tmp_path: Path
) -> None:
    publish(repo, bundle, fleet=["canary"])
    device = tmp_path / "device"
    _updater(served, device, _root_1(repo)).refresh()
    old_key = load_current(open_repository(repo)).root.signed.roles["timestamp"].keyids[0]

    rotation = rotate_key(repo, "timestamp")
    assert rotation.root_version == 2
    assert rotation.old_keyids == (old_key,)
    assert not list((repo / "keys").glob(f"timestamp-{old_key}.pem"))  # a revoked key is not kept around

    # The same device, from what it saved: it walks to 2.root.json and takes the new key's timestamp.
    updater = _updater(served, device, None)
    updater.refresh()
    assert _trusted_root_version(device) == 2
    assert updater.get_targetinfo(fleet_channel("canary")) is not None
    # A fresh device holding only version 1 gets there too.
    _updater(served, tmp_path / "fresh", _root_1(repo)).refresh()
    assert _trusted_root_version(tmp_path / "fresh") == 2


def test_rotated_targets_and_snapshot_keys_still_verify(repo: Path, served: str, bundle: Path, tmp_path: Path) -> None:
    publish(repo, bundle, fleet=["canary"])
    rotate_key(repo, "targets")
    rotate_key(repo, "snapshot")
    updater = _updater(served, tmp_path / "device", _root_1(repo))
    updater.refresh()
    assert _trusted_root_version(tmp_path / "device") == 3
    info = updater.get_targetinfo(fleet_channel("canary"))
    assert info is not None
    assert Release.from_custom(info.custom).release == 1
    assert publish(repo, _other_bundle(tmp_path / "b2", 2.0), fleet=["canary"]).release.release == 2


def test_a_new_root_is_accepted_by_a_device_holding_root_1(repo: Path, served: str, tmp_path: Path) -> None:
    old_root_files = sorted((repo / "keys").glob("root-*.pem"))
    rotation = rotate_key(repo, "root")
    assert len(rotation.new_keyids) == 3
    assert not set(rotation.new_keyids) & set(rotation.old_keyids)
    assert not any(p.exists() for p in old_root_files)
    new_root: Metadata[Root] = Metadata.from_bytes((repo / "metadata" / "2.root.json").read_bytes())
    assert new_root.signed.roles["root"].threshold == 2
    _updater(served, tmp_path / "device", _root_1(repo)).refresh()
    assert _trusted_root_version(tmp_path / "device") == 2


def test_rotation_needs_the_root_threshold_in_keys(repo: Path, bundle: Path, tmp_path: Path) -> None:
    offline = tmp_path / "usb"
    offline.mkdir()
    root_files = sorted((repo / "keys").glob("root-*.pem"))
    for path in root_files[:2]:  # 1 of 3 left, threshold 2
        shutil.move(path, offline / path.name)
    before = sorted(p.name for p in (repo / "keys").iterdir())
    for role in ("root", "timestamp"):
        with pytest.raises(ExportError, match=r"needs 2 of its 3 keys .*holds 1 of them") as info:
            rotate_key(repo, role)
        assert info.value.remedy is not None
        assert "bring 2 root key files back" in info.value.remedy
    assert sorted(p.name for p in (repo / "keys").iterdir()) == before  # nothing made, nothing removed
    # Publishing needs no root key at all.
    assert publish(repo, bundle, fleet=["canary"]).release.release == 1
    shutil.move(offline / root_files[0].name, root_files[0])
    assert rotate_key(repo, "timestamp").root_version == 2


def test_refresh_timestamp_makes_a_new_version_that_expires_later(repo: Path) -> None:
    before = _timestamp(repo)
    refreshed = refresh_timestamp(repo, now=utcnow() + timedelta(hours=6))
    assert refreshed.version == before.version + 1 == _timestamp(repo).version
    assert refreshed.expires >= before.expires + timedelta(hours=6)
    current = load_current(open_repository(repo))
    assert (current.snapshot.signed.version, current.targets.signed.version) == (1, 1)  # far from expiry


def test_refresh_renews_snapshot_and_targets_before_they_expire(repo: Path, served: str, tmp_path: Path) -> None:
    # 80 days on: targets (90 d) and snapshot (7 d) have under a quarter of their lifetime left, or none.
    refresh_timestamp(repo, now=utcnow() + timedelta(days=80))
    current = load_current(open_repository(repo))
    assert (current.snapshot.signed.version, current.targets.signed.version) == (2, 2)
    assert current.targets.signed.expires > utcnow() + timedelta(days=160)
    _updater(served, tmp_path / "device", _root_1(repo)).refresh()


def test_an_expired_timestamp_is_refused_by_the_device_and_flagged(
    repo: Path, served: str, bundle: Path, tmp_path: Path
) -> None:
    publish(repo, bundle, fleet=["canary"])
    # Signed two days ago with a one-day lifetime: a frozen repository, as a device must see it.
    refresh_timestamp(repo, now=utcnow() - timedelta(days=2))
    with pytest.raises(ExpiredMetadataError):
        _updater(served, tmp_path / "device", _root_1(repo)).refresh()
    report = status(repo)
    assert "EXPIRED" in report
    assert "refresh-timestamp" in report
    refresh_timestamp(repo)
    _updater(served, tmp_path / "device2", _root_1(repo)).refresh()
    assert "EXPIRED" not in status(repo)


# --- the MQTT mirror -------------------------------------------------------------------------------------


def _big_bundle(root: Path, size: int) -> Path:
    """A real bundle with a large incompressible file, listed in its manifest like any other."""
    make_bundle(root)
    (root / "padding.bin").write_bytes(os.urandom(size))
    manifest = load_bundle(root).manifest
    write_manifest(root, dataclasses.replace(manifest, files=describe_files(root, [*manifest.files, "padding.bin"])))
    return root


def _expected(repo: Path, prefix: str) -> dict[str, bytes]:
    current = load_current(open_repository(repo))
    meta = repo / "metadata"
    files = {repo_topic(prefix, "metadata", p.name): p.read_bytes() for p in meta.glob("*.root.json")}
    for name in (
        "timestamp.json",
        f"{current.snapshot.signed.version}.snapshot.json",
        f"{current.targets.signed.version}.targets.json",
    ):
        files[repo_topic(prefix, "metadata", name)] = (meta / name).read_bytes()
    for target in current.targets.signed.targets.values():
        path = target.get_prefixed_paths()[0]
        files[repo_topic(prefix, "targets", path)] = (repo / "targets" / path).read_bytes()
    return files


def _retained(collector: Collector, topics: dict[str, bytes]) -> dict[str, bytes]:
    def latest(messages: list[Any]) -> dict[str, bytes] | None:
        seen = {m.topic: m.payload for m in messages}
        return seen if all(seen.get(t) == b for t, b in topics.items()) else None

    found: dict[str, bytes] = collector.wait_for(latest, 20.0, f"{len(topics)} mirrored files")
    return found


def test_the_mirror_holds_every_current_file_byte_for_byte(repo: Path, broker: Broker, tmp_path: Path) -> None:
    prefix = f"mirror-{uuid.uuid4().hex[:8]}"
    publish(repo, _big_bundle(tmp_path / "big", 6 << 20), fleet=["canary"])
    result = mirror(repo, broker.url, prefix=prefix)
    expected = _expected(repo, prefix)
    assert result.files == len(expected)
    assert max(len(b) for b in expected.values()) > 6 << 20  # the bundle went as one message

    # A device that subscribes afterwards gets every file as a retained message.
    late = Collector(broker, [f"{prefix}/repo/#"])
    try:
        got = _retained(late, expected)
        assert all(m.retain for m in late.messages)
        assert {t for t, b in got.items() if b} == set(expected)
        assert [m.topic for m in late.messages].count(repo_topic(prefix, "metadata", "1.root.json")) == 1
    finally:
        late.close()

    # A second release: the first's snapshot, targets, pointer and bundle are cleared from the broker.
    watcher = Collector(broker, [f"{prefix}/repo/#"])
    try:
        _retained(watcher, expected)
        publish(repo, _other_bundle(tmp_path / "second", 2.0), fleet=["canary"])
        second = mirror(repo, broker.url, prefix=prefix)
        now_expected = _expected(repo, prefix)
        stale = {t: b"" for t in expected if t not in now_expected}
        assert repo_topic(prefix, "metadata", "2.snapshot.json") in stale
        assert any("/targets/bundles/tiny-zscore/1/" in t for t in stale)
        assert any("/targets/channels/fleet/" in t for t in stale)
        assert second.cleared >= len(stale)
        _retained(watcher, {**now_expected, **stale})
    finally:
        watcher.close()


def test_a_broker_that_cannot_be_reached_is_an_export_error(repo: Path) -> None:
    with pytest.raises(ExportError, match="cannot reach the broker"):
        mirror(repo, "mqtt://127.0.0.1:1", timeout=5)
    with pytest.raises(ConfigError, match="mqtt://host"):
        mirror(repo, "http://127.0.0.1:1")


# --- the command line ------------------------------------------------------------------------------------


def test_cli_init_publish_status_and_errors(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    printed: list[str] = []

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args])
        out, err = capsys.readouterr()
        printed.extend((out, err))
        return code, out, err

    code, out, _ = run("repo", "init", "--repo", str(repo), "--root-keys", "2", "--root-threshold", "2")
    assert code == 0
    assert "offline" in out
    assert str(repo / "keys") in out
    code, out, _ = run("publish", "--repo", str(repo), "--bundle", str(bundle), "--fleet", "canary")
    assert code == 0
    assert "release 1" in out
    code, out, _ = run("publish", "--repo", str(repo), "--bundle", str(bundle), "--fleet", "canary")
    assert code == 0
    assert "nothing to publish" in out
    assert run("repo", "rotate-key", "snapshot", "--repo", str(repo))[0] == 0

    code, report, _ = run("repo", "status", "--repo", str(repo))
    assert code == 0
    rows = {line.split()[0]: line.split() for line in report.splitlines() if line.strip()}
    # init: version 1 of all; publish: targets, snapshot, timestamp 2; rotate snapshot: root 2, snapshot 3, ts 3
    assert [rows[role][1] for role in ("root", "targets", "snapshot", "timestamp")] == ["2", "2", "3", "3"]
    assert "2 of 2" in " ".join(rows["root"])
    assert rows["1"][1:3] == ["tiny-zscore", "1.0.0"]
    assert "bundles/tiny-zscore/1/tiny-zscore-1.0.0.tar.gz" in rows["1"]

    code, _, err = run("publish", "--repo", str(repo), "--bundle", str(bundle))
    assert code == 2
    assert "edgevae publish: error: a release needs an audience" in err
    code, _, err = run("repo", "init", "--repo", str(repo))
    assert code == 7
    assert "already exists" in err
    for path in (repo / "keys").glob("root-*.pem"):
        path.unlink()
    code, _, err = run("repo", "rotate-key", "root", "--repo", str(repo))
    assert code == 7
    assert "holds 0 of them" in err

    # No key material anywhere in what was printed or logged.
    text = "".join(printed) + caplog.text
    assert "PRIVATE KEY" not in text
    for pem in (repo / "keys").glob("*.pem"):
        assert "".join(pem.read_text().splitlines()[1:-1]) not in text


# --- the timer's unit ------------------------------------------------------------------------------------

TIMESTAMP_UNIT = Path(__file__).resolve().parents[1] / "systemd" / "edgevae-timestamp.service"
UNDER_FILTER = Path(__file__).resolve().parent / "tools" / "under_unit_filter.py"


def _no_seccomp() -> str | None:
    if subprocess.run(["/usr/bin/python3", "-c", "import seccomp"], capture_output=True).returncode != 0:
        return "Debian's python3-seccomp is not installed (`make test` installs it)"
    if shutil.which("systemd-analyze") is None:
        return "systemd-analyze is not installed"
    return None


@pytest.mark.skipif(_no_seccomp() is not None, reason=str(_no_seccomp()))
def test_refresh_and_mirror_run_under_the_timer_units_syscall_filter(repo: Path, broker: Broker) -> None:
    # --kill: any call the unit's SystemCallFilter= denies kills the command, instead of the unit's EPERM.
    command = [sys.executable, "-m", "edgevae.cli.main", "repo", "refresh-timestamp", "--repo", str(repo)]
    command += ["--mqtt", broker.url, "--prefix", f"unit-{uuid.uuid4().hex[:8]}"]
    launcher = ["/usr/bin/python3", str(UNDER_FILTER), "--kill", str(TIMESTAMP_UNIT), "--"]
    result = subprocess.run([*launcher, *command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "timestamp version 2" in result.stdout
    assert "mirrored" in result.stdout
    assert _timestamp(repo).version == 2
