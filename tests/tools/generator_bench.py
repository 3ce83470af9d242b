"""Training time and sampling speed of the generators on Sines with the defaults, and how close their windows
are to the data at each DDIM step count: the tables in docs/generators.md.

    .venv/bin/python tests/tools/generator_bench.py [--steps N] [--threads T] [--n WINDOWS]

Each kind trains with `edgevae train-generator`'s defaults (--steps overrides both kinds' step count), then
samples --n windows, the best of three timings: the GAN, and diffusion at 10, 25, 50 and 100 DDIM steps;
`--kinds diffusion --prediction x0` measures the other denoiser target. Closeness is measured on the scaled
windows against the 10,000 Sines windows (edgevae.evaluation.fidelity): the kernel distance (MMD), the mean
per-channel marginal distance and the mean autocorrelation difference; lower is closer.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgevae.evaluation.fidelity import acf_difference, marginal_distance, mmd_rbf
from edgevae.training.generators import Generator, GeneratorMeta, load_generator
from edgevae.training.generators import diffusion as diffusion_module
from edgevae.training.generators.config import GeneratorConfig
from edgevae.training.generators.train import train_generator
from edgevae.training.sines import sines

DDIM_STEPS = (10, 25, 50, 100)


def _closeness(real: np.ndarray, synthetic: np.ndarray) -> str:
    mmd = mmd_rbf(real, synthetic)
    marginal = float(marginal_distance(real, synthetic).mean())
    acf = float(acf_difference(real, synthetic).mean())
    return f"{mmd:.4f} | {marginal:.3f} | {acf:.4f}"


def _speed(generator: Generator, n: int, repeats: int = 3) -> tuple[float, np.ndarray]:
    """Windows per second, the best of `repeats` draws (another job on the machine only ever slows one down)."""
    generator.sample(min(n, 256), seed=99)  # warm-up: the first forward pass allocates
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        windows = generator.sample(n, seed=1)
        best = max(best, n / (time.perf_counter() - started))
    return best, windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="training steps of both kinds (default: each kind's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for training and sampling")
    parser.add_argument("--n", type=int, default=2000, help="windows sampled per measurement")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: a temp dir)")
    parser.add_argument("--kinds", nargs="+", default=["gan", "diffusion"], choices=["gan", "diffusion"])
    parser.add_argument("--prediction", default="eps", choices=["eps", "x0"], help="the diffusion denoiser's target")
    parser.add_argument("--reuse", action="store_true", help="sample from the runs already in --out, train none")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="generator-bench-"))
    real = sines()
    torch.set_num_threads(args.threads)
    print(f"CPU: {os.cpu_count()} cores, torch threads {args.threads}, load average {os.getloadavg()[0]:.2f}\n")
    print("| kind | steps | training s | s per step | final losses |\n|---|---|---|---|---|")
    runs = {}
    for kind in args.kinds:
        cfg = GeneratorConfig(kind, None, out / kind, sines=True, steps=args.steps, threads=args.threads)
        cfg.prediction = args.prediction
        runs[kind] = out / kind if args.reuse else train_generator(cfg)
        t = GeneratorMeta.read(runs[kind]).training
        losses = ", ".join(f"{k} {v:.4f}" for k, v in t["final_losses"].items())
        print(f"| {kind} | {t['steps']} | {t['fit_seconds']:.0f} | {t['seconds_per_step']:.3f} | {losses} |")
    print("\n| sampler | windows/s | MMD | marginal | ACF |\n|---|---|---|---|---|")
    if "gan" in runs:
        rate, windows = _speed(load_generator(runs["gan"]), args.n)
        print(f"| GAN | {rate:,.0f} | {_closeness(real, windows)} |")
    for steps in DDIM_STEPS if "diffusion" in runs else ():
        rate, windows = _speed(diffusion_module.load(runs["diffusion"], steps=steps), args.n)
        print(f"| diffusion, DDIM {steps} | {rate:,.0f} | {_closeness(real, windows)} |")
    print(f"| Sines itself (another 2,000, seed 1) | | {_closeness(real, sines(2000, seed=1))} |")
    print(f"\nruns in {out}")


if __name__ == "__main__":
    main()
