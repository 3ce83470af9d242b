"""Export round trip: a run written by `edgevae train`, to ONNX, compressed, bundled, scored by the agent's backend."""

from __future__ import annotations

import argparse
import shutil
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from trained_runs import CALIBRATION_WINDOWS, CHANNELS, STRIDE, WINDOW, anomalous_windows, train_run

import edgevae.export.parity
from edgevae.agent.backends import create_backend
from edgevae.agent.bundle import (
    CHANNEL_ERROR_OUTPUT,
    INPUT_NAME,
    PRECISIONS,
    SCORE_OUTPUT,
    describe_files,
    load_bundle,
)
from edgevae.agent.distribution import FROM_ROWS, DriftReference
from edgevae.agent.golden import GOLDEN_RTOL, self_test
from edgevae.cli.main import main
from edgevae.core.errors import BundleError, ExportError
from edgevae.core.thresholds import choose_method, default_params, scaled_quantile_threshold
from edgevae.export._rundir import load_run
from edgevae.export.bundle_writer import ExportReport, export_bundle
from edgevae.export.graph import GraphOutputs
from edgevae.export.onnx import to_onnx
from edgevae.export.options import add_arguments
from edgevae.export.parity import PARITY_RTOL, relative_error, spearman, torch_scores
from edgevae.export.partition import scoring_arithmetic_nodes
from edgevae.export.quantize import Precision, compress


@pytest.fixture(scope="module")
def int8_bundle(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportReport:
    out = tmp_path_factory.mktemp("bundles") / "int8"
    return export_bundle(trained_run, out, precision="int8", model_version="1.0.0", archive=True)


@pytest.fixture(scope="module")
def fp32_model(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    graph = load_run(trained_run).graph
    path = tmp_path_factory.mktemp("onnx") / "fp32.onnx"
    return to_onnx(graph, path, graph.window, graph.channels, metadata={"edgevae.model_id": "m1"})


def test_output_names_are_the_agent_contract() -> None:
    assert GraphOutputs._fields == (SCORE_OUTPUT, CHANNEL_ERROR_OUTPUT)


def test_export_offers_the_bundle_precisions() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    choices = next(a.choices for a in parser._actions if a.dest == "precision")
    assert list(choices or []) == list(PRECISIONS) == [p.value for p in Precision]


@pytest.mark.slow
def test_onnx_graph_contract(fp32_model: Path) -> None:
    model = onnx.load(str(fp32_model))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [SCORE_OUTPUT, CHANNEL_ERROR_OUTPUT]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", WINDOW, len(CHANNELS)]
    assert {p.key: p.value for p in model.metadata_props}["edgevae.model_id"] == "m1"
    assert model.opset_import[0].version == 17


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 37])
def test_onnx_fp32_matches_torch_at_any_batch(trained_run: Path, fp32_model: Path, batch: int) -> None:
    run = load_run(trained_run)
    windows = np.concatenate([run.holdout, run.train_sample])[:batch]
    expected = torch_scores(run.graph, windows)
    actual = create_backend(fp32_model).run(windows)
    assert actual.score.shape == (batch,)
    assert actual.channel_error.shape == (batch, len(CHANNELS))
    assert relative_error(actual.score, expected.score).max() <= PARITY_RTOL
    assert relative_error(actual.channel_error, expected.channel_error).max() <= PARITY_RTOL


@pytest.mark.slow
def test_normalization_is_inside_the_graph(trained_run: Path, fp32_model: Path) -> None:
    run = load_run(trained_run)
    backend = create_backend(fp32_model)
    normal = backend.run(run.holdout).score
    shifted = backend.run(anomalous_windows(run.holdout)).score
    # Raw units differ by five orders of magnitude between channels; a missing normalization would not
    # put normal windows at scores of order one (normalized variance) or separate the level shifts.
    assert float(np.median(normal)) < 1.0
    assert float(np.median(shifted)) > 5 * float(np.quantile(normal, 0.99))


