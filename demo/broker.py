"""Start a throwaway MQTT broker on a free loopback port, for the demo and the tests: mosquitto, else amqtt."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
INSTALL_MOSQUITTO = "install it with `make broker` or `apt-get install mosquitto` (Debian's package)"
INSTALL_AMQTT = "`pip install 'edgevae[demo]'` for amqtt, a pure-Python broker"


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    kind: str  # "mosquitto" or "amqtt"
    protocol: Literal["5", "3.1.1"] = "5"  # the newest MQTT version it speaks, as the agent's mqtt.protocol

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def amqtt_installed() -> bool:
    return importlib.util.find_spec("amqtt") is not None


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if Path(p).is_file()), None)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            msg = f"the broker exited with code {process.returncode} before accepting connections"
            raise RuntimeError(msg)
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    msg = f"nothing accepted connections on {host}:{port} within {timeout:.0f} s"
    raise TimeoutError(msg)


@contextmanager
def start_broker(host: str = "127.0.0.1", prefer: Literal["auto", "mosquitto", "amqtt"] = "auto") -> Iterator[Broker]:
    """Run a broker on a free port until the block exits: mosquitto when installed ("auto") or required
    ("mosquitto"); otherwise amqtt, a pure-Python MQTT 3.1.1 broker ("amqtt", or "auto" without mosquitto).

    The broker's `protocol` is the newest MQTT version it speaks, the agent's `mqtt.protocol` to use with it.
    """
    if prefer not in ("auto", "mosquitto", "amqtt"):
        msg = f"prefer must be 'auto', 'mosquitto' or 'amqtt', not {prefer!r}"
        raise ValueError(msg)
    binary = None if prefer == "amqtt" else find_mosquitto()
    if binary is None and prefer == "mosquitto":
        msg = f"mosquitto is not installed: {INSTALL_MOSQUITTO}"
        raise RuntimeError(msg)
    if binary is not None:
        logger.info("using mosquitto (%s)", binary)
        with _mosquitto(binary, host) as broker:
            yield broker
        return
    if not amqtt_installed():
        why = "amqtt is not installed" if prefer == "amqtt" else "neither mosquitto nor amqtt is installed"
        msg = f"no MQTT broker to run: {why}. {INSTALL_MOSQUITTO}, or {INSTALL_AMQTT}"
        raise RuntimeError(msg)
    why_not = "not requested" if prefer == "amqtt" else "not found"
    logger.info("using amqtt, which speaks MQTT 3.1.1 only (mosquitto %s)", why_not)
    with _amqtt(host) as broker:
        yield broker


@contextmanager
def _mosquitto(binary: str, host: str) -> Iterator[Broker]:
    port = free_port(host)
    with tempfile.TemporaryDirectory(prefix="edgevae-broker-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        # Nagle's algorithm on loopback adds tens of milliseconds to every alert; turn it off.
        conf.write_text(
            f"listener {port} {host}\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n"
            "max_queued_messages 100000\n"
        )
        broker = Broker(host, port, "mosquitto", "5")
        with _serving([binary, "-c", str(conf)], Path(tmp), broker):
            yield broker


@contextmanager
def _amqtt(host: str) -> Iterator[Broker]:
    # In a child process, like mosquitto: amqtt's asyncio loop, threads and warnings stay out of this one.
    port = free_port(host)
    code = f"from edgevae.demo.broker import serve_amqtt; serve_amqtt({host!r}, {port})"
    broker = Broker(host, port, "amqtt", "3.1.1")
    with (
        tempfile.TemporaryDirectory(prefix="edgevae-broker-") as tmp,
        _serving([sys.executable, "-c", code], Path(tmp), broker),
    ):
        yield broker


@contextmanager
def _serving(command: list[str], tmp: Path, broker: Broker) -> Iterator[Broker]:
    """Run the broker process until the block exits; its output goes to a file, shown if it fails to start."""
    log_path = tmp / f"{broker.kind}.log"
    # A file, not a pipe: a pipe nobody reads would fill up and stall the broker.
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_for_port(broker.host, broker.port, timeout=20.0, process=process)
            except (RuntimeError, TimeoutError) as exc:
                msg = f"{exc}; {broker.kind} said:\n{log_path.read_text(errors='replace')[-2000:]}"
                raise RuntimeError(msg) from exc
            yield broker
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serve_amqtt(host: str, port: int) -> None:
    """Serve MQTT 3.1.1 with amqtt on host:port, anonymous, until SIGTERM or SIGINT (the child of `_amqtt`)."""
    from amqtt.broker import Broker as AmqttBroker

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        # Only anonymous access: no $SYS topics and no packet logging, which the tests and the demo never read.
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }

    async def serve() -> None:
        broker = AmqttBroker(config)
        await broker.start()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await broker.shutdown()

    asyncio.run(serve())
