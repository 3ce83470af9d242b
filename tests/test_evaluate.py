"""`edgevae evaluate` on a few real SKAB files: both protocols, both precisions, the report on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevae.core import metrics
from edgevae.core.decision import Debounce, Debouncer
from edgevae.core.window import window_end_rows
from edgevae.evaluation.evaluate import (
    FIT_ROWS,
    PRECISIONS,
    PROTOCOLS,
    EvalConfig,
    FileResult,
    evaluate,
    labelled_files,
    summarize,
)
from edgevae.evaluation.report import write_report
from edgevae.training.config import TrainConfig, resolve_splits
from edgevae.training.data import split_rows

SKAB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "SKAB" / "data"

pytestmark = pytest.mark.skipif(not SKAB.is_dir(), reason=f"SKAB data not found at {SKAB}")


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # Small and brief, with explicit sizes; the threshold rule and debounce are export's defaults.
    flags = ("--epochs", "3", "--window", "16", "--hidden", "32", "--latent", "4")
    return evaluate(EvalConfig(data=SKAB, out=tmp_path_factory.mktemp("report"), max_files=2, train_flags=flags))


def test_files_are_found_in_skab_order() -> None:
    files = labelled_files(SKAB)
    assert len(files) == 34
    assert [f"{p.parent.name}/{p.stem}" for p in files[:3]] == ["valve1/0", "valve1/1", "valve1/2"]


@pytest.mark.slow
def test_both_protocols_and_precisions_are_scored(document: dict) -> None:
    assert set(document["results"]) == {"leaderboard", "deployment"}
    for by_precision in document["results"].values():
        assert set(by_precision) == {"fp32", "int8"}
        for s in by_precision.values():
            assert s["files"] == 2
            assert s["tp"] + s["fp"] + s["fn"] + s["tn"] == s["rows"]
            c = metrics.Confusion(s["tp"], s["fp"], s["fn"], s["tn"])
            assert s["f1"] == pytest.approx(metrics.f1(c))
            assert 0.0 <= s["auroc"] <= 1.0


@pytest.mark.slow
def test_leaderboard_tests_only_rows_after_the_fit(document: dict) -> None:
    results = document["per_file"]["leaderboard"]["int8"]
    lengths = [len(r.labels) for r in results]
    from edgevae.agent.table import read_table

    rows = [len(read_table(p).timestamps) for p in labelled_files(SKAB)[:2]]
    assert lengths == [n - 400 for n in rows]
    deployment = document["per_file"]["deployment"]["int8"]
    assert [len(r.labels) for r in deployment] == rows


@pytest.mark.slow
def test_trivial_detector_is_reported_beside_ours(document: dict) -> None:
    s = document["results"]["leaderboard"]["fp32"]
    labels = np.concatenate([r.labels for r in document["per_file"]["leaderboard"]["fp32"]])
    share = labels.mean()
    assert s["trivial_f1"] == pytest.approx(2 * share / (1 + share))
    assert s["trivial_far"] == 100.0


@pytest.mark.slow
def test_report_is_written(document: dict, tmp_path: Path) -> None:
    paths = write_report(document, tmp_path, plots=True)
    text = paths["markdown"].read_text()
    for row in ("edgevae INT8", "edgevae FP32", "flag everything", "Conv-AE (published)"):
        assert row in text
    saved = json.loads(paths["json"].read_text())
    assert saved["results"]["leaderboard"]["int8"]["files"] == 2
    assert len(saved["per_file"]["deployment"]["fp32"]) == 2
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "pr-deployment.png",
        "pr-leaderboard.png",
        "scores-deployment.png",
        "scores-leaderboard.png",
    ]


@pytest.mark.slow
def test_summarize_pools_files_before_the_ratios(document: dict) -> None:
    results = document["per_file"]["deployment"]["fp32"]
    total = sum((r.confusion for r in results), metrics.Confusion())
    assert summarize(results)["far"] == pytest.approx(metrics.far(total))


@pytest.mark.slow
def test_leaderboard_thresholds_are_calibrated_on_unseen_fit_rows(document: dict) -> None:
    # 400 fit rows are small data: train on the first 85 %, and the 60 validation rows double as the hold-out.
    # A hold-out window counts when all the rows it scores are validation rows.
    validation = split_rows(FIT_ROWS, resolve_splits(TrainConfig(data=None, out=Path()), FIT_ROWS))[1]
    for result in document["per_file"]["leaderboard"]["int8"]:
        model = result.model
        assert model["calibration_windows"] == validation.stop - validation.start - model["score_rows"] + 1


def _replay(result: FileResult) -> np.ndarray:
    """The decisions the threshold and debounce make of the reported scores, row by row, from the first row."""
    window, stride = result.model["window"], result.model["stride"]
    debouncer = Debouncer(Debounce(*result.model["debounce"]))
    decisions = np.zeros(len(result.ratio), dtype=np.int8)
    window_ends = set(window_end_rows(len(result.ratio), window, stride).tolist())
    for row, ratio in enumerate(result.ratio.tolist()):
        if row in window_ends:
            debouncer.update(not ratio <= 1.0)  # a score above the threshold, or NaN, is anomalous
        decisions[row] = debouncer.is_open
    return decisions


@pytest.mark.slow
def test_decisions_are_the_debounced_threshold_crossings_of_the_scores(document: dict) -> None:
    # The deployment protocol scores each file from its first row, so the whole history is in the results.
    for results in document["per_file"]["deployment"].values():
        for result in results:
            assert np.isnan(result.ratio[: result.model["window"] - 1]).all()
            np.testing.assert_array_equal(result.predictions, _replay(result))


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_reported_figures_follow_from_the_decisions(document: dict, protocol: str, precision: str) -> None:
    s = document["results"][protocol][precision]
    labels = np.concatenate([r.labels for r in document["per_file"][protocol][precision]]).astype(bool)
    flags = np.concatenate([r.predictions for r in document["per_file"][protocol][precision]]).astype(bool)
    tp, fp = int(np.sum(labels & flags)), int(np.sum(~labels & flags))
    fn, tn = int(np.sum(labels & ~flags)), int(np.sum(~labels & ~flags))
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (tp, fp, fn, tn)
    assert s["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert s["far"] == pytest.approx(100 * fp / (fp + tn))
    assert s["mar"] == pytest.approx(100 * fn / (fn + tp))


@pytest.mark.slow
def test_the_detector_beats_flagging_everything_on_the_leaderboard(document: dict) -> None:
    for s in document["results"]["leaderboard"].values():
        assert s["f1"] > s["trivial_f1"]
        assert s["far"] < s["trivial_far"] == 100.0
        assert s["auroc"] > 0.5  # anomalous rows score higher than normal ones more often than not


TINY_GENERATOR = "--steps 20 --hidden 8 --blocks 1 --timesteps 20 --ddim-steps 4 --n-critic 1"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gan", "diffusion"])
def test_an_augmented_evaluation_trains_each_model_with_its_own_generator(tmp_path: Path, kind: str) -> None:
    from edgevae.cli.main import main

    out, work = tmp_path / "report", tmp_path / "work"
    args = ["evaluate", "--data", str(SKAB), "--out", str(out), "--workdir", str(work), "--max-files", "1"]
    args += ["--precision", "fp32", "--no-plots", "--train-flags", "--epochs 2 --window 16", "--fit-fraction", "0.1"]
    assert main([*args, "--augment", kind, "--augment-ratio", "0.5", "--generator-flags", TINY_GENERATOR]) == 0
    for protocol, run, rows in (("leaderboard", "valve1-0", FIT_ROWS), ("deployment", "anomaly-free", 940)):
        meta = json.loads((work / protocol / "runs" / run / "meta.json").read_text())
        generator = json.loads((work / protocol / "runs" / f"{run}-generator" / "generator.json").read_text())
        assert meta["augment"]["ratio"] == 0.5
        assert (generator["kind"], generator["window"]) == (kind, 16), "the model's window"
        assert generator["training"]["data"]["rows"] <= rows, "the generator saw only the model's fit rows"
    text = (out / "report.md").read_text()
    assert f"from a {kind} generator trained by `edgevae train-generator` on the model's own fit rows" in text
    assert "Deployment fits the first 10% of anomaly-free.csv." in text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fit-fraction", "0"], "--fit-fraction must be > 0 and <= 1, got 0.0"),
        (["--augment", "gan", "--augment-ratio", "-1"], "--augment-ratio must be > 0, got -1.0"),
        (["--generator-flags", "--steps 5"], "--augment-ratio and --generator-flags need --augment gan|diffusion"),
    ],
)
def test_bad_augmentation_flags_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    from edgevae.cli.main import main

    assert main(["evaluate", "--data", str(SKAB), "--out", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_an_evaluation_does_not_log_every_training_and_export(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    from edgevae.cli.main import main

    args = ["evaluate", "--data", str(SKAB), "--out", str(tmp_path), "--max-files", "2", "--no-plots"]
    with caplog.at_level(logging.INFO):
        assert main([*args, "--precision", "fp32", "--train-flags", "--epochs 1 --window 16"]) == 0
    noisy = [r for r in caplog.records if r.levelno <= logging.INFO]
    assert noisy == [], [f"{r.name}: {r.getMessage()}" for r in noisy[:5]]
    assert "# SKAB detection quality" in capsys.readouterr().out
