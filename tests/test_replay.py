"""`edgevae replay`: a CSV published as a sensor would, over a real broker; bad input says what is wrong in
one line."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from agent_fixtures import Collector

from edgevae.agent.table import Table, write_table
from edgevae.cli.main import main
from edgevae.demo.broker import Broker


@pytest.fixture
def table(tmp_path: Path) -> Path:
    rows = 25
    values = np.stack([np.arange(rows) * 1.0, np.arange(rows) * 2.0], axis=1)
    path = tmp_path / "pump.csv"
    write_table(Table(str(path), 1_700_000_000.0 + np.arange(rows), values, ("flow", "temp"), None), path)
    return path


def test_replay_publishes_every_row_on_the_devices_topic(
    table: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    device = f"pump-{uuid.uuid4().hex[:6]}"
    collector = Collector(broker, [f"sensors/{device}/data"])
    try:
        assert main(["replay", str(table), "--broker", broker.url, "--device", device, "--batch", "10"]) == 0
        messages = collector.wait_for(lambda ms: ms if len(ms) == 3 else None, 10, "three messages")
    finally:
        collector.close()
    readings = [r for m in messages for r in json.loads(m.payload)["readings"]]
    assert [r["ts"] for r in readings] == [1_700_000_000.0 + i for i in range(25)]
    assert readings[3]["values"] == {"flow": 3.0, "temp": 6.0}
    assert capsys.readouterr().out == f"replayed 25 readings of {table} in 3 messages on sensors/{device}/data\n"


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (["--device", "p1", "--broker", "mqtt://127.0.0.1:1"], 1, "cannot connect to mqtt://127.0.0.1:1: "),
        (["--device", "p1", "--broker", "http://127.0.0.1"], 2, "--broker 'http://127.0.0.1': expected mqtt://"),
        (["--device", "a/b"], 2, "--device 'a/b': expected one topic level, without '/', '+' or '#'"),
        (["--device", "p1", "--channel", "pressure"], 2, "--channel pressure: not in"),
        (["--device", "p1", "--rate", "-1"], 2, "--rate must be >= 0 and --batch >= 1, got -1.0 and 1"),
    ],
)
def test_bad_input_is_one_line(
    table: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, line: str
) -> None:
    assert main(["replay", str(table), *args]) == code
    err = capsys.readouterr().err
    assert err.startswith(f"edgevae replay: error: {line}"), err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "none.csv"), "--device", "p1"]) == 3
    assert capsys.readouterr().err == f"edgevae replay: error: {tmp_path / 'none.csv'}: no such file\n"


def test_the_module_entry_point_is_the_same_command(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgevae.agent.replay import main as module_main

    assert module_main([str(table), "--device", "p1", "--broker", "mqtt://127.0.0.1:1"]) == 1
    assert "edgevae replay: error: cannot connect" in capsys.readouterr().err