@pytest.mark.slow
def test_scoring_arithmetic_stays_out_of_the_vae_body(fp32_model: Path) -> None:
    model = onnx.load(str(fp32_model))
    ops = {n.name: n.op_type for n in model.graph.node}
    outside = {ops[name] for name in scoring_arithmetic_nodes(model)}
    assert {"Sub", "Div", "Pow", "ReduceMean"} <= outside
    assert not outside & {"Conv", "ConvTranspose", "Gemm", "MatMul", "Erf"}


@pytest.mark.slow
def test_int8_bundle_manifest(int8_bundle: ExportReport, trained_run: Path) -> None:
    bundle = load_bundle(int8_bundle.bundle)
    m = bundle.manifest
    assert (m.precision, m.model_file, m.model_version) == ("int8", "model.onnx", "1.0.0")
    assert m.model_id == trained_run.name
    assert (m.channels, m.window, m.stride, m.sample_period_s) == (CHANNELS, WINDOW, STRIDE, 1.0)
    assert (m.architecture, m.score_kind) == ("vae-conv", "mse")
    assert m.files == describe_files(int8_bundle.bundle, ["model.onnx", "golden.npz"])
    # The default rule is chosen for the hold-out at hand, and every parameter is recorded.
    run = load_run(trained_run)
    windows = len(run.calibration_windows(m.score_rows))
    assert m.threshold.calibration_windows == windows
    choice = choose_method(windows)
    assert m.threshold.method == choice.method
    assert m.threshold.params == default_params(choice.method)
    assert m.export["threshold_choice"] == {"method": choice.method, "reason": choice.reason}
    assert m.training["metrics"]["device"] == "cpu"
    parity = m.export["parity"]
    assert parity["torch_vs_onnx_fp32"]["max_rel_error_score"] <= PARITY_RTOL
    # ORT calibrates on whole batches of 32 training windows (250 kept: 224 used, the last 26 left out)
    assert m.export["compression"]["calibration_windows"] == CALIBRATION_WINDOWS // 32 * 32 == 224
    sizes = m.export["sizes"]
    assert sizes["shipped_bytes"] == m.files["model.onnx"]["bytes"] < sizes["fp32_bytes"]
    assert sorted(p.name for p in int8_bundle.bundle.iterdir()) == ["golden.npz", "manifest.json", "model.onnx"]
    # Drift is measured against every training row's range and the scores the threshold was calibrated on.
    drift = DriftReference.from_entry(m.distribution, m.channels)
    assert drift.source == FROM_ROWS
    assert drift.to_entry()["channels"] == run.meta["channel_ranges"]["channels"]
    assert drift.ranges.rows == run.meta["channel_ranges"]["rows"] > len(run.train_sample)
    assert drift.score_count == windows


@pytest.mark.slow
def test_the_bundle_ships_golden_windows_its_model_passes(int8_bundle: ExportReport, tmp_path: Path) -> None:
    bundle = load_bundle(int8_bundle.bundle)
    m = bundle.manifest
    assert m.golden == {"file": "golden.npz", "windows": 16, "rtol": GOLDEN_RTOL}
    backend = create_backend(bundle.model_path)
    assert self_test(backend, bundle.root, m.golden, m.threshold.value) is None
    copy = tmp_path / "copy"
    shutil.copytree(bundle.root, copy)
    with np.load(copy / "golden.npz") as data:
        shifted = {"windows": data["windows"], "scores": data["scores"] * 1.5}
    np.savez(copy / "golden.npz", **shifted)
    assert "golden windows score outside" in str(self_test(backend, copy, m.golden, m.threshold.value))
    backend.close()


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 37, None])
def test_int8_scores_through_the_agent_backend(int8_bundle: ExportReport, trained_run: Path, batch: int | None) -> None:
    windows = load_run(trained_run).holdout[:batch]
    out = create_backend(load_bundle(int8_bundle.bundle).model_path).run(windows)
    assert np.all(np.isfinite(out.score))
    assert np.all(out.channel_error >= 0)
    assert out.score.shape == (len(windows),)
    assert out.channel_error.shape == (len(windows), len(CHANNELS))


