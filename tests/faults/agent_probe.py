"""Run the real agent as a child process and watch it: its retained status and stats, its log and its memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_fixtures import Collector, Names, Publisher, agent_document, agent_process, to_toml

from edgevae.demo.broker import Broker

SCALE_ENV = "EDGEVAE_FAULTS_SCALE"
SCALES = ("quick", "full")
FIGURES_DIR = Path(__file__).resolve().parents[2] / "build" / "faults"
KIB_PER_MIB = 1024


def scale() -> str:
    """`quick` (the default, for every test run) or `full` (the long run), from $EDGEVAE_FAULTS_SCALE."""
    value = os.environ.get(SCALE_ENV, "quick") or "quick"
    if value not in SCALES:
        msg = f"${SCALE_ENV} must be one of {SCALES}, got {value!r}"
        raise ValueError(msg)
    return value


def write_figures(name: str, figures: dict[str, Any]) -> Path:
    """Write `figures` to build/faults/<name>.json and print the scalar ones (`pytest -s` shows them), so that
    a run leaves its measurements behind."""
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    path = FIGURES_DIR / f"{name}.json"
    path.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    shown = {key: value for key, value in figures.items() if not isinstance(value, (list, tuple))}
    print(f"{path}: {json.dumps(shown, sort_keys=True)}")
    return path


# --- memory -----------------------------------------------------------------------------------------------


def read_rss(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a process in KiB, or None once it has exited (a zombie has no Vm* lines)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    if "VmRSS" not in fields or "VmHWM" not in fields:
        return None
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process, in seconds; None once it has exited and been reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in field 2 is in parentheses and may hold spaces: count fields after its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class RssSample:
    t: float  # seconds since the sampler started
    rss_kib: int
    hwm_kib: int  # the kernel's high-water mark of RSS: the true peak, even between two samples


class RssSampler:
    """A thread that reads a process's RSS every `interval_s` until stopped or the process exits."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[RssSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def start(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def sample(self) -> RssSample | None:
        """Read now, outside the schedule (to mark a moment such as the end of warm-up); None if it exited."""
        got = read_rss(self.pid)
        if got is None:
            return None
        sample = RssSample(round(time.monotonic() - self._t0, 3), *got)
        with self._lock:
            self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.sample() is None:
                return

    def _all(self) -> list[RssSample]:
        with self._lock:
            if not self.samples:
                msg = f"no RSS sample of pid {self.pid}: it exited before the first one"
                raise RuntimeError(msg)
            return list(self.samples)

    @property
    def end_kib(self) -> int:
        return self._all()[-1].rss_kib

    @property
    def peak_kib(self) -> int:
        return max(max(s.rss_kib, s.hwm_kib) for s in self._all())

    def series(self) -> list[tuple[float, int]]:
        """(seconds, RSS KiB) of every sample."""
        return [(s.t, s.rss_kib) for s in self._all()]


def mib(kib: int) -> float:
    return round(kib / KIB_PER_MIB, 1)


# --- the agent ---------------------------------------------------------------------------------------------


@dataclass
class RunningAgent:
    """An agent child process with a subscriber on everything it publishes and a sampler of its RSS."""

    proc: subprocess.Popen[bytes]
    config_file: Path
    names: Names
    collector: Collector
    rss: RssSampler
    online_kib: int = 0  # RSS when it said online: model loaded and warmed up, connected

    @property
    def log_file(self) -> Path:
        return self.config_file.with_suffix(".log")

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_s(self) -> float:
        """CPU seconds the agent has used so far (0.0 once it has exited)."""
        return cpu_seconds(self.proc.pid) or 0.0

    def stats(self) -> dict[str, Any] | None:
        """The latest stats message, or None before the first."""
        published = self.collector.on(self.names.stats)
        return published[-1].json() if published else None

    def all_stats(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.collector.on(self.names.stats)]

    def wait_stats(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0, what: str = ""
    ) -> dict[str, Any]:
        """Wait until the latest stats message satisfies predicate, and return it. Fails at once if the agent
        exits, rather than waiting out the timeout."""

        def latest(messages: list[Any]) -> dict[str, Any] | None:
            if not self.alive():
                msg = f"the agent exited with code {self.proc.returncode} while waiting for {what or 'stats'}"
                raise AssertionError(msg)
            for m in reversed(messages):
                if m.topic == self.names.stats:
                    stats: dict[str, Any] = m.json()
                    return stats if predicate(stats) else None
            return None

        found: dict[str, Any] = self.collector.wait_for(latest, timeout, what or "matching stats")
        return found

    def fresh_stats(self, timeout: float = 30.0) -> dict[str, Any]:
        """The first stats message made after this call: it counts every message the agent handled before."""
        now = time.time()
        return self.wait_stats(lambda s: s["time"] > now, timeout, "stats made after now")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, as systemd stops it; returns the exit code (0 is a clean stop)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def write_config(tmp_path: Path, broker: Broker, bundle: Path, names: Names, **sections: dict[str, Any]) -> Path:
    config = tmp_path / f"{names.agent_id}.toml"
    config.write_text(to_toml(agent_document(broker, bundle, names, **sections)))
    return config


@contextmanager
def running_agent(
    tmp_path: Path,
    broker: Broker,
    bundle: Path,
    names: Names,
    online_timeout: float = 30.0,
    rss_interval_s: float = 0.2,
    **sections: dict[str, Any],
) -> Iterator[RunningAgent]:
    """Start `python -m edgevae.agent` with agent_document(**sections) and yield it once it has said `online`
    (published live, not a retained one left by an earlier agent); killed on exit if still running."""
    config = write_config(tmp_path, broker, bundle, names, **sections)
    collector = Collector(broker, [f"{names.prefix}/#"])
    try:
        with agent_process(config) as proc:
            rss = RssSampler(proc.pid, rss_interval_s).start()
            agent = RunningAgent(proc, config, names, collector, rss)
            try:
                collector.wait_for(
                    lambda ms: (
                        any(m.topic == names.status and m.payload == b"online" and not m.retain for m in ms)
                        or not agent.alive()
                    ),
                    online_timeout,
                    "the agent to say online",
                )
                online = rss.sample()
                if online is None or not agent.alive():
                    msg = f"the agent exited with code {proc.poll()} at start:\n{agent.log_text()}"
                    raise AssertionError(msg)
                agent.online_kib = online.rss_kib
                yield agent
            finally:
                rss.stop()
    finally:
        collector.close()


def publish_all(publisher: Publisher, messages: Iterable[tuple[str, bytes]], timeout: float = 30.0) -> int:
    """Publish QoS 1 in order, across any topics, then wait until the broker has acknowledged every one."""
    infos = [publisher.client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(timeout)
    return len(infos)
