"""Replay a sensor table to MQTT in the agent's payload format, paced like live sensors: `edgevae replay`."""

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
from edgevae.agent.table_options import add_read_arguments, read_options_from_args
from edgevae.core.errors import ConfigError, DataError, EdgeVAEError

# Where `--device ID` publishes: the agent's default subscription is sensors/+/data.
DEVICE_TOPIC = "sensors/{device}/data"


class BrokerUnreachable(EdgeVAEError):
    """The broker refused or did not answer the connection."""


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
    if url.scheme not in ("mqtt", "mqtts"):
        msg = f"--broker {broker!r}: expected mqtt://host[:port] or mqtts://host[:port]"
        raise ConfigError(msg)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if url.scheme == "mqtts":
        client.tls_set()
    try:
        client.connect(url.hostname or "localhost", url.port or (8883 if url.scheme == "mqtts" else 1883))
    except (OSError, ValueError) as exc:  # refused, unknown host, TLS handshake
        msg = f"cannot connect to {broker}: {exc}"
        raise BrokerUnreachable(msg, remedy="is the broker running, and is this its address?") from exc
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `edgevae replay`."""
    parser.add_argument("table", help="CSV with a timestamp column and the channels")
    parser.add_argument("--broker", default="mqtt://localhost:1883", help="mqtt://host[:port] (default: %(default)s)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", help=f"the sensor's device id: publishes on {DEVICE_TOPIC}")
    target.add_argument("--topic", help="the topic to publish on, e.g. plant/pump1/data")
    parser.add_argument("--rate", type=float, default=0.0, help="readings per second; 0: as fast as possible")
    parser.add_argument("--batch", type=int, default=1, help="readings per message (default: 1)")
    parser.add_argument("--channel", action="append", help="publish only this channel; repeatable (default: all)")
    add_read_arguments(parser)


def run_from_args(args: argparse.Namespace) -> int:
    """Replay as the flags say; errors are EdgeVAEErrors with one line to print."""
    if args.rate < 0 or args.batch < 1:
        msg = f"--rate must be >= 0 and --batch >= 1, got {args.rate} and {args.batch}"
        raise ConfigError(msg)
    if args.device is not None and ("/" in args.device or not args.device or set("+#") & set(args.device)):
        raise ConfigError(f"--device {args.device!r}: expected one topic level, without '/', '+' or '#'")
    try:
        table = read_table(args.table, read_options_from_args(args))
    except FileNotFoundError as exc:
        raise DataError(f"{args.table}: no such file") from exc
    unknown = sorted(set(args.channel or ()) - set(table.channels))
    if unknown:
        msg = f"--channel {', '.join(unknown)}: not in {args.table} (its channels: {', '.join(table.channels)})"
        raise ConfigError(msg)
    topic = args.topic or DEVICE_TOPIC.format(device=args.device)
    try:
        sent = replay(table, args.broker, topic, args.rate, args.batch, args.channel)
    except TimeoutError as exc:
        raise BrokerUnreachable(str(exc)) from exc
    print(f"replayed {table.rows} readings of {args.table} in {sent} messages on {topic}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m edgevae.agent.replay`: `edgevae replay` under its older name."""
    parser = argparse.ArgumentParser(prog="edgevae replay", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_from_args(args)
    except EdgeVAEError as exc:
        print(f"edgevae replay: error: {exc.describe()}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
