"""`edgevae retrain`: train on the latest normal data, export, gate against the field model, publish.

Each run gets its own folder under `output.directory`, named by its UTC start time:

    <UTC start>/run/          `edgevae train --data <data.train> --out run/ <train.flags>`
    <UTC start>/bundle/       `edgevae export --run run/ --out bundle/ --model-id <export.model_id> <export.flags>`
    <UTC start>/report.json   paths, seconds per step, both models' figures, the decision and its reason,
                              the release; written whatever the outcome

Training and export go through the commands' own flag parsers and defaults (`edgevae.evaluation.commands`),
so the candidate is the model a user running them by hand would get. A candidate the gate refuses is kept
in its folder and never published (ExportError, exit 7).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgevae.agent.table import Table, read_tables
from edgevae.core.errors import DataError, EdgeVAEError, ExportError
from edgevae.evaluation import gate
from edgevae.evaluation.commands import flag_value, run_export, run_train, run_train_generator
from edgevae.evaluation.retrain_config import RetrainConfig

logger = logging.getLogger(__name__)

REPORT_NAME = "report.json"
CREDENTIAL = "mqtt-password"  # as `edgevae publish --mqtt` reads it from $CREDENTIALS_DIRECTORY


@dataclass
class RetrainReport:
    folder: str
    started: str  # UTC, ISO-8601
    decision: str = "failed"  # published, refused or failed
    reason: str = ""
    failed_step: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # per step, in the order they ran
    training_files: list[str] = field(default_factory=list)
    evaluation_files: list[str] = field(default_factory=list)
    run: str | None = None
    bundle: str | None = None
    metric: str = ""
    candidate: dict[str, Any] | None = None  # TP/FP/FN/TN over all evaluation rows and every gate metric
    field_model: dict[str, Any] | None = None  # the same, with the release and bundle it was read from
    release: int | None = None  # the release published
    published: str | None = None
    mirrored: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.folder) / REPORT_NAME

    def summary(self) -> str:
        if self.decision == "published":
            mirrored = f"; {self.mirrored}" if self.mirrored else ""
            return f"{self.published} ({self.reason}){mirrored}; report {self.path}"
        return f"{self.decision}: {self.reason}; report {self.path}"


def retrain(config: RetrainConfig, now: datetime | None = None) -> RetrainReport:
    """One retraining as named steps; report.json is written however far it got."""
    now = now or datetime.now(timezone.utc)
    folder = _make_folder(config.output.path, now)
    report = RetrainReport(str(folder), _iso(now), config=config.model_dump(mode="json"))
    try:
        with _step(report, "gather"):
            tables = _gather(config, report)
        with _step(report, "train"):
            run = run_train(["--data", config.data.train, "--out", str(folder / "run"), *config.train.flags])
            report.run = str(run)
        own = ["--run", str(run), "--out", str(folder / "bundle"), "--model-id", config.export.model_id]
        if config.generator.kind:
            with _step(report, "generator"):
                own += ["--generator", str(_train_generator(config, folder / "generator"))]
        with _step(report, "export"):
            report.bundle = str(run_export([*own, *config.export.flags]).bundle)
        with _step(report, "gate"):
            decision = _gate(config, Path(report.bundle), tables, report)
        if not decision.passed:
            report.decision, report.reason = "refused", decision.reason
            msg = f"the gate refused the candidate: {decision.reason}"
            remedy = (
                f"nothing was published; the candidate is kept in {report.bundle} and the figures in {report.path}; "
                f"look at the training data in {config.data.train} before the next run"
            )
            raise ExportError(msg, remedy=remedy)
        if config.publish.canary:
            with _step(report, "rollout"):
                _rollout(config, Path(report.bundle), report)
            report.decision, report.reason = "published", decision.reason
            return report
        with _step(report, "publish"):
            _publish(config, Path(report.bundle), report)
        report.decision, report.reason = "published", decision.reason
        if config.publish.mqtt:
            with _step(report, "mirror"):
                _mirror(config, report)
    except EdgeVAEError as exc:
        if report.decision == "failed":
            report.reason = exc.describe()
        raise
    finally:
        _write_report(report)
    return report


def _train_generator(config: RetrainConfig, out: Path) -> Path:
    """The generator of the same data, at the model's window unless its flags say otherwise."""
    window = flag_value(config.train.flags, "--window")
    flags = config.generator.flags
    if window and flag_value(flags, "--window") is None:
        flags = ("--window", window, *flags)
    argv = ["--kind", config.generator.kind, "--data", config.data.train, "--out", str(out), "--no-progress"]
    return run_train_generator([*argv, *flags])


