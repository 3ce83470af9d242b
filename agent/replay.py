"""Replay a sensor table to MQTT in the agent's payload format, paced like live sensors."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgevae.agent.readings import encode_payloads
from edgevae.agent.table import Table, read_table

logger = logging.getLogger(__name__)


def payloads(table: Table, batch: int = 1, channels: Sequence[str] | None = None) -> list[bytes]:
    """One message per `batch` rows: a single reading, or {"readings": [...]} when batch > 1."""
    names = list(channels) if channels is not None else list(table.channels)
    cols = [table.channels.index(c) for c in names]
    return encode_payloads(table.timestamps, table.values[:, cols], names, batch)


def replay(
    table: Table,
    broker: str,
    topic: str,
    rate_hz: float = 0.0,
    batch: int = 1,
    channels: Sequence[str] | None = None,
    qos: int = 1,
    timeout: float = 30.0,
) -> int:
    """Publish the table's rows on `topic` at `rate_hz` readings per second (0: as fast as possible).

    Returns the number of messages published; raises TimeoutError if the broker did not take them all.
    """
    url = urlsplit(broker)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if url.scheme == "mqtts":
        client.tls_set()
    client.connect(url.hostname or "localhost", url.port or (8883 if url.scheme == "mqtts" else 1883))
    client.loop_start()
    messages = payloads(table, batch, channels)
    infos = []
    started = time.monotonic()
    try:
        for i, payload in enumerate(messages):
            if rate_hz > 0:
                lag = started + i * max(batch, 1) / rate_hz - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
            infos.append(client.publish(topic, payload, qos=qos))
        deadline = time.monotonic() + timeout
        for info in infos if qos > 0 else []:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                msg = f"the broker did not acknowledge all {len(messages)} messages within {timeout} s"
                raise TimeoutError(msg)
    finally:
        client.disconnect()
        client.loop_stop()
    logger.info("replayed %d rows of %s in %d messages on %s", table.rows, table.path, len(messages), topic)
    return len(messages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgevae.agent.replay", description=__doc__)
    parser.add_argument("table", help="CSV with a timestamp column and the channels")
    parser.add_argument("--broker", default="mqtt://localhost:1883", help="mqtt://host[:port] (default: %(default)s)")
    parser.add_argument("--topic", required=True, help="topic to publish on, e.g. sensors/pump1/data")
    parser.add_argument("--rate", type=float, default=0.0, help="readings per second; 0: as fast as possible")
    parser.add_argument("--batch", type=int, default=1, help="readings per message (default: 1)")
    parser.add_argument("--channel", action="append", help="publish only this channel; repeatable (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    replay(read_table(args.table), args.broker, args.topic, args.rate, args.batch, args.channel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
