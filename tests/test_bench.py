"""`edgevae bench --quick`: every part of the benchmark runs against a real broker, agent and model, and
reports what it measured. No figure is asserted: timings belong to the benchmark, not to the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgevae.cli.main import main


@pytest.mark.slow
def test_the_quick_benchmark_runs_every_part_and_accounts_for_every_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--quick", "--workdir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "quick" / "results.json").read_text())
    report = (tmp_path / "quick" / "report.md").read_text()
    assert report in capsys.readouterr().out
    rows = results["throughput"]
    bare = [r for r in rows if r["consumer"] == "bare paho subscriber"]
    agents = [r for r in rows if r["consumer"] == "agent"]
    assert [r["per_message"] for r in bare] == [1, 100]
    assert {(r["per_message"], r["precision"], r["stride"]) for r in agents} == {
        (m, p, s) for m in (1, 100) for p in ("fp32", "int8") for s in (1, 8)
    }
    for r in bare:
        assert r["received"] == results["scale"]["devices"] * (
            results["scale"]["rows_single"] if r["per_message"] == 1 else results["scale"]["rows_batched"]
        )
    for r in agents:
        assert r["lost"] == 0, r  # every reading scored or counted as dropped, with its reason
        assert r["readings_per_s"] > 0
        assert r["peak_rss_mib"] > 0
        assert r["start_to_online_s"] > 0
    assert [p["protocol"] for p in results["protocols"]] == ["5", "3.1.1"]
    for p in results["protocols"]:
        assert p["agent"]["lost"] == 0, p
        assert p["bare"]["received"] == results["scale"]["devices"] * results["scale"]["rows_single"]
    assert "## MQTT 5 against MQTT 3.1.1" in report
    assert [c["client"] for c in results["clients"]] == ["paho", "libmosquitto"]
    for c in results["clients"]:
        assert c["agent"]["lost"] == 0, c
        assert c["bare"]["received"] == results["scale"]["devices"] * results["scale"]["rows_single"]
    assert results["readings_client"].startswith("libmosquitto "), "the agent's default where the library loads"
    assert "## The readings' client: paho against libmosquitto" in report
    latency = results["latency"]
    assert latency["alerts"] == latency["faults"], "every step fault raised an alert whose window was matched"
    assert latency["alert_p99_ms"] >= latency["alert_p50_ms"] > 0
    assert set(results["offline"]) == {"fp32", "int8"}
    assert "| agent | 100 | int8 | 1 |" in report
    assert "publish → alert (10 alerts of 10 faults)" in report
