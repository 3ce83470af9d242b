"""Every WindowVAE architecture x likelihood: shapes, size, learning normal windows, and a tiny train -> INT8
bundle -> backend round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgevae.agent.backends import create_backend
from edgevae.agent.bundle import load_bundle
from edgevae.cli.main import main
from edgevae.export.bundle_writer import export_bundle
from edgevae.training.losses import kl_to_standard_normal, reconstruction_nll
from edgevae.training.models.vae import ARCHITECTURES, LIKELIHOODS, VAEConfig, WindowVAE

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


def _waves(n: int, window: int, seed: int) -> torch.Tensor:
    """(n, window, 3) windows of three phase-locked sines at a random phase each, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(window, dtype=torch.float32)[None, :, None]
    phase = 2 * torch.pi * torch.rand(n, 1, 1, generator=g)
    shift = torch.tensor([0.0, 1.0, 2.0])[None, None, :]
    return torch.sin(2 * torch.pi * t / 8 + phase + shift) + 0.05 * torch.randn(n, window, 3, generator=g)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_learns_normal_windows_and_scores_them_on_the_posterior_mean(arch: str) -> None:
    """After a brief fit, windows like the training ones reconstruct far better than the same readings out of
    time order; `sample=False` decodes the posterior mean, the deterministic path the exported graph takes."""
    torch.manual_seed(0)
    model = WindowVAE(VAEConfig(16, 3, arch, latent=4, hidden=16))
    train, normal = _waves(512, 16, seed=1), _waves(64, 16, seed=2)
    shuffled = normal[:, torch.randperm(16, generator=torch.Generator().manual_seed(3))]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(150):
        x = train[(step * 64) % 512 :][:64]
        out = model(x)
        loss = (reconstruction_nll(x, out.recon, None) + 0.01 * kl_to_standard_normal(out.mu, out.logvar)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        first, again = model(normal, sample=False), model(normal, sample=False)
        sampled = model(normal, sample=True)
        mu, _ = model.encode(normal)
        from_mean, _ = model.decode(mu)
        shuffled_recon = model(shuffled, sample=False).recon

    def error(x: torch.Tensor, recon: torch.Tensor) -> float:
        return float((x - recon).pow(2).mean())

    assert torch.equal(first.recon, again.recon)
    assert torch.equal(first.recon, from_mean)
    assert not torch.equal(first.recon, sampled.recon)
    # the windows' variance is 0.5; all three reach about 0.003 on normal windows and 0.5 on shuffled ones
    assert error(normal, first.recon) < 0.05
    assert error(normal, first.recon) < 0.1 * error(shuffled, shuffled_recon)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "likelihood", "window"),
    [
        *((arch, likelihood, 16) for arch, likelihood in CASES),
        ("tcn", "mse", 15),  # a window the conv codec rejects
    ],
)
def test_trains_and_ships_as_int8(tmp_path: Path, arch: str, likelihood: str, window: int) -> None:
    """`edgevae train` runs every case; export_bundle raises unless the FP32 ONNX graph matches torch, and the
    INT8 bundle must then score."""
    run = tmp_path / "run"
    small = ["--sim-rows", "3000", "--window", str(window), "--epochs", "2", "--calibration-windows", "256"]
    # --max-train-windows keeps each training run to a fraction of a second
    small += [
        "--hidden",
        "16",
        "--latent",
        "4",
        "--max-train-windows",
        "512",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(["train", "--out", str(run), "--arch", arch, "--likelihood", likelihood, *small]) == 0
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
