"""Start a throwaway MQTT broker on a free loopback port, for the demo and the tests."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgevae.demo.embedded_broker import EmbeddedBroker

logger = logging.getLogger(__name__)

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    kind: str

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


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
def start_broker(
    host: str = "127.0.0.1", prefer: Literal["auto", "mosquitto", "embedded"] = "auto"
) -> Iterator[Broker]:
    """Run a broker on a free port until the block exits: mosquitto when installed ("auto") or required
    ("mosquitto"), otherwise the stdlib one in training/embedded_broker.py ("embedded", or "auto" without it)."""
    if prefer not in ("auto", "mosquitto", "embedded"):
        msg = f"prefer must be 'auto', 'mosquitto' or 'embedded', not {prefer!r}"
        raise ValueError(msg)
    binary = None if prefer == "embedded" else find_mosquitto()
    if binary is None and prefer == "mosquitto":
        msg = "mosquitto is not installed: run `make broker` (installs Debian's mosquitto) or apt-get install mosquitto"
        raise RuntimeError(msg)
    if binary is None:
        with EmbeddedBroker(host) as embedded:
            logger.info(
                "using the embedded MQTT broker on %s:%s (mosquitto %s)",
                host,
                embedded.port,
                "not requested" if prefer == "embedded" else "not found",
            )
            yield Broker(host, embedded.port, "embedded")
        return
    logger.info("using mosquitto (%s)", binary)
    with _mosquitto(binary, host) as broker:
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
        log_path = Path(tmp) / "mosquitto.log"
        log = log_path.open("wb")
        # Logged to a file: a pipe nobody reads would fill up and stall the broker.
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_for_port(host, port, timeout=10.0, process=process)
            except (RuntimeError, TimeoutError) as exc:
                msg = f"{exc}; mosquitto said:\n{log_path.read_text(errors='replace')[-2000:]}"
                raise RuntimeError(msg) from exc
            yield Broker(host, port, "mosquitto")
        finally:
            log.close()
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
