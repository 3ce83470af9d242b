"""Session.run latency of each precision per VAE architecture, measured side by side: FP32, static INT8
(QDQ, what `edgevae export --precision int8` ships) and dynamic INT8 (ONNX Runtime's quantize_dynamic of the
FP32 graph, not offered by export), at the agent's batch sizes. Writes docs/bench/precision.md.

    .venv/bin/python tests/tools/precision_bench.py [--workdir build/precision] [--out docs/bench/precision.md]

The models are the simulated plant's VAEs trained for two epochs: speed depends on the graph, not on how
well it was trained. Each round times every precision in turn, and the best of five rounds is kept, so
load from other processes affects them alike.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
from onnxruntime.quantization import QuantType, quantize_dynamic

from edgevae.agent.backends import create_backend
from edgevae.agent.bundle import load_bundle
from edgevae.demo.bench_report import machine

ARCHITECTURES = ("conv", "mlp", "tcn")
BATCHES = (1, 16, 256)
ROUNDS = 5


def _edgevae(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "edgevae.cli.main", "--log-level", "warning", *args], check=True)


def models(workdir: Path, arch: str) -> dict[str, Path]:
    run = workdir / f"run-{arch}"
    if not (run / "meta.json").exists():
        _edgevae("train", "--arch", arch, "--epochs", "2", "--out", str(run), "--no-progress")
    paths = {}
    for precision in ("fp32", "int8"):
        bundle = workdir / f"bundle-{arch}-{precision}"
        if not (bundle / "manifest.json").exists():
            _edgevae("export", "--run", str(run), "--out", str(bundle), "--precision", precision)
        paths[precision] = bundle / "model.onnx"
    dynamic = workdir / f"{arch}-int8-dynamic.onnx"
    if not dynamic.exists():
        quantize_dynamic(str(paths["fp32"]), str(dynamic), weight_type=QuantType.QInt8)
    paths["int8 dynamic"] = dynamic
    return paths


def latency(paths: dict[str, Path], shape: tuple[int, int]) -> dict[str, dict[int, float]]:
    """Per precision and batch size, the best round's µs per Session.run."""
    backends = {name: create_backend(path) for name, path in paths.items()}
    best: dict[str, dict[int, float]] = {name: {} for name in paths}
    try:
        for batch in BATCHES:
            x = np.random.default_rng(0).normal(size=(batch, *shape)).astype(np.float32)
            calls = max(20, 4000 // batch)
            for _ in range(ROUNDS):
                for name, backend in backends.items():
                    backend.run(x)
                    started = time.perf_counter()
                    for _ in range(calls):
                        backend.run(x)
                    us = (time.perf_counter() - started) / calls * 1e6
                    best[name][batch] = min(best[name].get(batch, us), us)
    finally:
        for backend in backends.values():
            backend.close()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("build/precision"))
    parser.add_argument("--out", type=Path, default=Path("docs/bench/precision.md"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    m = machine()
    lines = [
        "# Precision and speed per architecture",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, load {m['load_1m_at_start']} at the start; onnxruntime "
        f"{m['onnxruntime']}, one intra-op thread as the agent runs it. µs per `Session.run` (best of "
        f"{ROUNDS} rounds, precisions interleaved), windows/s in brackets, and the model file's size. "
        "Regenerate with `.venv/bin/python tests/tools/precision_bench.py`.",
        "",
        "| architecture | precision | bytes | " + " | ".join(f"batch {b}" for b in BATCHES) + " |",
        "|---|---|---|" + "---|" * len(BATCHES),
    ]
    for arch in ARCHITECTURES:
        paths = models(args.workdir, arch)
        with closing(load_bundle(paths["fp32"].parent)) as bundle:
            shape = (bundle.manifest.window, len(bundle.manifest.channels))
        best = latency(paths, shape)
        for name, path in paths.items():
            cells = [f"{best[name][b]:,.1f} ({b / best[name][b] * 1e6:,.0f})" for b in BATCHES]
            lines.append(f"| {arch} | {name} | {path.stat().st_size:,} | " + " | ".join(cells) + " |")
        print(lines[-3:], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
