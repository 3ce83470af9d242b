"""`edgevae score` on a long file against a bare ONNX Runtime loop over the same windows.

The command runs as a child process, as a user runs it; its wall time covers reading, scoring and writing,
and its peak RSS comes from the kernel's accounting of the child. The bare loop is what scoring alone costs
with this model and backend: the file's windows, already in memory, through `Session.run` in batches.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.agent.backends import create_backend
from edgevae.agent.bundle import load_bundle
from edgevae.agent.table import read_table, write_table
from edgevae.core.window import sliding_windows
from edgevae.demo.bench_stream import peak_rss_kib
from edgevae.training.simulate import simulate_plant

BATCH = 256  # the agent's detection.max_batch


def offline(workdir: Path, bundle: Path, rows: int) -> dict[str, Any]:
    data = workdir / f"offline-{rows}.csv"
    if not data.exists():
        write_table(simulate_plant(rows, seed=7), data)
    out = workdir / "offline-scores.csv"
    log = workdir / "offline-score.log"
    argv = [sys.executable, "-m", "edgevae.cli.main", "--log-level", "warning", "score", "--bundle", str(bundle),
            "--input", str(data), "--out", str(out)]  # fmt: skip
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [(os.POSIX_SPAWN_OPEN, fd, str(log), flags, 0o644) for fd in (1, 2)]
    started = time.perf_counter()
    pid = os.posix_spawn(sys.executable, argv, dict(os.environ), file_actions=actions)
    # The peak is read from /proc while the command runs: the kernel's ru_maxrss of a child counts the memory
    # of the process it was started from (this one, with torch loaded) up to its exec.
    peak_kib = 0
    while True:
        done, status, _ = os.wait4(pid, os.WNOHANG)
        if done:
            break
        peak_kib = max(peak_kib, peak_rss_kib(pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        msg = f"edgevae score failed ({code}): {log.read_text(errors='replace')[-2000:]}"
        raise RuntimeError(msg)
    bare = bare_loop(bundle, data)
    return {
        "rows": rows,
        "score_rows_per_s": rows / seconds,
        "score_seconds": seconds,
        "score_peak_rss_mib": peak_kib / 1024,
        "bare_rows_per_s": bare,
    }


def bare_loop(bundle_path: Path, data: Path) -> float:
    """Rows per second of Session.run alone over the file's windows at the bundle's stride."""
    with closing(load_bundle(bundle_path)) as bundle:
        manifest = bundle.manifest
        table = read_table(data)
        values = table.values[:, [table.channels.index(c) for c in manifest.channels]].astype(np.float32)
        windows = sliding_windows(values, manifest.window, manifest.stride)
        backend = create_backend(bundle.model_path)
        try:
            backend.run(np.ascontiguousarray(windows[:BATCH]))  # warm-up
            started = time.perf_counter()
            for i in range(0, len(windows), BATCH):
                backend.run(np.ascontiguousarray(windows[i : i + BATCH]))
            seconds = time.perf_counter() - started
        finally:
            backend.close()
    return len(values) / seconds