@pytest.mark.slow
def test_int8_follows_fp32(int8_bundle: ExportReport, trained_run: Path, fp32_model: Path) -> None:
    fidelity = int8_bundle.manifest.export["parity"]["shipped_vs_fp32"]
    assert fidelity["spearman"] > 0.9
    assert fidelity["decision_flips"] <= 0.02
    # The same holds on windows the threshold was not calibrated on, anomalies included.
    run = load_run(trained_run)
    windows = np.concatenate([run.train_sample, anomalous_windows(run.holdout)])
    ref = create_backend(fp32_model).run(windows).score
    got = create_backend(int8_bundle.bundle / "model.onnx").run(windows).score
    assert spearman(got, ref) > 0.9
    threshold = int8_bundle.manifest.threshold.value
    fp32_threshold = int8_bundle.manifest.export["fp32_threshold"]
    assert np.mean((got > threshold) != (ref > fp32_threshold)) <= 0.02


@pytest.mark.slow
def test_fp16_bundle(trained_run: Path, tmp_path: Path) -> None:
    report = export_bundle(trained_run, tmp_path / "fp16", precision=Precision.FP16)
    m = load_bundle(report.bundle).manifest
    assert m.precision == "fp16"
    assert m.export["parity"]["shipped_vs_fp32"]["spearman"] > 0.99
    out = create_backend(report.bundle / "model.onnx").run(load_run(trained_run).holdout[:5])
    assert np.all(np.isfinite(out.score))


@pytest.mark.slow
def test_fp16_keeps_raw_readings_beyond_float16_range(trained_run: Path, tmp_path: Path) -> None:
    # Readings above 65504 (pressure in Pa, counters) are inf in float16; normalization must run in float32.
    run = load_run(trained_run)
    offset = 1e5
    graph = run.graph
    graph.mean += offset
    fp32 = to_onnx(graph, tmp_path / "fp32.onnx", graph.window, graph.channels)
    compress(fp32, tmp_path / "fp16.onnx", Precision.FP16)
    windows = run.holdout[:16] + np.float32(offset)
    ref = create_backend(fp32).run(windows).score
    got = create_backend(tmp_path / "fp16.onnx").run(windows).score
    assert np.all(np.isfinite(got))
    assert relative_error(got, ref).max() < 0.1


@pytest.mark.slow
def test_archive_round_trip(int8_bundle: ExportReport) -> None:
    assert int8_bundle.archive == int8_bundle.bundle.with_name("int8.tar.gz")
    with tarfile.open(int8_bundle.archive) as tar:
        assert tar.getnames()[0] == "manifest.json"
    from_archive = load_bundle(int8_bundle.archive)
    try:
        assert from_archive.manifest == load_bundle(int8_bundle.bundle).manifest
        assert from_archive.model_bytes() == (int8_bundle.bundle / "model.onnx").read_bytes()
    finally:
        shutil.rmtree(from_archive.root)


@pytest.mark.slow
def test_tampered_model_fails_to_load(int8_bundle: ExportReport, tmp_path: Path) -> None:
    copy = shutil.copytree(int8_bundle.bundle, tmp_path / "copy")
    model = copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy)


@pytest.mark.slow
def test_gaussian_decoder_exports_an_nll_score(tmp_path: Path) -> None:
    run = train_run(tmp_path / "nll", "--arch", "mlp", "--likelihood", "gaussian", "--epochs", "2")
    report = export_bundle(run, tmp_path / "bundle", precision="fp32", model_id="nll-model")
    m = report.manifest
    assert (m.model_id, m.score_kind, m.architecture) == ("nll-model", "nll", "vae-mlp")
    figures = m.export["parity"]
    assert figures["torch_vs_onnx_fp32"]["max_rel_error_score"] <= PARITY_RTOL
    assert figures["shipped_vs_fp32"]["max_rel_error"] == 0.0
    # An FP32 bundle ships the FP32 graph: its report gives the size, not a comparison with itself.
    text = report.summary()
    assert "fp32 vs fp32" not in text
    assert f"size            fp32 {m.export['sizes']['shipped_bytes']:,} B\n" in text


