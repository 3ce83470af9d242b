"""The flags of `edgevae repo ...` and `edgevae publish`, and the commands; the work is in edgevae.export.repo_*.

Each command imports its module only when it runs. Passwords never travel as flags: `--mqtt-password-file`,
or the `mqtt-password` credential systemd hands over in $CREDENTIALS_DIRECTORY.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from edgevae.core.errors import ConfigError

CREDENTIAL = "mqtt-password"


def add_repo_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="repo_command", required=True, metavar="ACTION")
    init = actions.add_parser("init", help="create a repository with new keys (root keys to move offline)")
    add_repo_flag(init)
    init.add_argument("--root-keys", type=int, default=3, help="number of root keys (default: 3)")
    init.add_argument("--root-threshold", type=int, default=2, help="root keys needed to sign a new root (default: 2)")
    init.set_defaults(func=_init)
    status = actions.add_parser("status", help="role versions, expiry and keys; the releases devices can see")
    add_repo_flag(status)
    status.set_defaults(func=_status)
    rotate = actions.add_parser("rotate-key", help="replace a role's keys (needs the root threshold in keys/)")
    rotate.add_argument("role", choices=["root", "targets", "snapshot", "timestamp"], help="the role whose keys change")
    add_repo_flag(rotate)
    rotate.set_defaults(func=_rotate)
    refresh = actions.add_parser(
        "refresh-timestamp", help="re-sign timestamp (and renew snapshot/targets near expiry); the timer runs it"
    )
    add_repo_flag(refresh)
    add_mqtt_flags(refresh)
    refresh.set_defaults(func=_refresh)
    mirror = actions.add_parser("mirror", help="publish the repository to MQTT as retained messages")
    add_repo_flag(mirror)
    add_mqtt_flags(mirror, required=True)
    mirror.set_defaults(func=_mirror)


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    add_repo_flag(parser)
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder or .tar.gz from `edgevae export`")
    parser.add_argument("--fleet", action="append", default=[], metavar="GROUP", help="fleet group; repeatable")
    parser.add_argument("--device", action="append", default=[], metavar="ID", help="agent id; repeatable")
    parser.add_argument(
        "--hardware", action="append", default=[], metavar="ID", help="hardware id it is for; repeatable (default: any)"
    )
    add_mqtt_flags(parser)
    parser.set_defaults(func=_publish)


def add_repo_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, required=True, metavar="DIR", help="the repository folder")


def add_mqtt_flags(parser: argparse.ArgumentParser, required: bool = False, purpose: str = "") -> None:
    after = "" if required else " afterwards"
    text = purpose or f"mirror to this broker{after}"
    parser.add_argument("--mqtt", required=required, metavar="URL", help=f"{text}: mqtt[s]://host[:port]")
    parser.add_argument("--prefix", default="edgevae", help="topic prefix (mqtt.topic_prefix; default: edgevae)")
    parser.add_argument("--mqtt-username", default=None, metavar="USER", help="broker user name")
    parser.add_argument(
        "--mqtt-password-file",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"file holding the password (default: ${{CREDENTIALS_DIRECTORY}}/{CREDENTIAL})",
    )
    parser.add_argument(
        "--mqtt-ca", type=Path, default=None, help="CA certificate for mqtts:// (default: the system's)"
    )


def mqtt_password(args: argparse.Namespace) -> str | None:
    path: Path | None = args.mqtt_password_file
    if path is None and os.environ.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(os.environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL
        path = candidate if candidate.is_file() else None
    if path is None:
        return None
    try:
        return path.read_text().rstrip("\n")
    except OSError as exc:
        msg = f"cannot read the MQTT password file {path}: {exc.strerror}"
        raise ConfigError(msg) from None


def _mirror_if_asked(args: argparse.Namespace) -> None:
    if not args.mqtt:
        return
    from edgevae.export.repo_mirror import mirror

    result = mirror(args.repo, args.mqtt, args.prefix, args.mqtt_username, mqtt_password(args), args.mqtt_ca)
    print(result.summary())


def _init(args: argparse.Namespace) -> int:
    from edgevae.export.repository import init, root_key_files

    repo = init(args.repo, root_keys=args.root_keys, root_threshold=args.root_threshold)
    files = root_key_files(repo)
    print(f"repository created in {repo.path}")
    print(f"root: {len(files)} keys, any {args.root_threshold} of them sign a new root:")
    for path in files:
        print(f"  {path}")
    print(f"targets, snapshot, timestamp: one key each in {repo.keys_dir} (they stay: publishing signs with them)")
    print(
        "Move the root key files offline now, each to its own place: they are needed only to rotate keys. "
        f"To rotate, bring {args.root_threshold} of them back into {repo.keys_dir}."
    )
    print(f"Devices trust {repo.metadata_dir / '1.root.json'}: install it on them as their first root.")
    print(f"Serve {repo.metadata_dir}/ and {repo.targets_dir}/ only, never {repo.keys_dir}/.")
    return 0


def _status(args: argparse.Namespace) -> int:
    from edgevae.export.repo_status import status

    print(status(args.repo))
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from edgevae.export.repo_keys import short
    from edgevae.export.repository import rotate_key

    rotation = rotate_key(args.repo, args.role)
    old = ", ".join(short(k) for k in rotation.old_keyids)
    new = ", ".join(short(k) for k in rotation.new_keyids)
    print(f"{rotation.role}: keys {old} replaced by {new} in root version {rotation.root_version}")
    if rotation.role == "root":
        print("Move the new root key files offline now:")
        for path in rotation.new_key_files:
            print(f"  {path}")
        print("The old root key files were removed from keys/; their offline copies sign nothing devices accept.")
    return 0


def _refresh(args: argparse.Namespace) -> int:
    from edgevae.export.repository import refresh_timestamp

    timestamp = refresh_timestamp(args.repo)
    print(f"timestamp version {timestamp.version}, expires {timestamp.expires:%Y-%m-%d %H:%M} UTC")
    _mirror_if_asked(args)
    return 0


def _mirror(args: argparse.Namespace) -> int:
    _mirror_if_asked(args)
    return 0


def _publish(args: argparse.Namespace) -> int:
    from edgevae.export.repo_publish import publish

    published = publish(args.repo, args.bundle, fleet=args.fleet, devices=args.device, hardware=args.hardware)
    print(published.summary())
    _mirror_if_asked(args)
    return 0
