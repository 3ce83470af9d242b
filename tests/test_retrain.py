"""`edgevae retrain` for real: tiny models trained on synthetic CSVs, exported, gated against the model the
repository's fleet pointer names, published into a real signed repository, and mirrored to a real mosquitto."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_fixtures import Collector
from trained_runs import CHANNELS, SMALL, SYSTEM, T0, synthetic_readings, write_readings

from edgevae.agent.bundle import load_bundle
from edgevae.agent.release import repo_topic
from edgevae.agent.table import Table, write_table
from edgevae.cli.main import main
from edgevae.core.metrics import Confusion
from edgevae.demo.broker import Broker
from edgevae.evaluation.gate import NO_FIELD_MODEL, decide
from edgevae.export.repo_field import field_model
from edgevae.export.repo_publish import releases
from edgevae.export.repo_store import load_current, open_repository
from edgevae.export.repository import init

REPO_ROOT = Path(__file__).resolve().parents[1]
UNIT = REPO_ROOT / "systemd" / "edgevae-retrain.service"
UNDER_FILTER = REPO_ROOT / "tests" / "tools" / "under_unit_filter.py"
# The tests' small training settings, scored at the product's stride 1: the debounce counts windows, and at
# SMALL's stride 8 its 30 clearing windows would hold every alert open 240 rows past its fault.
TRAIN_FLAGS = [*SMALL, *SYSTEM, "--stride", "1"]
FAULTS = ((400, 250, 0), (1100, 200, 2))  # (first row, rows, channel) of each level shift in a labelled file


@dataclass(frozen=True)
class World:
    root: Path
    normal: Path  # one subfolder per device
    polluted: Path  # "normal" data drowned in noise: a model trained on it misses every fault
    labelled: Path
    repo: Path


def _labelled(path: Path, seed: int) -> None:
    values = synthetic_readings(1600, seed)
    spread = values.std(axis=0)
    labels = np.zeros(len(values), dtype=np.int8)
    for start, rows, channel in FAULTS:
        values[start : start + rows, channel] += 3.0 * spread[channel]
        labels[start : start + rows] = 1
    timestamps = T0 + np.arange(len(values), dtype=np.float64)
    write_table(Table(str(path), timestamps, values, CHANNELS, labels), path)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("retrain")
    for device, seed in (("pump-1", 0), ("pump-2", 1)):
        (root / "normal" / device).mkdir(parents=True)
        write_readings(root / "normal" / device / "week.csv", rows=3000, seed=seed)
    clean = synthetic_readings(6000, 2)
    noisy = clean + 20.0 * clean.std(axis=0) * np.random.default_rng(7).standard_normal(clean.shape)
    (root / "polluted").mkdir()
    write_table(Table("noisy", T0 + np.arange(6000.0), noisy, CHANNELS, None), root / "polluted" / "week.csv")
    (root / "labelled").mkdir()
    for name, seed in (("a", 5), ("b", 6)):
        _labelled(root / "labelled" / f"{name}.csv", seed)
    init(root / "repo")
    return World(root, root / "normal", root / "polluted", root / "labelled", root / "repo")


def _toml_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def write_config(path: Path, **tables: dict[str, Any]) -> Path:
    path.write_text(
        "".join(f"[{t}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in kv.items()) for t, kv in tables.items())
    )
    return path


def _config(world: World, name: str, repo: Path, train: Path, **publish: Any) -> Path:
    return write_config(
        world.root / f"{name}.toml",
        data={"train": str(train), "evaluate": str(world.labelled)},
        train={"flags": TRAIN_FLAGS},
        gate={"metric": "f1", "tolerance": 0.01},
        publish={"repo": str(repo), "fleet": ["canary", "prod"], **publish},
        output={"directory": str(world.root / f"{name}-runs")},
    )


def _latest_release(repo: Path) -> int:
    current = load_current(open_repository(repo))
    return max((r.release for r in releases(current.targets.signed).values()), default=0)


def _only_report(runs: Path) -> dict[str, Any]:
    (folder,) = runs.iterdir()
    report: dict[str, Any] = json.loads((folder / "report.json").read_text())
    return report


@dataclass(frozen=True)
class FirstRun:
    code: int
    report: dict[str, Any]
    repo_after: Path  # a copy of the repository right after it, for the tests that build on it
    prefix: str


@pytest.fixture(scope="module")
def first(world: World, broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    prefix = f"retrain-{uuid.uuid4().hex[:8]}"
    config = _config(world, "first", world.repo, world.normal, mqtt=broker.url, prefix=prefix)
    code = main(["retrain", "--config", str(config)])
    after = tmp_path_factory.mktemp("after-first") / "repo"
    shutil.copytree(world.repo, after)
    return FirstRun(code, _only_report(world.root / "first-runs"), after, prefix)


# --- (a) a first retrain into an empty repository --------------------------------------------------------


@pytest.mark.slow
def test_a_first_retrain_publishes_release_1_for_the_fleet(first: FirstRun, world: World, broker: Broker) -> None:
    assert first.code == 0
    report = first.report
    assert report["decision"] == "published"
    assert report["reason"] == NO_FIELD_MODEL
    assert report["release"] == 1
    assert report["field_model"] is None
    assert list(report["seconds"]) == ["gather", "train", "export", "gate", "publish", "mirror"]
    assert sorted(Path(p).parent.name for p in report["training_files"]) == ["pump-1", "pump-2"]
    # The model the gate will defend later is a real detector on these faults, not a trivial one.
    assert report["candidate"]["f1"] > 0.8, report["candidate"]
    # Both groups point at release 1, and its bundle is the one this run exported.
    exported = load_bundle(report["bundle"]).manifest
    for group in ("canary", "prod"):
        found = field_model(world.repo, group)
        assert found is not None
        assert found.release.release == 1
        shipped = load_bundle(found.archive).manifest
        assert (shipped.model_id, shipped.model_version) == ("edgevae", exported.model_version)
    # The mirror ran after the publish: a device subscribing now finds the committed timestamp.json.
    late = Collector(broker, [repo_topic(first.prefix, "metadata", "timestamp.json")])
    try:
        (message,) = late.wait_for(lambda ms: ms, what="the retained timestamp.json")
        assert message.payload == (world.repo / "metadata" / "timestamp.json").read_bytes()
    finally:
        late.close()


# --- (b) a worse candidate ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worse_candidate_is_refused_and_nothing_is_published(
    first: FirstRun, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(first.repo_after, repo)
    metadata_before = sorted(p.name for p in (repo / "metadata").iterdir())
    timestamp_before = (repo / "metadata" / "timestamp.json").read_bytes()
    config = _config(world, "worse", repo, world.polluted)
    capsys.readouterr()

    assert main(["retrain", "--config", str(config)]) == 7

    err = capsys.readouterr().err
    report = _only_report(world.root / "worse-runs")
    field_f1, candidate_f1 = report["field_model"]["f1"], report["candidate"]["f1"]
    assert candidate_f1 < field_f1 - 0.01
    assert f"edgevae retrain: error: the gate refused the candidate: candidate f1 {candidate_f1:.3f}" in err
    assert f"worse than the field model's {field_f1:.3f}" in err
    assert "nothing was published" in err
    assert report["decision"] == "refused"
    assert report["release"] is None
    assert "publish" not in report["seconds"]
    # The field model the gate scored is release 1, and it scores as it did when it was the candidate.
    assert report["field_model"]["release"] == 1
    assert {k: report["field_model"][k] for k in ("tp", "fp", "fn", "tn")} == {
        k: first.report["candidate"][k] for k in ("tp", "fp", "fn", "tn")
    }
    # Nothing new in the repository: the same release, metadata files and timestamp.
    assert _latest_release(repo) == 1
    assert sorted(p.name for p in (repo / "metadata").iterdir()) == metadata_before
    assert (repo / "metadata" / "timestamp.json").read_bytes() == timestamp_before
    assert Path(report["bundle"], "manifest.json").is_file()  # the refused candidate is kept to look at


# --- the unit's sandbox, and a candidate as good as the field's ------------------------------------------


def _no_seccomp() -> str | None:
    if subprocess.run(["/usr/bin/python3", "-c", "import seccomp"], capture_output=True).returncode != 0:
        return "Debian's python3-seccomp is not installed (`make test` installs it)"
    if shutil.which("systemd-analyze") is None:
        return "systemd-analyze is not installed"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_no_seccomp() is not None, reason=str(_no_seccomp()))
def test_a_retrain_under_the_units_syscall_filter_passes_a_candidate_as_good_as_the_field(
    first: FirstRun, world: World, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(first.repo_after, repo)
    config = _config(world, "again", repo, world.normal)
    # The filter as the unit applies it: a denied call fails with EPERM. Not --kill: run as root, as here, the
    # sqlite database ONNX Runtime keeps in $XDG_CACHE_HOME calls fchown (in @privileged), which it does only
    # as root; the unit's user never makes that call.
    launcher = ["/usr/bin/python3", str(UNDER_FILTER), str(UNIT), "--"]
    command = [sys.executable, "-m", "edgevae.cli.main", "retrain", "--config", str(config)]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run([*launcher, *command], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "release 2:" in result.stdout
    report = _only_report(world.root / "again-runs")
    # Same data, same seed: the same detector, so the gate compares equal figures and passes.
    assert report["candidate"]["f1"] == report["field_model"]["f1"] == first.report["candidate"]["f1"]
    assert report["reason"].startswith("candidate f1 ")
    assert "is no worse than the field model's" in report["reason"]
    in_field = field_model(repo, "canary")
    assert in_field is not None
    assert in_field.release.release == 2


# --- the decision itself ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "candidate", "field", "passed"),
    [
        ("f1", Confusion(tp=8, fn=2, tn=90), None, True),  # nothing in the field yet
        ("f1", Confusion(tp=9, fn=1, tn=90), Confusion(tp=8, fn=2, tn=90), True),  # better
        ("f1", Confusion(tp=8, fn=2, tn=90), Confusion(tp=8, fn=2, tn=90), True),  # equal
        # 0.8889 vs 0.8947: 0.006 worse, within the 0.01 tolerance
        ("f1", Confusion(tp=8, fn=2, tn=90), Confusion(tp=17, fn=3, fp=1, tn=79), True),
        ("f1", Confusion(tp=6, fn=4, tn=90), Confusion(tp=8, fn=2, tn=90), False),  # 0.139 worse
        ("f1", Confusion(fn=10, tn=90), Confusion(tp=8, fn=2, tn=90), False),  # flags nothing: f1 0
        # FAR is lower-is-better: more false alarms is worse even when F1 would not say so
        ("far", Confusion(tp=10, fp=5, tn=85), Confusion(tp=10, fp=1, tn=89), False),
        ("far", Confusion(tp=10, fp=1, tn=89), Confusion(tp=10, fp=5, tn=85), True),
        ("mar", Confusion(tp=5, fn=5, tn=90), Confusion(tp=9, fn=1, tn=90), False),  # 50 % vs 10 % missed
    ],
)
def test_the_gate_refuses_only_a_candidate_worse_by_more_than_the_tolerance(
    metric: str, candidate: Confusion, field: Confusion | None, passed: bool
) -> None:
    decision = decide(metric, 0.01, candidate, field)
    assert decision.passed is passed, decision.reason
    assert decision.reason.startswith(f"candidate {metric}") or field is None


# --- (c) bad configs -------------------------------------------------------------------------------------


def _empty_setup(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Empty data folders and a new repository: the tables of a config that validates."""
    (tmp_path / "normal").mkdir()
    (tmp_path / "labelled").mkdir()
    init(tmp_path / "repo")
    return {
        "data": {"train": str(tmp_path / "normal"), "evaluate": str(tmp_path / "labelled")},
        "publish": {"repo": str(tmp_path / "repo")},
        "output": {"directory": str(tmp_path / "runs")},
    }