@contextmanager
def _step(report: RetrainReport, name: str) -> Iterator[None]:
    started = time.perf_counter()
    report.failed_step = name  # cleared once the step is through
    logger.info("retrain: %s", name)
    yield
    report.seconds[name] = round(time.perf_counter() - started, 2)
    report.failed_step = None


def _gather(config: RetrainConfig, report: RetrainReport) -> list[Table]:
    """The training files and the labelled evaluation tables, checked before an hour of training is spent."""
    from edgevae.export.repo_store import open_repository

    source = Path(config.data.train)
    files = sorted(p for p in source.rglob("*.csv") if p.is_file()) if source.is_dir() else [source]
    if not files:
        msg = f"{source}: no .csv files to train on"
        raise DataError(msg, remedy="put CSVs of normal operation under data.train")
    report.training_files = [str(p) for p in files]
    tables = read_tables(config.data.evaluate)
    gate.check_labelled(tables)
    report.evaluation_files = [t.path for t in tables]
    open_repository(Path(config.publish.repo))  # an ExportError naming the folder if it is none
    logger.info("%d training files, %d labelled evaluation files", len(files), len(tables))
    return tables


def _gate(config: RetrainConfig, bundle: Path, tables: list[Table], report: RetrainReport) -> gate.Decision:
    from edgevae.export.repo_field import field_model

    # Read after training, not before: the field may have moved on while the candidate trained.
    in_field = field_model(Path(config.publish.repo), config.publish.fleet[0])
    candidate = gate.score_bundle(bundle, tables)
    report.metric = config.gate.metric
    report.candidate = gate.figures(candidate)
    field_confusion = None
    if in_field is not None:
        field_confusion = gate.score_bundle(in_field.archive, tables)
        r = in_field.release
        where = {"release": r.release, "model": f"{r.model_id} {r.model_version}", "archive": str(in_field.archive)}
        report.field_model = where | gate.figures(field_confusion)
    decision = gate.decide(config.gate.metric, config.gate.tolerance, candidate, field_confusion)
    verdict = "passed" if decision.passed else "refused"
    field_text = "none" if in_field is None else f"{decision.field:.4g} (release {in_field.release.release})"
    logger.info(
        "gate %s: candidate %s %.4g, field model %s: %s",
        verdict,
        decision.metric,
        decision.candidate,
        field_text,
        decision.reason,
    )
    return decision


def _publish(config: RetrainConfig, bundle: Path, report: RetrainReport) -> None:
    from edgevae.export.repo_publish import publish

    published = publish(Path(config.publish.repo), bundle, fleet=config.publish.fleet)
    report.release = published.release.release
    report.published = published.summary()


def _rollout(config: RetrainConfig, bundle: Path, report: RetrainReport) -> None:
    """Canaries first, then the fleet (edgevae.export.rollout); a canary that rolls back halts it (exit 7)."""
    from edgevae.export.rollout import rollout

    p = config.publish
    result = rollout(
        Path(p.repo), bundle, p.canary, p.fleet[0], p.mqtt, p.prefix,
        canary_devices=p.canary_devices or None, timeout_s=p.rollout_timeout_s,
        username=p.mqtt_username or None, password=_password(config), ca_file=Path(p.mqtt_ca) if p.mqtt_ca else None,
    )  # fmt: skip
    report.release = result.fleet_release
    report.published = result.summary().replace("\n", "; ")


def _mirror(config: RetrainConfig, report: RetrainReport) -> None:
    from edgevae.export.repo_mirror import mirror

    p = config.publish
    ca = Path(p.mqtt_ca) if p.mqtt_ca else None
    result = mirror(Path(p.repo), p.mqtt, p.prefix, p.mqtt_username or None, _password(config), ca)
    report.mirrored = result.summary()


def _password(config: RetrainConfig) -> str | None:
    path = config.publish.mqtt_password_file
    if not path and os.environ.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(os.environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL
        path = str(candidate) if candidate.is_file() else ""
    # Files written by editors and `echo` end in a newline that is never part of the secret.
    return Path(path).read_text().rstrip("\r\n") if path else None


def _make_folder(root: Path, now: datetime) -> Path:
    """`<root>/<UTC start>`, with `-2`, `-3`, ... when a run started within the same second."""
    root.mkdir(parents=True, exist_ok=True)
    name = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(1, 1000):
        folder = root / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    msg = f"{root}: 999 runs named {name} already"
    raise ExportError(msg)


def _iso(now: datetime) -> str:
    return now.astimezone(timezone.utc).isoformat(timespec="seconds")


def _write_report(report: RetrainReport) -> None:
    report.path.write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")
