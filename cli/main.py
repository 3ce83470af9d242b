"""The `edgevae` command: train, export, score, evaluate, demo, the signed model repository (repo, publish) and
periodic retraining (retrain).
Each subcommand imports only what it needs, so `edgevae score` runs on a machine without torch."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edgevae.agent.install import missing_extra, version
from edgevae.agent.table_options import add_read_arguments, read_options_from_args
from edgevae.core.errors import ConfigError, EdgeVAEError

logger = logging.getLogger(__name__)


def _train(args: argparse.Namespace) -> int:
    from edgevae.training.config import config_from_args
    from edgevae.training.train_vae import train

    run_dir = train(config_from_args(args))
    print(f"run written to {run_dir}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from edgevae.export.options import export_from_args

    print(export_from_args(args).summary())
    return 0


def _score(args: argparse.Namespace) -> int:
    from edgevae.agent.offline import score_csv

    summary = score_csv(args.bundle, args.input, args.out, backend_key=args.backend, read=read_options_from_args(args))
    print(summary)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from edgevae.cli.evaluate import run_from_args

    return run_from_args(args)


def _retrain(args: argparse.Namespace) -> int:
    from edgevae.agent.config_file import example_toml
    from edgevae.evaluation.retrain import retrain
    from edgevae.evaluation.retrain_config import RetrainConfig, load_retrain_config

    if args.print_config:
        print(example_toml(RetrainConfig), end="")
        return 0
    if args.config is None:
        msg = "retrain needs --config FILE"
        raise ConfigError(msg, remedy="write one from `edgevae retrain --print-config`")
    config = load_retrain_config(args.config)
    if args.check_config:
        print(f"{args.config}: config OK")
        return 0
    print(retrain(config).summary())
    return 0


def _generator_report(args: argparse.Namespace) -> int:
    from edgevae.cli.generator_report import run_from_args

    return run_from_args(args)


def _replay(args: argparse.Namespace) -> int:
    from edgevae.agent.replay import run_from_args

    return run_from_args(args)


def _demo(args: argparse.Namespace) -> int:
    from edgevae.demo.demo import run_demo

    return run_demo(args)


def _bench(args: argparse.Namespace) -> int:
    from edgevae.demo.bench import run_from_args

    return run_from_args(args)


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    parser = sub.add_parser("bench", help="measure the agent's hot path against the broker and ONNX Runtime")
    if command == "bench":
        from edgevae.demo.bench import add_arguments

        add_arguments(parser)
    parser.set_defaults(func=_bench)


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    parser = sub.add_parser("train", help="learn a VAE of normal sensor windows")
    # Importing train_vae pulls in torch; only pay for that when `train` is the command.
    if command == "train":
        from edgevae.training.config import add_arguments

        add_arguments(parser)
    parser.set_defaults(func=_train)


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    parser = sub.add_parser("export", help="compress and export a trained run to a model bundle")
    if command == "export":
        from edgevae.export.options import add_arguments

        add_arguments(parser)
    parser.set_defaults(func=_export)


def _add_score(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    parser = sub.add_parser("score", help="score a CSV offline with a bundle, exactly as the agent would")
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder or .tar.gz")
    parser.add_argument("--input", type=Path, required=True, help="CSV with a timestamp column and the channels")
    parser.add_argument("--out", type=Path, required=True, help="where to write the per-row scores CSV")
    parser.add_argument("--backend", default="onnxruntime-cpu", help="runtime backend (default: onnxruntime-cpu)")
    add_read_arguments(parser)
    parser.set_defaults(func=_score)


def _add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    parser = sub.add_parser("evaluate", help="measure detection quality on SKAB, or on your own labelled CSVs")
    if command == "evaluate":
        from edgevae.cli.evaluate import add_arguments

        add_arguments(parser)
    parser.set_defaults(func=_evaluate)


def _add_retrain(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    parser = sub.add_parser(
        "retrain", help="train on new normal data, export, refuse a model worse than the field's, publish"
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="the retrain config (TOML)")
    parser.add_argument(
        "--print-config", action="store_true", help="print a config with every key, its default and meaning"
    )
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit, training nothing")
    parser.set_defaults(func=_retrain)


def _add_generator_report(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    parser = sub.add_parser("generator-report", help="measure how faithful a generator's synthetic windows are")
    if command == "generator-report":
        from edgevae.cli.generator_report import add_arguments

        add_arguments(parser)
    parser.set_defaults(func=_generator_report)


def _add_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    parser = sub.add_parser("replay", help="publish a CSV to MQTT as a sensor would, in the agent's payload format")
    if command == "replay":
        from edgevae.agent.replay import add_arguments

        add_arguments(parser)
    parser.set_defaults(func=_replay)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    parser = sub.add_parser("demo", help="train, export, serve and replay a faulty stream end to end")
    if command == "demo":
        from edgevae.demo.demo import add_arguments

        add_arguments(parser)
    parser.set_defaults(func=_demo)


def _add_train_generator(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    parser = sub.add_parser("train-generator", help="learn a GAN or diffusion generator of normal sensor windows")
    # Its flags come from the generator config, which imports numpy: only when this is the command, so that
    # `edgevae repo ...` runs under the timestamp unit's syscall filter without numpy's.
    if command == "train-generator":
        from edgevae.cli.generators import add_train_generator_arguments

        add_train_generator_arguments(parser)


def _add_augment(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    from edgevae.cli.generators import add_augment_arguments

    parser = sub.add_parser("augment", help="sample synthetic windows from a generator into an .npz")
    add_augment_arguments(parser)


def _add_repo(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    from edgevae.cli.repo import add_repo_arguments

    parser = sub.add_parser("repo", help="the signed model repository devices update from: init, status, rotate-key")
    add_repo_arguments(parser)


def _add_publish(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    from edgevae.cli.repo import add_publish_arguments

    parser = sub.add_parser("publish", help="sign a bundle into the repository as the next release for groups/devices")
    add_publish_arguments(parser)


def _add_rollout(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    from edgevae.cli.fleet import add_rollout_arguments

    parser = sub.add_parser("rollout", help="publish to a canary group, then promote to the fleet once they commit")
    add_rollout_arguments(parser)


def _add_fleet(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    from edgevae.cli.fleet import add_fleet_arguments

    parser = sub.add_parser("fleet", help="what the fleet's agents say: `edgevae fleet status`")
    add_fleet_arguments(parser)


def _add_alerts(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    from edgevae.cli.alerts import add_alerts_arguments

    parser = sub.add_parser("alerts", help="follow the fleet's alerts, starting with what is open now")
    add_alerts_arguments(parser)


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser], str | None], None]] = [
    _add_train,
    _add_export,
    _add_score,
    _add_replay,
    _add_evaluate,
    _add_retrain,
    _add_generator_report,
    _add_train_generator,
    _add_augment,
    _add_demo,
    _add_bench,
    _add_repo,
    _add_publish,
    _add_rollout,
    _add_fleet,
    _add_alerts,
]


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line, found before argparse runs."""
    args = iter(argv)
    for arg in args:
        if arg == "--log-level":
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    command = _command_in(argv)
    parser = argparse.ArgumentParser(prog="edgevae", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    parser.add_argument("--version", action="version", version=f"edgevae {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(argv).parse_args(argv)
    except ModuleNotFoundError as exc:  # a subcommand's flags come from a module of an extra
        return _missing(exc, _command_in(argv))
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
    except ModuleNotFoundError as exc:
        return _missing(exc, args.command)
    except EdgeVAEError as exc:
        # Our own errors say what is wrong and what to do in one line; anything else is a bug and keeps its
        # traceback (exit 1). The exit codes are drawn in edgevae.core.errors.
        print(f"edgevae {args.command}: error: {exc.describe()}", file=sys.stderr)
        return exc.exit_code
    return code


def _missing(exc: ModuleNotFoundError, command: str | None) -> int:
    line = missing_extra(exc)
    if line is None:
        raise exc
    print(f"edgevae {command or ''}: error: this command {line}".replace("  ", " "), file=sys.stderr)
    return ConfigError.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
