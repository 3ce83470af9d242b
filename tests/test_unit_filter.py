"""The agent runs for real under the shipped unit's syscall filter, applied with libseccomp as systemd would.

Before, `SystemCallFilter=~@resources` killed the agent at start: numpy calls mbind and ONNX Runtime calls
sched_setaffinity, both in @resources. The start-up tests use `--kill`, so any call the unit denies kills the
agent (SIGSYS) even though the unit itself answers such calls with EPERM. The full run applies the unit as it
is (EPERM): run as root here, ONNX Runtime's sqlite cache in $HOME calls fchown (in @privileged), which it
does only as root and which the unit (DynamicUser, ProtectHome) never reaches.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from agent_fixtures import (
    T0,
    Collector,
    Names,
    Publisher,
    agent_document,
    batched_payloads,
    make_bundle,
    static_server,
    stream,
    to_toml,
)

from edgevae.demo.broker import Broker

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edgevae-agent.service"
LAUNCHER = ["/usr/bin/python3", str(REPO / "tests" / "tools" / "under_unit_filter.py")]


def _have_seccomp() -> str | None:
    probe = subprocess.run(["/usr/bin/python3", "-c", "import seccomp"], capture_output=True)
    if probe.returncode != 0:
        return "Debian's python3-seccomp is not installed (`make test` installs it)"
    if subprocess.run(["systemd-analyze", "--version"], capture_output=True).returncode != 0:
        return "systemd-analyze is not installed"
    return None


pytestmark = pytest.mark.skipif(_have_seccomp() is not None, reason=str(_have_seccomp()))


def _under_filter(*command: str, strict: bool = True) -> list[str]:
    return [*LAUNCHER, *(["--kill"] if strict else []), str(UNIT), "--", *command]


@contextmanager
def agent_under_filter(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The agent with `config` under the unit's filter as the unit applies it (EPERM), its output in `log`;
    killed at the end if still running."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _under_filter(sys.executable, "-m", "edgevae.agent", "--config", str(config), strict=False),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_the_harness_kills_a_denied_call() -> None:
    # sched_setscheduler is in @resources and not allowed back: the filter is real, not a no-op.
    code = "import os; os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))"
    result = subprocess.run(_under_filter("/usr/bin/python3", "-c", code), timeout=60)
    assert result.returncode == -signal.SIGSYS


def test_check_config_runs_under_the_filter(bundle: Path) -> None:
    command = [sys.executable, "-m", "edgevae.agent", "--bundle", str(bundle), "--broker", "mqtt://127.0.0.1:1"]
    result = subprocess.run(_under_filter(*command, "--check-config"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout


def test_the_agent_scores_and_stops_under_the_filter(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names, collector: Collector, publisher: Publisher
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(to_toml(agent_document(broker, bundle, names)))
    log = tmp_path / "agent.log"
    with agent_under_filter(config, log) as proc:
        collector.wait_payload(names.status, b"online", timeout=30)
        publisher.send(names.data("pump"), batched_payloads(stream(60, fault=("flow", 20, 40))))
        got = collector.wait_for(lambda ms: [m.json() for m in ms if m.topic == names.alert("pump")] or None)
        assert got[0]["top_channels"][0]["channel"] == "flow"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
    collector.wait_stopped(names)
    assert "Traceback" not in log.read_text()


def test_the_agent_takes_a_signed_update_under_the_filter(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names, collector: Collector, publisher: Publisher
) -> None:
    """Verifying, downloading, staging (fsync, rename), self-testing and swapping all pass the unit's filter."""
    from edgevae.export.repo_publish import publish
    from edgevae.export.repository import init

    init(tmp_path / "repo")
    with static_server(tmp_path / "repo") as url:
        updates = {
            "trusted_root": str(tmp_path / "repo" / "metadata" / "1.root.json"), "transport": "http", "url": url,
            "group": "canary", "poll_s": 0.3, "shadow_s": 0.5, "shadow_min_windows": 10, "probation_s": 0.0,
        }  # fmt: skip
        config = tmp_path / "agent.toml"
        config.write_text(to_toml(agent_document(broker, bundle, names, updates=updates)))
        log = tmp_path / "agent.log"
        with agent_under_filter(config, log) as proc:
            collector.wait_payload(names.status, b"online", timeout=30)
            publish(tmp_path / "repo", make_bundle(tmp_path / "v2", model_version="2.0.0"), fleet=["canary"])
            topic = names.agent_topic("update")
            ends = ("committed", "rejected", "rolled_back")
            deadline = time.monotonic() + 30
            for start in range(0, 40_000, 40):
                publisher.send(names.data("pump"), batched_payloads(stream(40), T0 + start))
                if any(m.json()["step"] in ends for m in collector.on(topic)) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            final = collector.latest_json(topic, lambda u: u["step"] in ends, 5)
            assert final["step"] == "committed", (final, log.read_text()[-3000:])
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text
    assert "Operation not permitted" not in text
