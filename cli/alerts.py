"""`edgevae alerts`: follow the fleet's alerts, starting with what is open now.

On a terminal it is a live table (open alerts, then the latest ends), redrawn when something changes;
piped, one line per event; `--json` gives JSON lines; `--once` prints what is open now and exits.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from datetime import datetime, timezone
from typing import Any, TextIO

from edgevae.cli.repo import add_mqtt_flags, mqtt_password
from edgevae.core.errors import ConfigError

REDRAW_S = 1.0  # ages in the table tick even when nothing arrives
CLEAR = "\x1b[H\x1b[2J"


def add_alerts_arguments(parser: argparse.ArgumentParser) -> None:
    add_mqtt_flags(parser, required=True, purpose="the broker the agents publish to")
    parser.add_argument("--device", action="append", default=[], metavar="PATTERN", help="only these devices (glob)")
    parser.add_argument("--agent", action="append", default=[], metavar="PATTERN", help="only these agents (glob)")
    parser.add_argument(
        "--since", default="", metavar="WHEN",
        help="only alerts that started since: a duration (30m, 2h, 1d) or an ISO 8601 time",
    )  # fmt: skip
    parser.add_argument("--open", action="store_true", help="open alerts only (no ends)")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    parser.add_argument("--once", action="store_true", help="print what is open now and exit")
    parser.add_argument(
        "--wait", type=float, default=2.0, metavar="S", help="with --once: listen this long for it (default 2 s)"
    )
    parser.set_defaults(func=run)


def parse_since(text: str, now: float | None = None) -> float:
    """Epoch seconds from `30m`, `2h`, `1d`, `45s` or an ISO 8601 time (naive = UTC); "" is the beginning.

    >>> parse_since("2h", now=10_000.0)
    2800.0
    >>> parse_since("2026-01-01T00:00:00Z")
    1767225600.0
    """
    if not text:
        return 0.0
    now = time.time() if now is None else now
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * units[text[-1]]
    try:
        stamp = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        msg = f"--since: expected a duration such as 30m, 2h or 1d, or an ISO 8601 time, got {text!r}"
        raise ConfigError(msg) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def run(args: argparse.Namespace) -> int:
    from edgevae.agent.topics import fleet_filter
    from edgevae.export.alert_feed import AlertBoard, Filter
    from edgevae.export.mqtt_client import close, connect

    board = AlertBoard(args.prefix, Filter(tuple(args.device), tuple(args.agent), parse_since(args.since), args.open))
    inbox: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
    filters = [(fleet_filter(args.prefix, leaf), 1) for leaf in ("availability", "state", "alert")]

    def subscribe(client: Any) -> None:
        client.subscribe(filters)  # on every (re)connect: the retained states arrive again, and are merged

    client = connect(
        args.mqtt, args.mqtt_username, mqtt_password(args), args.mqtt_ca, 30.0, subscribe,
        lambda c, u, msg: inbox.put((msg.topic, bytes(msg.payload), bool(msg.retain))),
    )  # fmt: skip
    live = sys.stdout.isatty() and not args.json
    try:
        if args.once:
            _once(board, inbox, args.wait, args.json, sys.stdout)
        else:
            _follow(board, inbox, args.json, live, sys.stdout)
    except KeyboardInterrupt:
        pass
    finally:
        close(client)
    return 0


def _once(board: Any, inbox: queue.Queue[tuple[str, bytes, bool]], wait_s: float, as_json: bool, out: TextIO) -> None:
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            topic, payload, retained = inbox.get(timeout=left)
        except queue.Empty:
            break
        board.apply(topic, payload, retained)
    if as_json:
        for row in sorted(board.open.values(), key=lambda r: r.started):
            print(json.dumps(row.event("open", retained=True)), file=out)
    else:
        print(board.table(), file=out)


def _follow(board: Any, inbox: queue.Queue[tuple[str, bytes, bool]], as_json: bool, live: bool, out: TextIO) -> None:
    next_draw = 0.0
    while True:
        try:
            topic, payload, retained = inbox.get(timeout=REDRAW_S if live else None)
            events = board.apply(topic, payload, retained)
        except queue.Empty:
            events = []
        if live:
            if events or time.monotonic() >= next_draw:
                out.write(CLEAR + board.table() + "\n")
                out.flush()
                next_draw = time.monotonic() + REDRAW_S
            continue
        for event in events:
            print(json.dumps(event) if as_json else _line(event), file=out, flush=True)


def _line(event: dict[str, Any]) -> str:
    when = event.get("ended") if event["event"] == "end" else event.get("started")
    stamp = datetime.fromtimestamp(float(when or time.time()), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    top = ", ".join(f"{c.get('channel')} {float(c.get('share', 0)):.0%}" for c in event.get("top_channels", []))
    text = f"{stamp}  {event['event'].upper():<12} {event['agent']}/{event['device']}"
    if event["event"] == "end":
        text += f"  after {event.get('duration_s', 0):.0f} s ({event.get('reason', '')})"
    else:
        text += f"  score {event.get('score', 0):.3g}  {top}"
    if event.get("acknowledged"):
        text += f"  acknowledged by {event['acknowledged'].get('by', '?')}"
    return text + f"  [{event['alert_id']}]" + ("  (open at start)" if event.get("retained") else "")
