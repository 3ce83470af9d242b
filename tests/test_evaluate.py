"""`edgevae evaluate` on a few real SKAB files: both protocols, both precisions, the report on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevae.core import metrics
from edgevae.evaluation.evaluate import EvalConfig, evaluate, labelled_files, summarize
from edgevae.evaluation.report import write_report

SKAB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "SKAB" / "data"

pytestmark = pytest.mark.skipif(not SKAB.is_dir(), reason=f"SKAB data not found at {SKAB}")


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cfg = EvalConfig(data=SKAB, out=tmp_path_factory.mktemp("report"), max_files=2, epochs=3, window=16)
    return evaluate(cfg)


def test_files_are_found_in_skab_order() -> None:
    files = labelled_files(SKAB)
    assert len(files) == 34
    assert [f"{p.parent.name}/{p.stem}" for p in files[:3]] == ["valve1/0", "valve1/1", "valve1/2"]


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


def test_leaderboard_tests_only_rows_after_the_fit(document: dict) -> None:
    results = document["per_file"]["leaderboard"]["int8"]
    lengths = [len(r.labels) for r in results]
    from edgevae.agent.table import read_table

    rows = [len(read_table(p).timestamps) for p in labelled_files(SKAB)[:2]]
    assert lengths == [n - 400 for n in rows]
    deployment = document["per_file"]["deployment"]["int8"]
    assert [len(r.labels) for r in deployment] == rows


def test_trivial_detector_is_reported_beside_ours(document: dict) -> None:
    s = document["results"]["leaderboard"]["fp32"]
    labels = np.concatenate([r.labels for r in document["per_file"]["leaderboard"]["fp32"]])
    share = labels.mean()
    assert s["trivial_f1"] == pytest.approx(2 * share / (1 + share))
    assert s["trivial_far"] == 100.0


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


def test_summarize_pools_files_before_the_ratios(document: dict) -> None:
    results = document["per_file"]["deployment"]["fp32"]
    total = sum((r.confusion for r in results), metrics.Confusion())
    assert summarize(results)["far"] == pytest.approx(metrics.far(total))


@pytest.mark.parametrize(
    ("method", "score_rows", "train_ends", "holdout_ends"),
    [
        # training windows end in the 340 training rows; hold-out windows score only validation rows
        ("scaled-quantile", 8, (31, 339), (347, 399)),
        # scoring the whole window: hold-out windows lie wholly in the validation rows
        ("scaled-quantile", 0, (31, 339), (371, 399)),
        # other methods calibrate on every fit window, and the run's training sample is left alone
        ("quantile", 8, None, (31, 399)),
        ("pot", 8, None, (31, 399)),
    ],
)
def test_leaderboard_calibration_windows(
    tmp_path: Path, method: str, score_rows: int, train_ends: tuple[int, int] | None, holdout_ends: tuple[int, int]
) -> None:
    from edgevae.evaluation.evaluate import _calibrate_on_fit_rows

    untouched = np.full((5, 32, 2), -1.0, dtype=np.float32)
    np.savez_compressed(tmp_path / "calibration.npz", holdout=untouched, train_sample=untouched)
    # each row's value is its index, so a window's last value says which row it ends on
    values = np.repeat(np.arange(400.0)[:, None], 2, axis=1)
    cfg = EvalConfig(data=SKAB, out=tmp_path, threshold_method=method, score_rows=score_rows, splits=(0.85, 0.15, 0.0))
    _calibrate_on_fit_rows(tmp_path, values, cfg)
    with np.load(tmp_path / "calibration.npz") as cal:
        for key, ends in (("train_sample", train_ends), ("holdout", holdout_ends)):
            last = cal[key][:, -1, 0]
            if ends is None:
                assert np.array_equal(cal[key], untouched)
            else:
                assert (last.min(), last.max(), len(last)) == (ends[0], ends[1], ends[1] - ends[0] + 1)
                assert np.all(np.diff(last) == 1)


def test_leaderboard_thresholds_are_scaled_from_the_fit_rows(document: dict) -> None:
    assert document["config"]["threshold_method"] == "scaled-quantile"
    thresholds = [r.threshold for r in document["per_file"]["leaderboard"]["int8"]]
    assert all(np.isfinite(t) and t > 0 for t in thresholds)
