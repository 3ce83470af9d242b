"""The parts a fault test breaks on purpose: a mosquitto that can be killed, paused and restarted on its port
with its persistence, a TCP link between the agent and the broker that can be cut one way or both, an
agent process that can be killed and started again, and an operator that tallies alerts by id.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from agent_fixtures import Names, to_toml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgevae.agent.topics import fleet_filter
from edgevae.demo.broker import Broker, find_mosquitto, free_port, wait_for_port


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout} s waiting for {what}"
            raise TimeoutError(msg)
        time.sleep(interval)


# --- the broker --------------------------------------------------------------------------------------------


class KillableBroker:
    """mosquitto on a fixed loopback port, persisting sessions and queued messages to disk every second (as
    docs/broker/mosquitto.conf advises), so that a kill -9 and a restart behave like a production broker's."""

    def __init__(self, workdir: Path) -> None:
        binary = find_mosquitto()
        if binary is None:
            msg = "mosquitto is not installed (make broker)"
            raise RuntimeError(msg)
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.broker = Broker("127.0.0.1", self.port, "mosquitto", "5")
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
            f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
            "max_queued_messages 100000\n"
            # Run as root, mosquitto switches to the user `mosquitto`, who cannot write a private temp folder.
            f"user {getpass.getuser()}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for_port("127.0.0.1", self.port, 20.0, self.process)

    def kill(self) -> None:
        """kill -9: no goodbye to any client, nothing saved since the last autosave."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(10)


@contextmanager
def killable_broker(workdir: Path) -> Iterator[KillableBroker]:
    broker = KillableBroker(workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# --- the network between the agent and the broker ---------------------------------------------------------


class Cable:
    """A TCP relay from a local port to the broker. `hold_upstream()` stops bytes from the agent reaching the
    broker (they are dropped, not delivered late) while the broker's still reach the agent; `cut()` closes
    every connection and refuses new ones; `mend()` restores both."""

    def __init__(self, target: Broker) -> None:
        self.target = target
        self.port = free_port()
        self.broker = Broker("127.0.0.1", self.port, target.kind, target.protocol)
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._hold_up = threading.Event()
        self._cut = threading.Event()
        self._closing = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="cable", daemon=True)
        self._thread.start()

    def hold_upstream(self) -> None:
        self._hold_up.set()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for conn in self._conns:
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def mend(self) -> None:
        self._hold_up.clear()
        self._cut.clear()

    def close(self) -> None:
        self._closing.set()
        self.cut()
        self._server.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection((self.target.host, self.target.port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream and self._hold_up.is_set():
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@contextmanager
def cable(target: Broker) -> Iterator[Cable]:
    c = Cable(target)
    try:
        yield c
    finally:
        c.close()


# --- the operator -------------------------------------------------------------------------------------------


class Operator:
    """A fleet operator's subscriber with a persistent session (clean start off), so that what the agent
    publishes while the operator reconnects waits for it at the broker. Tallies alerts and ends by id."""

    def __init__(self, broker: Broker, prefix: str, client_id: str) -> None:
        self.prefix = prefix
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
        client.on_connect = lambda c, *_: c.subscribe(fleet_filter(prefix, "alert"), qos=1)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        client.connect_async(broker.host, broker.port, clean_start=False, properties=props)
        client.loop_start()
        self.client = client
        wait_until(self._subscribed.is_set, 10, "the operator's SUBACK")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def by_id(self) -> dict[str, list[str]]:
        """alert id -> the types received for it, in order (duplicates kept)."""
        found: dict[str, list[str]] = defaultdict(list)
        with self._lock:
            for _, alert in self.messages:
                found[alert["id"]].append(alert["type"])
        return dict(found)

    def alerts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [a for _, a in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- the agent ---------------------------------------------------------------------------------------------

RAISED = re.compile(r"alert (\S+) on (\S+): score")
ENDED = re.compile(r"alert (\S+) on (\S+) ended")
CONTINUED = re.compile(r"alert (\S+) on (\S+) is still open")


class AgentProcess:
    """`python -m edgevae.agent` that can be killed and started again with the same config and state; every
    run's output is appended to one log."""

    def __init__(self, workdir: Path, broker: Broker, bundle: Path, names: Names, **sections: dict[str, Any]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {
            "mqtt": {
                "broker": broker.url,
                "topics": [f"{names.root}/+/data"],
                "topic_prefix": names.prefix,
                "client_id": names.agent_id,
                "reconnect_max_s": 1,
            },
            "model": {"bundle": str(bundle)},
            "state": {"directory": str(workdir / "state")},
            "stats": {"interval_s": 0.2},
        }
        for section, values in sections.items():
            doc.setdefault(section, {}).update(values)
        self.config = workdir / "agent.toml"
        self.config.write_text(to_toml(doc))
        self.log = workdir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        with self.log.open("ab") as log:
            log.write(f"--- run {self.runs + 1}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgevae.agent", "--config", str(self.config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.runs += 1

    def wait_connected(self, timeout: float = 30.0) -> None:
        runs = self.runs
        wait_until(lambda: self.text().split(f"--- run {runs}\n")[-1].count("connected to ") >= 1, timeout, "connected")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def raised(self) -> list[str]:
        """Ids of every alert any run of the agent raised (opened), from its log."""
        return [m.group(1) for m in RAISED.finditer(self.text())]

    def ended(self) -> list[str]:
        return [m.group(1) for m in ENDED.finditer(self.text())]

    def continued(self) -> list[str]:
        return [m.group(1) for m in CONTINUED.finditer(self.text())]


@contextmanager
def agent_process(
    workdir: Path, broker: Broker, bundle: Path, names: Names, **sections: dict[str, Any]
) -> Iterator[AgentProcess]:
    agent = AgentProcess(workdir, broker, bundle, names, **sections)
    agent.start()
    try:
        yield agent
    finally:
        if agent.alive():
            agent.kill()


# --- the sensors ---------------------------------------------------------------------------------------------


class SensorFeed:
    """Sensors that keep publishing (QoS 1) through whatever happens to the broker: paho holds what it cannot
    send and sends it on reconnect, as a gateway would."""

    def __init__(self, broker: Broker, names: Names) -> None:
        self.names = names
        self.readings = 0  # readings handed to paho
        self.messages = 0
        self._acked = 0
        self._lock = threading.Lock()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        client.reconnect_delay_set(min_delay=1, max_delay=1)
        client.on_publish = self._on_publish
        client.connect_async(broker.host, broker.port)
        client.loop_start()
        self.client = client

    def _on_publish(self, *_: Any) -> None:
        with self._lock:
            self._acked += 1

    def send(self, device: str, payloads: list[bytes], readings_each: int) -> None:
        for payload in payloads:
            self.client.publish(self.names.data(device), payload, qos=1)
            self.messages += 1
            self.readings += readings_each

    def all_acknowledged(self) -> bool:
        """True once the broker has acknowledged (PUBACK) every message sent."""
        with self._lock:
            return self._acked >= self.messages

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
