"""Control over MQTT, in the zigbee2mqtt style: a request on `<base>/request/<action>` is answered on
`<base>/response/<action>` (or on MQTT 5's response topic, with its correlation data, when that lies
under `<base>/response/`) with
`{"status": "ok", "data": {...}}` or `{"status": "error", "error": "..."}`, echoing the request's
`transaction` field.

Actions: `acknowledge` an open alert, `mute` a device for a time (`unmute` ends it), ask for `stats` or
a detection `selftest` now. Who may send them is the broker's ACL to decide (docs/agent.md).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgevae.agent.device_state import Acknowledgement, DeviceStates
from edgevae.agent.inbox import Request
from edgevae.agent.topics import Topics

logger = logging.getLogger(__name__)

ACTIONS = ("acknowledge", "mute", "unmute", "stats", "selftest")
MAX_REQUEST_BYTES = 4096
MAX_MUTE_S = 30 * 24 * 3600.0  # a mute longer than a month is a mistake, or a device to decommission
MAX_TEXT = 256


class Refused(Exception):
    """The request cannot be done; the message says why, for the response."""


@dataclass(frozen=True)
class Response:
    topic: str
    payload: bytes
    correlation: bytes | None


class Controller:
    def __init__(
        self,
        topics: Topics,
        states: DeviceStates,
        acknowledge: Callable[[str, Acknowledgement], None],
        mute: Callable[[str, float], None],
        stats: Callable[[], dict[str, Any]],
        selftest: Callable[[], bool],
    ) -> None:
        self.topics = topics
        self.states = states
        self._acknowledge = acknowledge  # keeps the acknowledgement with the alert's durable record
        self._mute_device = mute  # and the mute in the state database
        self._stats = stats
        self._selftest = selftest  # False when the self-test is disabled
        self.counts: Counter[str] = Counter()  # ok, refused

    def handle(self, request: Request) -> Response:
        transaction: Any = None
        try:
            body = self._body(request)
            transaction = body.pop("transaction", None)
            data = self._do(request.action, body)
            answer: dict[str, Any] = {"status": "ok", "data": data}
            self.counts["ok"] += 1
            logger.info("request %s done: %s", request.action, json.dumps(data)[:200])
        except Refused as exc:
            answer = {"status": "error", "error": str(exc)}
            self.counts["refused"] += 1
            logger.warning("request %s refused: %s", request.action[:64], exc)
        if transaction is not None:
            answer["transaction"] = transaction
        topic = self.topics.response(_safe_level(request.action))
        if _inside(request.response_topic, f"{self.topics.base}/response/"):
            topic = str(request.response_topic)
        payload = json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()
        return Response(topic, payload, request.correlation)

    def _body(self, request: Request) -> dict[str, Any]:
        if len(request.payload) > MAX_REQUEST_BYTES:
            raise Refused(f"request of {len(request.payload)} bytes; expected at most {MAX_REQUEST_BYTES}")
        if not request.payload.strip():
            return {}
        try:
            body = json.loads(request.payload)
        except (ValueError, UnicodeDecodeError):
            msg = "expected a JSON object (or an empty payload)"
            raise Refused(msg) from None
        if not isinstance(body, dict):
            raise Refused(f"expected a JSON object, got {type(body).__name__}")
        return body

    def _do(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        if action == "acknowledge":
            return self._acknowledge_alert(body)
        if action == "mute":
            return self._mute(body)
        if action == "unmute":
            device = _text(body, "device")
            self._mute_device(device, 0.0)
            return {"device": device, "muted_until": None}
        if action == "stats":
            return self._stats()
        if action == "selftest":
            if not self._selftest():
                msg = "the detection self-test is disabled (selftest.enabled = false)"
                raise Refused(msg)
            return {"started": True, "results_on": self.topics.agent_topic("health")}
        raise Refused(f"unknown action {action[:64]!r}; expected one of {', '.join(ACTIONS)}")

    def _acknowledge_alert(self, body: dict[str, Any]) -> dict[str, Any]:
        if "alert_id" in body:
            alert = self.states.find_alert(_text(body, "alert_id"))
            if alert is None:
                raise Refused(f"no open alert with id {body['alert_id']!r}")
        elif "device" in body:
            device = _text(body, "device")
            alert = self.states.open_alert(device)
            if alert is None:
                raise Refused(f"device {device!r} has no open alert")
        else:
            msg = "expected `alert_id` or `device`"
            raise Refused(msg)
        by = _text(body, "by", "operator")
        note = _text(body, "note", "") if body.get("note") else ""
        ack = Acknowledgement(alert.id, by, round(time.time(), 3), note)
        self._acknowledge(alert.device, ack)
        return {"device": alert.device, "alert_id": alert.id, "acknowledged": ack.to_dict()}

    def _mute(self, body: dict[str, Any]) -> dict[str, Any]:
        device = _text(body, "device")
        duration = body.get("for_s")
        if isinstance(duration, bool) or not isinstance(duration, int | float) or not math.isfinite(duration):
            raise Refused(f"`for_s`: expected a number of seconds, 0 < for_s <= {MAX_MUTE_S:.0f}, got {duration!r}")
        if not 0 < duration <= MAX_MUTE_S:
            raise Refused(f"`for_s`: expected 0 < for_s <= {MAX_MUTE_S:.0f} seconds, got {duration!r}")
        until = round(time.time() + float(duration), 3)
        self._mute_device(device, until)
        return {"device": device, "muted_until": until}


def _text(body: dict[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if value is None:
        raise Refused(f"expected `{key}`")
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise Refused(f"`{key}`: expected a non-empty string of at most {MAX_TEXT} characters, got {value!r:.80}")
    return value


def _inside(topic: str | None, head: str) -> bool:
    """MQTT 5 response topics are honoured under the agent's own response tree only: anywhere else, a
    requester could make the agent publish on its alert or state topics, which consumers trust."""
    if not topic or not topic.startswith(head) or len(topic.encode()) > 1024:
        return False
    return not any(c in topic for c in "+#\x00")


def _safe_level(action: str) -> str:
    # Echoed into a topic: a level the request came on is already free of wildcards; bound its length.
    return action[:64] if action in ACTIONS else "error"
