"""The flags of `edgevae rollout` and `edgevae fleet status`, and the commands themselves."""

from __future__ import annotations

import argparse
from typing import Any

from edgevae.cli.repo import add_mqtt_flags, add_repo_flag, mqtt_password


def add_rollout_arguments(parser: argparse.ArgumentParser) -> None:
    add_repo_flag(parser)
    parser.add_argument("--bundle", required=True, help="bundle folder or .tar.gz from `edgevae export`")
    parser.add_argument("--canary", required=True, metavar="GROUP", help="the group that takes the release first")
    parser.add_argument("--fleet", required=True, metavar="GROUP", help="the group it is promoted to")
    parser.add_argument(
        "--canary-devices",
        type=int,
        default=None,
        metavar="N",
        help="wait until N canaries are seen (default: all seen in 3 s)",
    )
    parser.add_argument(
        "--promote-on", choices=["committed", "probation"], default="committed",
        help="promote once every canary has committed (default) or is in probation",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=7200.0, metavar="S", help="give up after S seconds (default 7200)"
    )
    add_mqtt_flags(parser, required=True)
    parser.set_defaults(func=_rollout)


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="a table: agent, status, group, model, release, update step, last seen")
    status.add_argument("--wait", type=float, default=2.0, metavar="S", help="listen this long (default 2 s)")
    add_mqtt_flags(status, required=True)
    status.set_defaults(func=_status)


def _auth(args: argparse.Namespace) -> dict[str, Any]:
    return {"username": args.mqtt_username, "password": mqtt_password(args), "ca_file": args.mqtt_ca}


def _rollout(args: argparse.Namespace) -> int:
    from edgevae.export.rollout import rollout

    result = rollout(
        args.repo, args.bundle, args.canary, args.fleet, args.mqtt, args.prefix,
        canary_devices=args.canary_devices, promote_on=args.promote_on, timeout_s=args.timeout, **_auth(args),
    )  # fmt: skip
    print(result.summary())
    return 0


def _status(args: argparse.Namespace) -> int:
    from edgevae.export.fleet import fleet_status, status_table

    agents = fleet_status(args.mqtt, args.prefix, args.wait, **_auth(args))
    print(status_table(agents) if agents else f"no agent has published under {args.prefix}/ on {args.mqtt}")
    return 0