@pytest.mark.slow
def test_parity_failure_is_loud_and_leaves_nothing(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> dict[str, float]:
        return {"max_rel_error_score": 0.5, "max_rel_error_channel_error": 0.0, "windows": 1}

    monkeypatch.setattr(edgevae.export.parity, "torch_onnx_parity", broken)
    with pytest.raises(ExportError, match="does not match torch"):
        export_bundle(trained_run, tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_refuses_to_overwrite_and_names_missing_run_files(trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(trained_run, tmp_path / "taken")
    with pytest.raises(ExportError, match="calibration.npz"):
        export_bundle(tmp_path / "taken", tmp_path / "out")
    (tmp_path / "out.tar.gz").write_text("x")
    with pytest.raises(ExportError, match="out.tar.gz already exists"):
        export_bundle(trained_run, tmp_path / "out", archive=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_flags_and_report(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for action in parser._actions[1:]:
        assert action.help, f"{action.dest} has no help"
    argv = [
        "export",
        "--run",
        str(trained_run),
        "--out",
        str(tmp_path / "b"),
        "--precision",
        "fp32",
        "--threshold-method",
        "quantile",
        "--threshold-q",
        "0.99",
    ] + ["--debounce-trigger", "2", "--debounce-clear", "4", "--model-version", "7"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "torch vs onnx" in printed
    assert "threshold" in printed
    m = load_bundle(tmp_path / "b").manifest
    assert (m.debounce.trigger, m.debounce.clear, m.threshold.params["q"], m.model_version) == (2, 4, 0.99, "7")
    # a failure is one line with its remedy and the export error's exit code, not a traceback
    assert main(argv) == ExportError.exit_code == 7
    err = capsys.readouterr().err
    assert err.startswith("edgevae export: error: ")
    assert "already exists" in err
    assert "choose a new --out" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0], 1.0),  # same order
        ([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], -1.0),  # reversed order
        ([1.0, 2.0, 3.0], [1.0, 4.0, 9.0], 1.0),  # monotone but not linear
        ([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], 0.9486832980505138),  # a tie on one side
    ],
)
def test_spearman(a: list[float], b: list[float], expected: float) -> None:
    assert spearman(np.array(a), np.array(b)) == pytest.approx(expected)


def test_spearman_of_constant_scores_is_undefined() -> None:
    assert np.isnan(spearman(np.ones(4), np.arange(4.0)))


def test_relative_error_floor() -> None:
    ref = np.array([1.0, 1.0, 1.0, 0.0])
    # the zero reference is compared against 1 % of the median instead of dividing by zero
    assert relative_error(np.array([1.1, 1.0, 1.0, 0.001]), ref).tolist() == pytest.approx([0.1, 0, 0, 0.1])


@pytest.mark.slow
def test_cli_rejects_a_threshold_flag_of_another_method(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["export", "--run", str(trained_run), "--out", str(tmp_path / "b"), "--threshold-method", "pot"]
    assert main([*argv, "--threshold-q", "0.99"]) == 2
    assert "--threshold-q does not apply to --threshold-method pot" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_scaled_quantile_export_calibrates_on_the_shipped_models_training_and_holdout_scores(
    trained_run: Path, tmp_path: Path
) -> None:
    flags = ["--threshold-method", "scaled-quantile", "--threshold-q", "0.99", "--threshold-ratio-q", "0.9"]
    assert main(["export", "--run", str(trained_run), "--out", str(tmp_path / "b"), "--precision", "int8", *flags]) == 0
    bundle = load_bundle(tmp_path / "b")
    run = load_run(trained_run)
    # Calibrated on the hold-out windows whose scored rows the model never fit, and every training window.
    windows = run.calibration_windows(bundle.manifest.score_rows)
    assert 0 < len(windows) <= len(run.holdout)
    holdout = edgevae.export.parity.onnx_scores(bundle.model_path, windows).score
    training = edgevae.export.parity.onnx_scores(bundle.model_path, run.train_sample).score
    t = bundle.manifest.threshold
    assert (t.method, t.params) == ("scaled-quantile", {"q": 0.99, "ratio_q": 0.9, "margin": 1.85})
    assert t.calibration_windows == len(windows)
    expected = scaled_quantile_threshold(holdout, training, q=0.99, ratio_q=0.9, margin=1.85)
    assert t.value == pytest.approx(expected, rel=1e-6)
    assert t.value >= float(np.quantile(training, 0.99)) * (1 - 1e-6)
