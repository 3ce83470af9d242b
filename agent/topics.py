"""Every topic the agent publishes on or listens to, in one place, under a versioned tree.

    <prefix>/v1/<agent>/availability            online | offline (the broker's last will says offline too)
    <prefix>/v1/<agent>/offline_reason          why it is offline, when it is: connection_lost | stopped
    <prefix>/v1/<agent>/stats | health | update | drift
    <prefix>/v1/<agent>/devices/<device>/state  normal | anomalous, with the open alert (retained)
    <prefix>/v1/<agent>/devices/<device>/alert  an alert opens or ends (events, not retained)
    <prefix>/v1/<agent>/request/<action>        control requests in; answers on .../response/<action>

Agent topics are four levels deep and device topics six, so neither can collide with the other, and a
device name used by two agents lives under each agent. The version level lets a later layout run beside
this one while consumers move.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSION = "v1"
DEVICE_LEVEL = "devices"
AGENT_LEAVES = ("availability", "offline_reason", "stats", "health", "update", "drift")
DEVICE_LEAVES = ("state", "alert")


@dataclass(frozen=True)
class Topics:
    prefix: str
    agent: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{VERSION}/{self.agent}"

    def agent_topic(self, leaf: str) -> str:
        """An agent-level topic.

        >>> Topics("edgevae", "edge-1").agent_topic("stats")
        'edgevae/v1/edge-1/stats'
        """
        if leaf not in AGENT_LEAVES:
            msg = f"unknown agent topic {leaf!r}; expected one of {AGENT_LEAVES}"
            raise ValueError(msg)
        return f"{self.base}/{leaf}"

    @property
    def availability(self) -> str:
        return self.agent_topic("availability")

    @property
    def offline_reason(self) -> str:
        return self.agent_topic("offline_reason")

    def device(self, device: str, leaf: str) -> str:
        """A device-level topic, under the agent that scores the device.

        >>> Topics("edgevae", "edge-1").device("pump-2", "state")
        'edgevae/v1/edge-1/devices/pump-2/state'
        """
        if leaf not in DEVICE_LEAVES:
            msg = f"unknown device topic {leaf!r}; expected one of {DEVICE_LEAVES}"
            raise ValueError(msg)
        return f"{self.base}/{DEVICE_LEVEL}/{device}/{leaf}"

    def alert(self, device: str) -> str:
        return self.device(device, "alert")

    def state(self, device: str) -> str:
        return self.device(device, "state")

    @property
    def requests(self) -> str:
        """The filter the agent subscribes to for control requests."""
        return f"{self.base}/request/+"

    def request_action(self, topic: str) -> str | None:
        """The action of a request topic, or None for any other topic.

        >>> Topics("edgevae", "edge-1").request_action("edgevae/v1/edge-1/request/mute")
        'mute'
        """
        head = f"{self.base}/request/"
        if not topic.startswith(head) or "/" in topic[len(head) :]:
            return None
        return topic[len(head) :]

    def response(self, action: str) -> str:
        return f"{self.base}/response/{action}"


def fleet_filter(prefix: str, leaf: str) -> str:
    """The filter that matches `leaf` on every agent (agent leaves) or every device of every agent.

    >>> fleet_filter("edgevae", "alert")
    'edgevae/v1/+/devices/+/alert'
    >>> fleet_filter("edgevae", "availability")
    'edgevae/v1/+/availability'
    """
    if leaf in DEVICE_LEAVES:
        return f"{prefix}/{VERSION}/+/{DEVICE_LEVEL}/+/{leaf}"
    if leaf in AGENT_LEAVES:
        return f"{prefix}/{VERSION}/+/{leaf}"
    msg = f"unknown topic leaf {leaf!r}; expected one of {AGENT_LEAVES + DEVICE_LEAVES}"
    raise ValueError(msg)


def parse(prefix: str, topic: str) -> tuple[str, str, str] | None:
    """(agent, device or "", leaf) of a topic of this layout, or None.

    >>> parse("edgevae", "edgevae/v1/edge-1/devices/pump-2/alert")
    ('edge-1', 'pump-2', 'alert')
    >>> parse("edgevae", "edgevae/v1/edge-1/availability")
    ('edge-1', '', 'availability')
    """
    head = f"{prefix}/{VERSION}/"
    if not topic.startswith(head):
        return None
    levels = topic[len(head) :].split("/")
    if len(levels) == 2 and levels[1] in AGENT_LEAVES:
        return levels[0], "", levels[1]
    if len(levels) == 4 and levels[1] == DEVICE_LEVEL and levels[3] in DEVICE_LEAVES:
        return levels[0], levels[2], levels[3]
    return None
