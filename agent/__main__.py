"""`edgevae-agent` and `python -m edgevae.agent`: run the edge daemon (exit codes below, and in docs/agent.md)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from edgevae.agent.bundle import load_bundle
from edgevae.agent.config import Config
from edgevae.agent.config_file import BadValue, InvalidConfig, example_toml, load_config, read_toml
from edgevae.agent.install import version
from edgevae.core.errors import BundleError, ConfigError, ModelLoadError

logger = logging.getLogger("agent")

# Exit codes:
#   0  stopped by SIGTERM or SIGINT, or --check-config found no problem
#   1  an unexpected failure (its traceback is on stderr)
#   2  bad flags or an invalid config (each problem printed as `key path: value: what was expected`)
#   3  the model bundle or its runtime could not be loaded
EXIT_OK, EXIT_CONFIG, EXIT_MODEL = 0, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgevae-agent",
        description="Score MQTT sensor streams with an edgevae model bundle and publish anomaly alerts.",
        epilog="Flags override the config file. Exit codes: 0 stopped, 1 failure, 2 bad config, 3 model not loaded.",
    )
    parser.add_argument("--version", action="version", version=f"edgevae-agent {version()}")
    parser.add_argument(
        "command",
        nargs="?",
        choices=["rollback"],
        help="rollback: go back to the model before the last update (the running agent does it within a second)",
    )
    # Where the settings come from.
    parser.add_argument("--config", metavar="FILE", help="TOML config file (see --print-config)")
    parser.add_argument("--check-config", action="store_true", help="validate the config and bundle, then exit")
    parser.add_argument("--print-config", action="store_true", help="print a config file with every default and exit")
    # The essentials, so that a first run needs no file.
    parser.add_argument("--bundle", metavar="PATH", help="model bundle folder or .tar.gz (model.bundle)")
    parser.add_argument("--backend", metavar="KEY", help="runtime, e.g. onnxruntime-cpu (model.backend.type)")
    parser.add_argument("--broker", metavar="URL", help="mqtt://host[:port] or mqtts://host[:port] (mqtt.broker)")
    parser.add_argument(
        "--topic",
        action="append",
        metavar="FILTER",
        help="sensor topic filter whose `+` level is the device id, e.g. sensors/+/data; repeatable (mqtt.topics)",
    )
    parser.add_argument("--prefix", metavar="PREFIX", help="first level of published topics (mqtt.topic_prefix)")
    parser.add_argument("--client-id", metavar="ID", help="MQTT client id and agent id (mqtt.client_id)")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="log level (log.level); default info"
    )
    return parser


def config_document(args: argparse.Namespace) -> dict[str, Any]:
    """The config file's content with the flags written over it."""
    data: dict[str, Any] = read_toml(args.config) if args.config else {}
    overrides = {
        ("model", "bundle"): args.bundle,
        ("mqtt", "broker"): args.broker,
        ("mqtt", "topics"): args.topic,
        ("mqtt", "topic_prefix"): args.prefix,
        ("mqtt", "client_id"): args.client_id,
        ("log", "level"): args.log_level,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            table = data.setdefault(section, {})
            if isinstance(table, dict):
                table[key] = value
    if args.backend is not None:
        model = data.setdefault("model", {})
        if isinstance(model, dict):
            backend = model.get("backend")
            same = isinstance(backend, dict) and backend.get("type", "onnxruntime-cpu") == args.backend
            model["backend"] = backend if same else {"type": args.backend}
    return data


def configure_logging(level: str) -> None:
    # journald stamps every line itself; JOURNAL_STREAM tells us stderr goes there.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=fmt)


def check(config: Config) -> list[BadValue]:
    problems = []
    try:
        load_bundle(config.model.bundle).close()
    except BundleError as exc:
        problems.append(BadValue("model.bundle", config.model.bundle, str(exc)))
    state = config.state.path
    try:
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        writable = os.access(state, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:
        problems.append(BadValue("state.directory", str(state), "a directory the agent can create and write"))
    return problems


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.print_config:
        sys.stdout.write(example_toml())
        return EXIT_OK
    try:
        config = load_config(config_document(args))
    except InvalidConfig as exc:
        print(f"invalid config{f' {args.config}' if args.config else ''}:", file=sys.stderr)
        for bad_value in exc.bad_values:
            print(f"  {bad_value}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "rollback":
        return rollback(config)
    if args.check_config:
        bad_values = check(config)
        for bad_value in bad_values:
            print(bad_value, file=sys.stderr)
        if not bad_values:
            print(f"config OK: agent {config.agent_id}, bundle {config.model.bundle}, broker {config.mqtt.broker}")
        return EXIT_CONFIG if bad_values else EXIT_OK
    configure_logging(config.log.level)
    return run(config)


def rollback(config: Config) -> int:
    """`edgevae-agent rollback`: back to the previous model, by the running agent or, if none runs, in its
    state directory for the next start."""
    import fcntl

    from edgevae.agent.state import database_name
    from edgevae.agent.update_setup import updates_dir
    from edgevae.agent.updates import ROLLBACK_REQUEST

    if not config.updates.enabled:
        print("rollback: model updates are off (updates.trusted_root is not set)", file=sys.stderr)
        return EXIT_CONFIG
    from edgevae.agent.model_store import ModelStore

    models = ModelStore(updates_dir(config))
    active = models.state.active
    if active is None:
        print(
            "rollback: the agent runs the bundle it was installed with; there is nothing to go back to", file=sys.stderr
        )
        return EXIT_CONFIG
    lock_path = (config.state.path / database_name(config.agent_id)).with_suffix(".lock")
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            (updates_dir(config) / ROLLBACK_REQUEST).write_text("by hand\n")
            print(f"rollback: asked the running agent {config.agent_id} to leave release {active.release}")
            return EXIT_OK
        models.roll_back("rolled back by hand (edgevae-agent rollback)")
    back = models.state.active
    target = f"release {back.release}" if back else "the installed bundle"
    print(f"rollback: release {active.release} left; {target} runs from the next start")
    return EXIT_OK


def run(config: Config) -> int:
    from edgevae.agent.service import Service  # paho and onnxruntime are only needed past config checks

    try:
        service = Service(config)
    except (BundleError, ModelLoadError) as exc:
        logger.error("cannot load the model: %s", exc)
        return EXIT_MODEL
    except ConfigError as exc:  # the state directory cannot be used
        logger.error("%s", exc.describe())
        return EXIT_CONFIG
    stop, reload = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        if signum == signal.SIGUSR1:
            service.selftest_requested = True  # the scoring loop starts it: a handler takes no locks
            return
        if signum == signal.SIGHUP:
            reload.set()
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, on_signal)
    service.run(stop, reloading=reload)
    if reload.is_set():
        _reexec()
    return EXIT_OK


def _reexec() -> None:
    """Reload on SIGHUP: stop cleanly, then start again in the same process (same PID, as systemd expects of
    a reload), reading the config file and the bundle afresh. A config that has gone bad exits 2 as at start."""
    argv = [sys.executable, "-m", "edgevae.agent", *sys.argv[1:]]
    logger.info("reloading: %s", " ".join(argv))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    sys.exit(main())
