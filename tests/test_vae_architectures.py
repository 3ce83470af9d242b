"""Every WindowVAE architecture x likelihood: shapes, size, and a tiny train -> INT8 bundle -> backend round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgevae.agent.backends import create_backend
from edgevae.agent.bundle import load_bundle
from edgevae.export.bundle_writer import export_bundle
from edgevae.training.models.vae import ARCHITECTURES, LIKELIHOODS, VAEConfig, WindowVAE
from edgevae.training.train_vae import TrainConfig, train

CASES = [(arch, likelihood) for arch in ARCHITECTURES for likelihood in LIKELIHOODS]


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("arch", "likelihood"), CASES)
@pytest.mark.parametrize("window", [16, 32])
def test_forward_shapes(arch: str, likelihood: str, window: int) -> None:
    cfg = VAEConfig(window, 5, arch, latent=6, hidden=32, likelihood=likelihood)
    out = WindowVAE(cfg)(torch.randn(3, window, 5))
    assert out.recon.shape == (3, window, 5)
    assert out.mu.shape == out.logvar.shape == (3, 6)
    if likelihood == "gaussian":
        assert out.recon_logvar is not None
        assert out.recon_logvar.shape == (3, window, 5)
    else:
        assert out.recon_logvar is None


@pytest.mark.parametrize(
    "window",
    [
        2,  # the shortest window training accepts: one dilated block
        15,  # odd, and not divisible by 4 (the conv codec rejects it)
        33,  # one past a power of two: one more block than 32
    ],
)
def test_tcn_takes_any_window(window: int) -> None:
    out = WindowVAE(VAEConfig(window, 3, "tcn", likelihood="gaussian"))(torch.randn(2, window, 3))
    assert out.recon.shape == (2, window, 3)


@pytest.mark.parametrize("window", [16, 32, 33])
def test_tcn_stack_sees_the_whole_window(window: int) -> None:
    """The first time step of the dilated stack's output must depend on the last input step, and vice versa."""
    codec = WindowVAE(VAEConfig(window, 3, "tcn")).codec
    stack = codec.encoder[:-6]  # input projection and dilated blocks, before the squeeze and flatten
    x = torch.randn(1, 3, window, requires_grad=True)
    out = stack(x)
    (first_step,) = torch.autograd.grad(out[0, :, 0].sum(), x, retain_graph=True)
    (last_step,) = torch.autograd.grad(out[0, :, -1].sum(), x)
    assert bool(first_step[0, :, -1].abs().sum() > 0)
    assert bool(last_step[0, :, 0].abs().sum() > 0)


@pytest.mark.parametrize(
    ("arch", "likelihood", "expected"),
    [
        # mlp and conv are pinned exactly: existing checkpoints must keep loading.
        ("mlp", "mse", 84_112),
        ("mlp", "gaussian", 117_136),
        ("conv", "mse", 63_224),
        ("conv", "gaussian", 64_000),
        ("tcn", "mse", 69_632),
        ("tcn", "gaussian", 70_408),
    ],
)
def test_parameter_counts_at_hidden_64_8_channels_window_32(arch: str, likelihood: str, expected: int) -> None:
    assert _params(WindowVAE(VAEConfig(32, 8, arch, hidden=64, likelihood=likelihood))) == expected


def test_tcn_stays_small() -> None:
    assert _params(WindowVAE(VAEConfig(32, 8, "tcn", hidden=64, likelihood="gaussian"))) <= 100_000


@pytest.mark.parametrize(
    ("arch", "likelihood", "window"),
    [
        *((arch, likelihood, 16) for arch, likelihood in CASES),
        ("tcn", "mse", 15),  # a window the conv codec rejects
    ],
)
def test_trains_and_ships_as_int8(tmp_path: Path, arch: str, likelihood: str, window: int) -> None:
    """export_bundle raises unless the FP32 ONNX graph matches torch; the INT8 bundle must then score."""
    cfg = TrainConfig(
        data=None,
        out=tmp_path / "run",
        sim_rows=3000,
        window=window,
        epochs=2,
        max_train_windows=512,  # keeps each training run to a fraction of a second
        calibration_windows=256,
        arch=arch,
        likelihood=likelihood,
        threads=1,
        progress=False,
    )
    run = train(cfg)
    report = export_bundle(run, tmp_path / "bundle", precision="int8", threshold_method="quantile")
    assert report.manifest.architecture == f"vae-{arch}"
    assert report.manifest.export["parity"]["torch_vs_onnx_fp32"]["max_rel_error_score"] <= 1e-4

    bundle = load_bundle(report.bundle)
    backend = create_backend(bundle.model_path)
    try:
        windows = np.load(run / "calibration.npz")["holdout"][:8].astype(np.float32)
        out = backend.run(windows)
    finally:
        backend.close()
    assert out.score.shape == (8,)
    assert out.channel_error.shape == (8, windows.shape[2])
    assert np.all(np.isfinite(out.score))
