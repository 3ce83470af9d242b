"""`edgevae retrain`'s TOML config: one table per step, validated before anything trains, every problem named by
key path, value and expectation (the agent's `Table`, `Problems`, TOML reading and messages)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from edgevae.agent.config_base import TOPIC_CHARS, Document, Problems, Table, readable, state_directory
from edgevae.agent.config_file import InvalidConfig, bad_values_of, read_toml
from edgevae.core.errors import ConfigError
from edgevae.evaluation.commands import FlagError, export_flags, parse_flags, train_flags
from edgevae.export.repo_publish import NAME, NAME_RULE
from edgevae.export.repo_store import SETTINGS_NAME

_UNSET = "\0unset"  # stands in for the paths retrain passes itself, to see whether a flag overrode them


class DataTable(Table):
    train: str = Field(
        default="",
        validate_default=True,
        description="normal operation to train on: a CSV file, or a folder whose *.csv files are all used, "
        "subfolders included (one per device, say); each file is split chronologically on its own",
    )
    evaluate: str = Field(
        default="",
        validate_default=True,
        description="labelled CSVs for the gate (a CSV file or a folder, subfolders included), each with an "
        "`anomaly` column of 0/1 as SKAB's; both models score them whole",
    )

    @field_validator("train", "evaluate")
    @classmethod
    def _exists(cls, path: str) -> str:
        if not path or not Path(path).exists():
            raise Problems([("", path, "an existing CSV file or folder of CSV files")])
        return path


def _flag_problem(
    command: str, add: Any, own: list[str], flags: tuple[str, ...], reserved: dict[str, str]
) -> str | None:
    """Why `flags` cannot follow retrain's own flags `own` on `command`'s command line, or None."""
    try:
        args = parse_flags(add, [*own, *flags])
    except FlagError as exc:
        return f"flags of `{command}`: {exc.problem}"
    given = {flag: getattr(args, dest) for flag, dest in reserved.items()}
    taken = [flag for flag, value in given.items() if value is not None and str(value) != _UNSET]
    if taken:
        return f"flags of `{command}` other than {', '.join(reserved)}, which retrain sets; got {', '.join(taken)}"
    return None


class TrainTable(Table):
    # Not strict: a TOML array arrives as a list.
    flags: tuple[str, ...] = Field(
        default=(),
        strict=False,
        description='extra `edgevae train` flags, e.g. ["--epochs", "30"]; none: the defaults `edgevae train` '
        "ships with",
    )

    @field_validator("flags")
    @classmethod
    def _train_flags(cls, flags: tuple[str, ...]) -> tuple[str, ...]:
        from edgevae.training.config import config_from_args, validate_config

        reserved = {"--data": "data", "--out": "out"}
        problem = _flag_problem("edgevae train", train_flags(), ["--out", _UNSET], flags, reserved)
        if problem is None:
            try:
                # The settings' own rules too (a window the conv VAE cannot take), before an hour of training.
                args = parse_flags(train_flags(), ["--out", _UNSET, *flags])
                validate_config(config_from_args(args))
            except ConfigError as exc:
                problem = f"flags of `edgevae train`: {exc}"
        if problem:
            raise Problems([("", list(flags), problem)])
        return flags


class ExportTable(Table):
    flags: tuple[str, ...] = Field(
        default=(),
        strict=False,
        description='extra `edgevae export` flags, e.g. ["--precision", "fp16"]; none: the defaults `edgevae '
        "export` ships with",
    )
    model_id: str = Field(
        default="edgevae",
        description="model id in each bundle's manifest: the same every run, so releases are versions of one model "
        "(the version is the export's UTC time)",
    )

    @field_validator("flags")
    @classmethod
    def _export_flags(cls, flags: tuple[str, ...]) -> tuple[str, ...]:
        reserved = {"--run": "run", "--out": "out", "--model-id": "model_id"}
        problem = _flag_problem("edgevae export", export_flags(), ["--run", _UNSET, "--out", _UNSET], flags, reserved)
        if problem:
            raise Problems([("", list(flags), problem)])
        return flags

    @field_validator("model_id")
    @classmethod
    def _name(cls, model_id: str) -> str:
        if not NAME.fullmatch(model_id):
            raise Problems([("", model_id, NAME_RULE)])
        return model_id


class GeneratorTable(Table):
    kind: Literal["", "diffusion", "gan"] = Field(
        default="",
        description="train a generator of this kind on the same data and ship it in the bundle for the devices' "
        "detection self-test (`edgevae export --generator`); empty: none",
    )
    flags: tuple[str, ...] = Field(
        default=(),
        strict=False,
        description='extra `edgevae train-generator` flags, e.g. ["--steps", "8000"]; none: its defaults',
    )

    @field_validator("flags")
    @classmethod
    def _generator_flags(cls, flags: tuple[str, ...]) -> tuple[str, ...]:
        from edgevae.training.generators.config import add_arguments

        reserved = {"--data": "data", "--out": "out"}
        own = ["--kind", "diffusion", "--out", _UNSET]  # --kind takes only its choices: checked by name below
        problem = _flag_problem("edgevae train-generator", add_arguments, own, flags, reserved)
        if problem is None and any(f == "--kind" or f.startswith("--kind=") for f in flags):
            problem = "flags of `edgevae train-generator` other than --kind (generator.kind says it)"
        if problem:
            raise Problems([("", list(flags), problem)])
        return flags


class GateTable(Table):
    metric: Literal["f1", "far", "mar"] = Field(
        default="f1",
        description="what must not get worse, over all evaluation rows: f1 (higher is better), far or mar "
        "(false and missed alarm rates in percent, lower is better)",
    )
    tolerance: float = Field(
        default=0.01,
        ge=0,
        description="refuse the candidate when its metric is worse than the field model's by more than this, in "
        "the metric's units (f1: 0-1, far and mar: percentage points)",
    )


class PublishTable(Table):
    repo: str = Field(
        default="",
        validate_default=True,
        description="the signed model repository folder (`edgevae repo init`); the field model is read from it",
    )
    fleet: tuple[str, ...] = Field(
        default=("canary",),
        strict=False,
        description="fleet groups the release is for; the gate compares with the model the first one runs",
    )
    mqtt: str = Field(
        default="", description="mirror the repository to this broker after publishing: mqtt[s]://host[:port]"
    )
    prefix: str = Field(default="edgevae", description="topic prefix of the MQTT mirror")
    mqtt_username: str = Field(default="", description="broker user name of the mirror")
    mqtt_password_file: str = Field(
        default="",
        description="file holding the mirror's broker password; empty: $CREDENTIALS_DIRECTORY/mqtt-password "
        "(systemd LoadCredential=) if present",
    )
    mqtt_ca: str = Field(default="", description="CA certificate for mqtts://; empty: the system's")
    canary: str = Field(
        default="",
        description="roll out through this canary group first (`edgevae rollout`): the fleet group gets the "
        "release once every canary has committed it; needs mqtt and one fleet group; empty: publish at once",
    )
    canary_devices: int = Field(default=0, ge=0, description="canaries to wait for; 0: those seen within 3 s")
    rollout_timeout_s: float = Field(default=7200.0, gt=0, description="a rollout gives up after this long")

    @model_validator(mode="after")
    def _valid(self) -> PublishTable:
        problems: list[tuple[str, Any, str]] = []
        if self.canary and not self.mqtt:
            problems.append(("mqtt", self.mqtt, "the broker the canaries report to (a rollout watches them there)"))
        if self.canary and len(self.fleet) != 1:
            problems.append(("fleet", list(self.fleet), "exactly one fleet group to promote to after the canaries"))
        if self.canary and not NAME.fullmatch(self.canary):
            problems.append(("canary", self.canary, NAME_RULE))
        if not (Path(self.repo) / SETTINGS_NAME).is_file():
            problems.append(("repo", self.repo, "a repository folder made by `edgevae repo init`"))
        if not self.fleet:
            problems.append(("fleet", [], "at least one fleet group"))
        problems += [(f"fleet[{i}]", g, NAME_RULE) for i, g in enumerate(self.fleet) if not NAME.fullmatch(g)]
        if self.mqtt and not self.mqtt.startswith(("mqtt://", "mqtts://")):
            problems.append(("mqtt", self.mqtt, "mqtt://host[:port] or mqtts://host[:port], or empty"))
        if not self.prefix or TOPIC_CHARS & set(self.prefix):
            problems.append(("prefix", self.prefix, "a non-empty topic level without '+', '#' or '/'"))
        for key in ("mqtt_password_file", "mqtt_ca"):
            if getattr(self, key) and not readable(getattr(self, key)):
                problems.append((key, getattr(self, key), "a readable file, or empty"))
        if problems:
            raise Problems(problems)
        return self


def default_directory(environ: Mapping[str, str] | None = None) -> Path:
    """`$STATE_DIRECTORY/runs` (the first of systemd's StateDirectory=), else `$XDG_STATE_HOME/edgevae-retrain/runs`.

    >>> str(default_directory({"STATE_DIRECTORY": "/var/lib/edgevae-retrain:/var/lib/edgevae-repo"}))
    '/var/lib/edgevae-retrain/runs'
    """
    return state_directory("edgevae-retrain", environ) / "runs"


class OutputTable(Table):
    directory: str = Field(
        default="",
        description="one folder per retrain is made here, named by its UTC start time: run/, bundle/, report.json; "
        "empty: $STATE_DIRECTORY/runs (systemd's StateDirectory=), else $XDG_STATE_HOME/edgevae-retrain/runs",
    )

    @property
    def path(self) -> Path:
        return Path(self.directory) if self.directory else default_directory()


class RetrainConfig(Document):
    data: DataTable = Field(default_factory=DataTable, description="what to train on and what to gate on")
    train: TrainTable = Field(default_factory=TrainTable, description="`edgevae train`")
    export: ExportTable = Field(default_factory=ExportTable, description="`edgevae export`")
    generator: GeneratorTable = Field(
        default_factory=GeneratorTable, description="`edgevae train-generator`, for the bundle's self-test"
    )
    gate: GateTable = Field(default_factory=GateTable, description="what a candidate must do to be published")
    publish: PublishTable = Field(default_factory=PublishTable, description="the release")
    output: OutputTable = Field(default_factory=OutputTable, description="where each run is kept")

    @model_validator(mode="after")
    def _one_generator(self) -> RetrainConfig:
        if self.generator.kind and "--generator" in self.export.flags:
            problem = "no --generator when generator.kind trains one"
            raise Problems([("export.flags", list(self.export.flags), problem)])
        return self


def load_retrain_config(path: str | Path) -> RetrainConfig:
    """The config file read and validated; InvalidConfig lists every problem, each with its key path."""
    try:
        return RetrainConfig.model_validate(read_toml(path))
    except ValidationError as exc:
        raise InvalidConfig(bad_values_of(exc, RetrainConfig)) from None
