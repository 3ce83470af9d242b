"""The alert payload: versioned JSON, a stable id shared by an alert and its end, top channel shares."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from agent_fixtures import stream, timestamps

from edgevae.agent import alerts
from edgevae.agent.backends import create_backend
from edgevae.agent.bundle import load_bundle
from edgevae.agent.detector import AlertEvent, Detector


@pytest.fixture
def events(bundle: Path) -> list[AlertEvent]:
    loaded = load_bundle(bundle)
    detector = Detector(loaded.manifest, create_backend(loaded.model_path))
    rows = 120
    for ts, row in zip(timestamps(rows), stream(rows, fault=("flow", 40, 70)), strict=True):
        detector.push("pump7", float(ts), row)
    return detector.step().events


def test_alert_and_end_payloads(bundle: Path, events: list[AlertEvent]) -> None:
    manifest = load_bundle(bundle).manifest
    opened, ended = (json.loads(alerts.from_event(e, manifest, "edge-1").to_json()) for e in events)
    assert opened["schema"] == ended["schema"] == 1
    assert (opened["type"], ended["type"]) == ("alert", "end")
    assert opened["id"] == ended["id"]
    assert opened["device"] == "pump7"
    assert opened["agent"] == "edge-1"
    assert opened["model"] == {"id": "tiny-zscore", "version": "1.0.0"}
    assert opened["threshold"] == 1.0
    assert opened["score"] > 1.0
    assert opened["window_start"] < opened["window_end"]
    assert opened["top_channels"][0]["channel"] == "flow"
    assert len(opened["top_channels"]) == 3
    assert math.isclose(sum(c["share"] for c in opened["top_channels"]), 1.0, abs_tol=1e-3)
    assert "ended" not in opened
    assert "duration_s" not in opened
    assert ended["ended"] == ended["window_end"]
    assert ended["duration_s"] == pytest.approx(ended["ended"] - ended["started"])
    assert ended["peak_score"] >= opened["score"]
    assert ended["started"] == opened["started"]


def test_alert_id_is_stable_and_distinct(bundle: Path) -> None:
    manifest = load_bundle(bundle).manifest
    one = alerts.alert_id("edge-1", "pump7", manifest, 100.0)
    assert one == alerts.alert_id("edge-1", "pump7", manifest, 100.0)  # a re-sent alert dedupes downstream
    assert one != alerts.alert_id("edge-1", "pump8", manifest, 100.0)
    assert one != alerts.alert_id("edge-1", "pump7", manifest, 101.0)


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        ([1.0, 3.0, 0.0, 6.0], [("d", 0.6), ("b", 0.3), ("a", 0.1)]),  # ranked by share of the sum
        ([0.0, 0.0, 0.0, 0.0], [("a", 0.0), ("b", 0.0), ("c", 0.0)]),  # nothing to share: zeros, stable order
        ([np.nan, 1.0, np.inf, 1.0], [("b", 0.5), ("d", 0.5), ("a", 0.0)]),  # non-finite errors count as none
    ],
)
def test_top_channels(errors: list[float], expected: list[tuple[str, float]]) -> None:
    shares = alerts.top_channels(("a", "b", "c", "d"), np.array(errors, dtype=np.float32))
    assert [(s.channel, s.share) for s in shares] == expected
