"""The one file hash of the project: bundle manifests, the TensorRT engine cache and training data records."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgevae.agent.bundle import sha256_file, sha256_files

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
