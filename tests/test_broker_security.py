"""The agent against the shipped broker config (docs/broker/): TLS with a private CA, passwords and the ACL.

Every account gets only its topics, the agent still connects and alerts, and every way of being turned
away (untrusted CA, a name not in the certificate, a wrong password) is said with its cause.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from agent_fixtures import (
    STRIDE,
    WINDOW,
    Message,
    agent_process,
    batched_payloads,
    expected_alerts,
    stream,
    timestamps,
    to_toml,
)
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from secure_broker import CERT_NAME, HOST, SecureBroker, Tools, secure_broker

from edgevae.agent.config_file import load_config
from edgevae.agent.notify import Notifier
from edgevae.agent.service import Service
from edgevae.demo.broker import find_mosquitto

AGENT, OPERATOR, CONTROLLER, PUMP_1, PUMP_2 = "edgevae-agent", "operator", "controller", "pump-1", "pump-2"
NOT_AUTHORIZED = 0x87  # MQTT 5 reason code of a PUBACK for a publish the ACL denies
ROWS = 120


@pytest.fixture(scope="module")
def tools() -> Tools:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make the test CA and certificates with")
    mosquitto, mosquitto_passwd = find_mosquitto(), shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if mosquitto is None or not Path(mosquitto_passwd).is_file():
        pytest.fail("mosquitto and mosquitto_passwd are not installed: `make broker` (apt-get install mosquitto)")
    return Tools(mosquitto, mosquitto_passwd, openssl)


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {user: secrets.token_urlsafe(12) for user in (AGENT, OPERATOR, CONTROLLER, PUMP_1, PUMP_2)}


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str], tools: Tools) -> Iterator[SecureBroker]:
    with secure_broker(tmp_path_factory.mktemp("secure-broker"), passwords, tools) as broker:
        yield broker


class Account:
    """One broker account's MQTT 5 connection over TLS, keeping what the broker sends and answers."""

    def __init__(self, broker: SecureBroker, user: str, password: str, subscribe: tuple[str, ...] = ()) -> None:
        self.messages: list[Message] = []
        self._acks: dict[int, ReasonCode] = {}
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._refused: ReasonCode | None = None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:8]}", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.username_pw_set(user, password)
        self.client.tls_set(ca_certs=str(broker.ca))
        self._subscribe = subscribe
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.connect(CERT_NAME, broker.port)
        self.client.loop_start()
        if not self._ready.wait(10):
            msg = f"{user} was not connected and subscribed within 10 s"
            raise TimeoutError(msg)
        if self._refused is not None:
            msg = f"the broker refused {user}: {self._refused}"
            raise ConnectionRefusedError(msg)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        if reason.is_failure:
            self._refused = reason
            self._ready.set()
        elif self._subscribe:
            client.subscribe([(topic, 1) for topic in self._subscribe])  # ready at the SUBACK
        else:
            self._ready.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any) -> None:
        with self._cond:
            self._acks[mid] = reason
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def publish(self, topic: str, payloads: list[bytes] | bytes) -> list[ReasonCode]:
        """Publish QoS 1 in order; the broker's PUBACK reason code for each. The acks come back on the same
        connection after anything the broker sent this account before them."""
        items = [payloads] if isinstance(payloads, bytes) else payloads
        mids = [self.client.publish(topic, p, qos=1).mid for p in items]
        return [self.wait_for(partial(self._acks.get, mid), f"the PUBACK of {topic}") for mid in mids]

    def wait_for(self, value: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
        """Wait until value() is truthy (it runs under the lock that guards messages and acks)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (found := value()):
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({m.topic for m in self.messages})
                    msg = f"timed out after {timeout} s waiting for {what}; topics seen: {seen}"
                    raise TimeoutError(msg)
                self._cond.wait(left)
            return found

    def json_on(self, topic: str, predicate: Callable[[Any], bool] = lambda _: True) -> Any:
        """Wait for a JSON message on topic that satisfies predicate; the newest such one."""
        return self.wait_for(
            lambda: next((m.json() for m in reversed(self.messages) if m.topic == topic and predicate(m.json())), None),
            f"a matching message on {topic}",
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def account(secure: SecureBroker, passwords: dict[str, str]) -> Iterator[Callable[..., Account]]:
    opened: list[Account] = []

    def connect(user: str, *subscribe: str) -> Account:
        opened.append(Account(secure, user, passwords[user], subscribe))
        return opened[-1]

    yield connect
    for a in opened:
        a.close()


def agent_document(
    directory: Path, secure: SecureBroker, bundle: Path, agent_id: str, password: str, **mqtt_cfg: Any
) -> dict[str, Any]:
    """The agent's config with its own account over TLS; `mqtt_cfg` is written over the mqtt table."""
    password_file = directory / f"{agent_id}.password"
    password_file.write_text(password + "\n")
    mqtt_doc = {
        "broker": secure.url(),
        "client_id": agent_id,
        "username": AGENT,
        "password_file": str(password_file),
        "topics": ["sensors/+/data"],
        "topic_prefix": "edgevae",
        "tls": {"ca": str(secure.ca)},
        **mqtt_cfg,
    }
    return {"mqtt": mqtt_doc, "model": {"bundle": str(bundle)}, "stats": {"interval_s": 0.2}}


def agent_config(directory: Path, document: dict[str, Any]) -> Path:
    config = directory / f"{document['mqtt']['client_id']}.toml"
    config.write_text(to_toml(document))
    return config


@pytest.fixture
def agent(tmp_path: Path, secure: SecureBroker, bundle: Path, passwords: dict[str, str]) -> Iterator[str]:
    """The agent with its own account, running as a process; yields its agent id."""
    agent_id = f"edge-{uuid.uuid4().hex[:8]}"
    with agent_process(agent_config(tmp_path, agent_document(tmp_path, secure, bundle, agent_id, passwords[AGENT]))):
        yield agent_id


def test_over_tls_with_passwords_alerts_reach_the_operator_and_not_the_sensors(
    agent: str, account: Callable[..., Account]
) -> None:
    operator = account(OPERATOR, "edgevae/#")
    # mosquitto grants a sensor this subscription; the ACL then keeps every message on it from the sensor.
    sensor = account(PUMP_1, "edgevae/#")
    assert operator.wait_for(
        lambda: any(
            m.topic == f"edgevae/v1/{agent}/availability" and m.payload == b"online" for m in operator.messages
        ),
        "the agent's online status",
        timeout=30,
    )
    values = stream(ROWS, fault=("temp", 40, 70))
    assert not any(code.is_failure for code in sensor.publish("sensors/pump-1/data", batched_payloads(values)))

    expected = expected_alerts(values)
    got = operator.wait_for(
        lambda: len(alerts := [m.json() for m in operator.messages if m.topic.endswith("/alert")]) >= 2 and alerts,
        "an alert and its end",
    )
    ends = timestamps(ROWS)[[k * STRIDE + WINDOW - 1 for _, k in expected]]
    assert [(a["type"], a["device"], a["window_end"]) for a in got] == [
        (kind, PUMP_1, end) for (kind, _), end in zip(expected, ends.tolist(), strict=True)
    ]
    assert {m.topic for m in operator.messages if m.topic.endswith("/alert")} == {
        f"edgevae/v1/{agent}/devices/pump-1/alert"
    }
    # This round trip comes after the alerts on the sensor's connection: any that were sent to it are in.
    sensor.publish("sensors/pump-1/data", batched_payloads(stream(8), start=timestamps(ROWS + 1)[-1]))
    assert sensor.messages == []


def test_a_sensor_cannot_post_readings_as_another_device(agent: str, account: Callable[..., Account]) -> None:
    operator = account(OPERATOR, f"edgevae/v1/{agent}/#")
    operator.json_on(f"edgevae/v1/{agent}/stats")  # the agent is up and subscribed
    sensor = account(PUMP_1)
    [code] = sensor.publish("sensors/pump-2/data", batched_payloads(stream(8))[0])
    assert code.value == NOT_AUTHORIZED, code
    # Published after the refused one on the same connection, so the agent would have had that one first.
    sensor.publish("sensors/pump-1/data", batched_payloads(stream(ROWS)))
    stats = operator.json_on(f"edgevae/v1/{agent}/stats", lambda s: s["readings"] >= ROWS)
    assert (stats["readings"], stats["devices"]) == (ROWS, 1)


def test_an_operator_cannot_post_readings_or_alerts(agent: str, account: Callable[..., Account]) -> None:
    operator = account(OPERATOR, f"edgevae/v1/{agent}/#")
    operator.json_on(f"edgevae/v1/{agent}/stats")
    for topic in ("sensors/pump-1/data", "sensors/operator/data"):
        [code] = operator.publish(topic, batched_payloads(stream(8))[0])
        assert code.value == NOT_AUTHORIZED, (topic, code)
    # Acked (refused) before this is published: a refused reading that got through would be counted first.
    account(PUMP_1).publish("sensors/pump-1/data", batched_payloads(stream(ROWS)))
    stats = operator.json_on(f"edgevae/v1/{agent}/stats", lambda s: s["readings"] >= ROWS)
    assert (stats["readings"], stats["devices"]) == (ROWS, 1)


@pytest.mark.parametrize(
    ("user", "topic", "allowed"),
    [
        (PUMP_1, "sensors/pump-1/data", True),  # its own device
        (PUMP_1, "sensors/pump-2/data", False),  # another device
        (PUMP_1, "sensors/pump-1/other", False),  # its device, but not the readings topic
        (PUMP_1, "edgevae/v1/edge-1/devices/pump-1/alert", False),  # a forged alert
        (PUMP_1, "edgevae/v1/edge-1/request/mute", False),  # a sensor muting itself
        (AGENT, "edgevae/v1/edge-1/devices/pump-1/alert", True),
        (AGENT, "edgevae/v1/edge-1/stats", True),
        (AGENT, "sensors/pump-1/data", False),
        (AGENT, "sensors/edgevae-agent/data", False),  # the sensor pattern would allow it without the deny
        (OPERATOR, "edgevae/v1/edge-1/devices/pump-1/alert", False),
        (OPERATOR, "edgevae/v1/edge-1/availability", False),  # a forged online/offline
        (OPERATOR, "edgevae/v1/edge-1/request/mute", False),  # operators only read
        (CONTROLLER, "edgevae/v1/edge-1/request/mute", True),
        (CONTROLLER, "edgevae/v1/edge-1/devices/pump-1/state", False),  # a forged state
        (CONTROLLER, "sensors/controller/data", False),
        (OPERATOR, "sensors/pump-1/data", False),
        (OPERATOR, "sensors/operator/data", False),  # the sensor pattern would allow it without the deny
    ],
)
def test_who_may_publish_where(account: Callable[..., Account], user: str, topic: str, allowed: bool) -> None:
    [code] = account(user).publish(topic, b"{}")
    if allowed:
        assert not code.is_failure, code  # with nobody subscribed: "No matching subscribers", a success code
    else:
        assert code.value == NOT_AUTHORIZED, code


def wait_for_line(log: Path, marker: str, timeout: float = 30.0) -> str:
    """The first line of the log that contains marker, as soon as it is written."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        line = next((line for line in text.splitlines() if marker in line), None)
        if line is not None:
            return line
        if time.monotonic() > deadline:
            msg = f"no line with {marker!r} within {timeout} s; the log:\n{text[-3000:]}"
            raise TimeoutError(msg)
        time.sleep(0.05)


def refused(case: str, tmp_path: Path, secure: SecureBroker, bundle: Path, passwords: dict[str, str]) -> dict[str, Any]:
    """The agent's config for a case of REFUSALS: its own account, with one thing wrong."""
    agent_id, password = f"edge-{uuid.uuid4().hex[:8]}", passwords[AGENT]
    overrides: dict[str, Any] = {}
    if case == "wrong CA":
        overrides = {"tls": {"ca": str(secure.wrong_ca)}}
    elif case == "address not in the certificate":
        overrides = {"broker": secure.url(HOST)}
    elif case == "wrong password":
        password = "not-" + password
    return agent_document(tmp_path, secure, bundle, agent_id, password, **overrides)


# (what is wrong, the cause the agent must name)
REFUSALS = [
    ("wrong CA", "certificate verify failed: unable to get local issuer certificate"),
    ("address not in the certificate", f"certificate is not valid for '{HOST}'"),
    ("wrong password", "refused by the broker: Not authorized"),
]


@pytest.mark.parametrize(("case", "cause"), REFUSALS)
def test_a_refused_connection_is_logged_once_with_its_cause(
    tmp_path: Path, secure: SecureBroker, bundle: Path, passwords: dict[str, str], case: str, cause: str
) -> None:
    config = agent_config(tmp_path, refused(case, tmp_path, secure, bundle, passwords))
    with agent_process(config) as proc:
        line = wait_for_line(config.with_suffix(".log"), "cannot connect to")
        assert proc.poll() is None  # still running: paho keeps retrying
    log = config.with_suffix(".log").read_text()
    assert cause in line, line
    assert log.count("cannot connect to") == 1
    assert "connected to" not in log


@pytest.mark.parametrize(
    ("case", "cause"),
    REFUSALS,
)
# paho leaves the socket of a failed TLS handshake to the garbage collector (`_ssl_wrap_socket` does not
# close it), which in this process would fail the test as an unclosed-socket warning.
@pytest.mark.filterwarnings("ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning")
def test_while_refused_the_status_line_and_the_log_name_only_the_cause(
    tmp_path: Path,
    secure: SecureBroker,
    bundle: Path,
    passwords: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    case: str,
    cause: str,
) -> None:
    """`systemctl status` and the journal are where an operator looks first: while the agent retries, every
    status line and every warning says why it is not connected, not what paho did next."""
    caplog.set_level(logging.WARNING, logger="edgevae.agent.mqtt")
    notify = tmp_path / "notify"
    service = Service(
        load_config(refused(case, tmp_path, secure, bundle, passwords)), Notifier({"NOTIFY_SOCKET": str(notify)})
    )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(10)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), name="agent", daemon=True)
    thread.start()
    statuses: list[str] = []
    try:
        # One line at each stats interval (0.2 s): three span the first attempt and what follows it.
        while len(statuses) < 3:
            for field in sock.recv(4096).decode().splitlines():
                if field.startswith("STATUS=NOT CONNECTED") and "(connecting)" not in field:
                    statuses.append(field)
    finally:
        stop.set()
        thread.join(10)
        sock.close()
    assert not thread.is_alive(), "the agent did not stop within 10 s"
    assert all(cause in status for status in statuses), statuses
    said = [r.getMessage() for r in caplog.records if r.name == "edgevae.agent.mqtt"]
    assert said, "nothing logged"
    assert all(cause in line for line in said), said


def test_the_controller_account_gets_answers_to_its_requests(agent: str, account: Callable[..., Account]) -> None:
    controller = account(CONTROLLER, f"edgevae/v1/{agent}/response/#")
    account(OPERATOR, f"edgevae/v1/{agent}/#").json_on(f"edgevae/v1/{agent}/stats")  # the agent is subscribed
    [code] = controller.publish(f"edgevae/v1/{agent}/request/mute", b'{"device": "pump-2", "for_s": 60}')
    assert not code.is_failure
    answer = controller.json_on(f"edgevae/v1/{agent}/response/mute")
    assert answer["status"] == "ok"
    assert answer["data"]["device"] == "pump-2"
