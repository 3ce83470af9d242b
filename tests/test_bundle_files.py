"""The file helpers every layer shares: the sha256 of bundle manifests, the TensorRT engine cache and training
data records, and the write-then-rename of manifests and engines."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgevae.agent.bundle import sha256_file, sha256_files, write_atomically

MIB = 1 << 20


@pytest.mark.parametrize(
    "contents",
    [
        [b""],  # an empty file
        [b"abc"],  # one short file
        [b"x" * MIB, b"y" * (MIB + 1)],  # files that end on and just past a 1 MiB read
        [b"ab", b"", b"c"],  # an empty file in the middle adds nothing
    ],
)
def test_sha256_files_hash_the_bytes_in_order(tmp_path: Path, contents: list[bytes]) -> None:
    paths = []
    for i, data in enumerate(contents):
        paths.append(tmp_path / f"{i}.bin")
        paths[-1].write_bytes(data)
    assert sha256_files(paths) == hashlib.sha256(b"".join(contents)).hexdigest()
    assert sha256_file(paths[0]) == hashlib.sha256(contents[0]).hexdigest()


def test_order_matters(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    assert sha256_files([tmp_path / "a", tmp_path / "b"]) != sha256_files([tmp_path / "b", tmp_path / "a"])


@pytest.mark.parametrize(
    ("existing", "name"),
    [
        (None, "new/dir/model.plan"),  # the folders are made
        (b"old engine", "model.plan"),  # an existing file is replaced whole
        (b"{}", "manifest.json"),  # the temporary name keeps the whole name: manifest.json.tmp
    ],
)
def test_write_atomically(tmp_path: Path, existing: bytes | None, name: str) -> None:
    path = tmp_path / name
    if existing is not None:
        path.write_bytes(existing)
    write_atomically(path, b"new contents")
    assert path.read_bytes() == b"new contents"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_interrupted_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.plan"
    path.write_bytes(b"old engine")

    def power_cut(self: Path, data: bytes) -> int:
        with self.open("wb") as fh:
            fh.write(data[:3])  # part of the data reaches the disk, then the write stops
        msg = "power cut"
        raise OSError(msg)

    monkeypatch.setattr(Path, "write_bytes", power_cut)
    with pytest.raises(OSError, match="power cut"):
        write_atomically(path, b"new engine")
    monkeypatch.undo()
    assert path.read_bytes() == b"old engine"