@pytest.mark.parametrize(
    ("table", "key", "value", "expected"),
    [
        ("gate", "max_drop", 0.1, "gate.max_drop: 0.1: unknown key; allowed keys: metric, tolerance"),
        ("gate", "metric", "auc", "gate.metric: 'auc': one of 'f1', 'far', 'mar'"),
        ("gate", "tolerance", "0.1", "gate.tolerance: '0.1': a number >= 0"),  # a string is no number
        ("gate", "tolerance", -0.5, "gate.tolerance: -0.5: a number >= 0"),
        (
            "train",
            "flags",
            ["--epochs", "two"],
            "train.flags: ['--epochs', 'two']: flags of `edgevae train`: argument --epochs: invalid int value: 'two'",
        ),
        ("train", "flags", ["--epoks", "2"], "flags of `edgevae train`: unrecognized arguments: --epoks 2"),
        # rules of the training settings themselves, caught before anything trains
        ("train", "flags", ["--window", "30"], "--window must be divisible by 4 for --arch conv, got 30"),
        (
            "train",
            "flags",
            ["--out", "elsewhere"],
            "flags of `edgevae train` other than --data, --out, which retrain sets; got --out",
        ),
        (
            "export",
            "flags",
            ["--precision", "int4"],
            "export.flags: ['--precision', 'int4']: flags of `edgevae export`: argument --precision: invalid choice",
        ),
        ("export", "model_id", "my model", "export.model_id: 'my model': 1-128 letters, digits"),
        ("publish", "fleet", ["ok", "a/b"], "publish.fleet[1]: 'a/b': 1-128 letters, digits"),
        ("publish", "fleet", [], "publish.fleet: []: at least one fleet group"),
        ("publish", "repo", "/nonexistent", "publish.repo: '/nonexistent': a repository folder made by"),
        ("publish", "mqtt", "http://broker", "publish.mqtt: 'http://broker': mqtt://host[:port] or mqtts://"),
        ("data", "train", "", "data.train: '': an existing CSV file or folder of CSV files"),
        ("publish", "canary", "canary", "publish.mqtt: '': the broker the canaries report to"),
        ("generator", "kind", "vae", "generator.kind: 'vae': one of '', 'diffusion', 'gan'"),
        (
            "generator",
            "flags",
            ["--data", "elsewhere"],
            "flags of `edgevae train-generator` other than --data, --out, which retrain sets; got --data",
        ),
        ("generator", "flags", ["--stepz", "2"], "flags of `edgevae train-generator`: unrecognized arguments"),
        ("generator", "flags", ["--kind", "gan"], "other than --kind (generator.kind says it)"),
    ],
)
def test_a_bad_config_names_the_key_and_the_expected_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, key: str, value: Any, expected: str
) -> None:
    tables = _empty_setup(tmp_path)
    tables.setdefault(table, {})[key] = value
    config = write_config(tmp_path / "retrain.toml", **tables)

    assert main(["retrain", "--config", str(config)]) == 2

    err = capsys.readouterr().err
    assert err.startswith("edgevae retrain: error: ")
    assert expected in err
    assert len(err.strip().splitlines()) == 1, err  # only the key that is wrong
    assert not (tmp_path / "runs").exists()  # refused before any run folder is made


