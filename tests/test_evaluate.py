"""`edgevae evaluate` on a few real SKAB files: both protocols, both precisions, the report on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training import metrics
from training.evaluate import EvalConfig, evaluate, labelled_files, summarize
from training.report import write_report

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
    from agent.table import read_table

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
