"""A bundle folder as a .tar.gz whose bytes depend only on the files in it.

Publishing the same folder twice must give the same archive, so that the repository can see it is the same
release: names sorted (the manifest first, for streaming readers), times, owners and modes fixed, and the
gzip header's own timestamp and file name left out.
"""

from __future__ import annotations

import gzip
import io
import tarfile

from edgevae.agent.bundle import MANIFEST_NAME, Bundle


def pack_bytes(bundle: Bundle) -> bytes:
    """The manifest and the files it lists (what load_bundle verified), nothing else from the folder."""
    names = [MANIFEST_NAME, *sorted(n for n in bundle.manifest.files if n != MANIFEST_NAME)]
    out = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in names:
            data = (bundle.root / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