def test_a_missing_config_file_and_no_config_are_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["retrain", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err
    assert main(["retrain"]) == 2
    assert "retrain needs --config FILE (write one from `edgevae retrain --print-config`)" in capsys.readouterr().err


def test_check_config_validates_and_trains_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables = _empty_setup(tmp_path)
    config = write_config(tmp_path / "retrain.toml", **tables, train={"flags": ["--epochs", "3"]})
    assert main(["retrain", "--config", str(config), "--check-config"]) == 0
    assert capsys.readouterr().out == f"{config}: config OK\n"
    assert not (tmp_path / "runs").exists()


def test_the_systemd_example_is_the_printed_config(capsys: pytest.CaptureFixture[str]) -> None:
    """systemd/retrain.toml is --print-config with the unit's paths, so it lists every key of this version."""
    assert main(["retrain", "--print-config"]) == 0
    printed = capsys.readouterr().out
    example = (REPO_ROOT / "systemd" / "retrain.toml").read_text()
    body = example[example.index("[data]") :]  # after the header comment
    for path in (
        "/var/lib/edgevae-retrain/data/normal",
        "/var/lib/edgevae-retrain/data/labelled",
        "/var/lib/edgevae-repo",
    ):
        body = body.replace(f'"{path}"', '""')
    assert body == printed


def test_a_generator_is_trained_by_one_table_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables = _empty_setup(tmp_path)
    export, generator = {"flags": ["--generator", str(tmp_path)]}, {"kind": "gan"}
    config = write_config(tmp_path / "retrain.toml", **tables, export=export, generator=generator)
    assert main(["retrain", "--config", str(config)]) == 2
    assert "export.flags: ['--generator'," in capsys.readouterr().err


@pytest.mark.slow
def test_a_retrain_ships_a_generator_of_the_same_data(world: World, tmp_path: Path) -> None:
    init(tmp_path / "repo")
    config = write_config(
        tmp_path / "gen.toml",
        data={"train": str(world.normal), "evaluate": str(world.labelled)},
        train={"flags": TRAIN_FLAGS},
        generator={"kind": "gan", "flags": ["--steps", "5", "--hidden", "8", "--blocks", "1", "--n-critic", "1"]},
        publish={"repo": str(tmp_path / "repo"), "fleet": ["canary"]},
        output={"directory": str(tmp_path / "runs")},
    )
    assert main(["retrain", "--config", str(config)]) == 0
    report = _only_report(tmp_path / "runs")
    assert list(report["seconds"]) == ["gather", "train", "generator", "export", "gate", "publish"]
    manifest = load_bundle(report["bundle"]).manifest
    assert manifest.generator["kind"] == "gan"
    assert manifest.generator["noise_shape"][1] == manifest.window, "the model's window"
    found = field_model(tmp_path / "repo", "canary")
    assert found is not None
    assert load_bundle(found.archive).manifest.generator == manifest.generator, "published with the bundle"
