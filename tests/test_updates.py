"""Model updates end to end: a signed release published on the training host's repository reaches a
running agent (HTTP transport here), is verified, staged, self-tested, shadowed and swapped in while
readings flow; a bad one is refused or rolled back and the old model scores on."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from agent_fixtures import (
    CHANNELS,
    MEAN,
    STD,
    WINDOW,
    Collector,
    Names,
    Publisher,
    batched_payloads,
    make_bundle,
    stream,
)
from onnx import TensorProto, helper, numpy_helper

from edgevae.agent.backends import create_backend
from edgevae.agent.bundle import describe_files, load_bundle, write_manifest
from edgevae.agent.golden import GOLDEN_FILE, write_golden
from edgevae.core.errors import BackendError
from edgevae.demo.broker import Broker
from edgevae.export.repo_mirror import mirror
from edgevae.export.repo_publish import publish

FAST = {"poll_s": 0.3, "shadow_s": 1.0, "shadow_min_windows": 20, "probation_s": 0.0, "group": "canary"}


def updates_section(repo: Path, url: str, **extra: Any) -> dict[str, Any]:
    return {"trusted_root": str(repo / "metadata" / "1.root.json"), "transport": "http", "url": url, **FAST, **extra}


def steps(collector: Collector, names: Names) -> list[tuple[str, int | None]]:
    topic = names.agent_topic("update")
    return [(m.json()["step"], m.json()["release"]) for m in collector.on(topic) if m.json()["step"] != "idle"]


def wait_step(collector: Collector, names: Names, step: str, timeout: float = 30.0) -> dict[str, Any]:
    topic = names.agent_topic("update")
    found: dict[str, Any] = collector.latest_json(topic, lambda u: u["step"] == step, timeout)
    return found


def feed(
    publisher: Publisher, names: Names, rows: int, stop: threading.Event, collector: Collector | None = None
) -> Callable[[], int]:
    """Publish a normal stream in the background until `stop`; the function returned waits for the
    publisher to finish and gives the readings it sent. With `collector`, it waits first for the agent to
    say online (its subscription is in place): readings sent before that would never reach it."""
    if collector is not None:
        collector.wait_payload(names.status, b"online", 15)
    payloads = batched_payloads(stream(rows), per_message=4)
    sent = [0]

    def run() -> None:
        for p in payloads:
            if stop.is_set():
                return
            publisher.send(names.data("pump-1"), p)
            sent[0] += 4
            stop.wait(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def finished() -> int:
        thread.join(10)
        return sent[0]

    return finished


def test_a_good_release_is_taken_while_readings_flow(
    tmp_path: Path, repo: Path, served: str, run_agent: Callable[..., Any], collector: Collector,
    names: Names, publisher: Publisher,
) -> None:  # fmt: skip
    service = run_agent(updates=updates_section(repo, served))
    stop = threading.Event()
    sent = feed(publisher, names, 4000, stop, collector)
    publish(repo, make_bundle(tmp_path / "v2", model_version="2.0.0"), fleet=["canary"])
    wait_step(collector, names, "committed", 30)
    stats = collector.latest_json(names.stats, lambda s: s["model"]["version"] == "2.0.0", 10)
    stop.set()
    assert [s for s, _ in steps(collector, names)] == ["received", "verified", "staged", "shadow", "committed"]
    total = sent()
    try:
        final = collector.latest_json(names.stats, lambda s: s["readings"] == total, 20)
    except TimeoutError:
        last = collector.on(names.stats)[-1].json()
        raise AssertionError(f"sent {total}, the agent says {last}") from None
    assert final["readings"] == total, "every reading sent across the swap was scored once"
    assert final["dropped"] == {k: 0 for k in final["dropped"]}
    assert service.manifest.model_version == "2.0.0"
    assert stats["model"]["id"] == "tiny-zscore"


def test_a_release_whose_alert_rate_explodes_is_rolled_back_in_shadow(
    tmp_path: Path, repo: Path, served: str, run_agent: Callable[..., Any], collector: Collector,
    names: Names, publisher: Publisher,
) -> None:  # fmt: skip
    # The self-test before shadow would refuse this release (next test); let it through to shadow.
    service = run_agent(updates=updates_section(repo, served, selftest_max_normal_flagged=1.0))
    stop = threading.Event()
    feed(publisher, names, 4000, stop)
    publish(repo, make_bundle(tmp_path / "v2", model_version="2.0.0", threshold=0.01), fleet=["canary"])
    rolled = wait_step(collector, names, "rolled_back", 30)
    stop.set()
    assert rolled["release"] == 1
    assert "would-be alert rate" in rolled["reason"]
    assert service.manifest.model_version == "1.0.0", "the old model scores on"
    assert not collector.on(names.alert("pump-1")), "a shadow raises nothing"


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ({"threshold": 0.01}, "detection self-test: flags 100% of 4 normal golden windows (at most 50% allowed)"),
        ({"threshold": 1e6}, "detection self-test: catches 0% of the injected faults (at least 50% required)"),
    ],
)
def test_a_release_that_fails_its_detection_self_test_never_shadows(
    tmp_path: Path, repo: Path, served: str, run_agent: Callable[..., Any], collector: Collector,
    names: Names, variant: dict[str, Any], reason: str,
) -> None:  # fmt: skip
    service = run_agent(updates=updates_section(repo, served))
    publish(repo, make_bundle(tmp_path / "v2", model_version="2.0.0", **variant), fleet=["canary"])
    rejected = wait_step(collector, names, "rejected", 30)
    assert (rejected["release"], rejected["reason"]) == (1, reason)
    assert rejected["selftest"]["source"] == "golden"
    assert set(rejected["selftest"]["caught"]) == {"offset", "spike", "drift", "noise"}
    assert ("shadow", 1) not in steps(collector, names)
    assert service.manifest.model_version == "1.0.0"


def test_a_release_shadows_with_its_detection_self_test_figures(
    tmp_path: Path, repo: Path, served: str, run_agent: Callable[..., Any], collector: Collector, names: Names
) -> None:
    run_agent(updates=updates_section(repo, served))
    publish(repo, make_bundle(tmp_path / "v2", model_version="2.0.0"), fleet=["canary"])
    shadow = wait_step(collector, names, "shadow", 30)
    assert shadow["selftest"]["normal_flagged"] == 0.0
    assert shadow["selftest"]["caught"]["offset"] == 1.0


@pytest.mark.parametrize(
    ("case", "check"),
    [
        ("incompatible channels", "channels"),
        ("not for this group", None),
    ],
)
def test_a_release_the_device_cannot_take_is_refused(
    tmp_path: Path, repo: Path, served: str, run_agent: Callable[..., Any], collector: Collector,
    names: Names, case: str, check: str | None,
) -> None:  # fmt: skip
    service = run_agent(updates=updates_section(repo, served))
    if case == "incompatible channels":
        publish(repo, make_bundle(tmp_path / "v2", model_version="2.0.0", channels=("a", "b", "c")), fleet=["canary"])
        refused = wait_step(collector, names, "rejected", 30)
        assert refused["check"] == check
        assert "channels" in refused["reason"]
    else:
        publish(repo, make_bundle(tmp_path / "v2", model_version="2.0.0"), fleet=["elsewhere"])
        threading.Event().wait(2.0)
        assert steps(collector, names) == [], "a release for another group is none of this device's business"
    assert service.manifest.model_version == "1.0.0"


def test_over_mqtt_a_device_offline_during_the_push_takes_it_when_it_comes_back(
    tmp_path: Path, repo: Path, broker: Broker, run_agent: Callable[..., Any], collector: Collector,
    names: Names, publisher: Publisher,
) -> None:  # fmt: skip
    publish(repo, make_bundle(tmp_path / "v2", model_version="2.0.0"), fleet=["canary"])
    mirror(repo, broker.url, prefix=names.prefix)  # retained: waits for devices that are not there yet
    section = {"trusted_root": str(repo / "metadata" / "1.root.json"), "transport": "mqtt", **FAST}
    service = run_agent(updates=section)
    stop = threading.Event()
    sent = feed(publisher, names, 4000, stop)
    wait_step(collector, names, "committed", 30)
    assert service.manifest.model_version == "2.0.0"
    # A second release while it runs: the new timestamp on the mirror wakes it.
    publish(repo, make_bundle(tmp_path / "v3", model_version="3.0.0"), fleet=["canary"])
    mirror(repo, broker.url, prefix=names.prefix)
    collector.latest_json(names.stats, lambda s: s["model"]["version"] == "3.0.0", 30)
    stop.set()
    sent()
    releases = [r for s, r in steps(collector, names) if s == "committed"]
    assert releases == [1, 2]


def test_a_broker_without_a_repository_is_no_refusal(
    repo: Path, run_agent: Callable[..., Any], collector: Collector, names: Names
) -> None:
    run_agent(updates={"trusted_root": str(repo / "metadata" / "1.root.json"), "transport": "mqtt", **FAST})
    threading.Event().wait(2.5)
    assert steps(collector, names) == [], "nothing mirrored yet: nothing to say"


def nan_model_bundle(root: Path) -> Path:
    """A model that passes its golden windows (readings two std above the mean) and scores NaN on normal
    readings: sqrt(z - 1) of each standardised value."""
    root.mkdir(parents=True)
    channels = len(CHANNELS)
    mean = numpy_helper.from_array(MEAN.astype(np.float32).reshape(1, 1, channels), "mean")
    std = numpy_helper.from_array(STD.astype(np.float32).reshape(1, 1, channels), "std")
    one = numpy_helper.from_array(np.ones((1, 1, channels), dtype=np.float32), "one")
    nodes = [
        helper.make_node("Sub", ["window", "mean"], ["centered"]),
        helper.make_node("Div", ["centered", "std"], ["z"]),
        helper.make_node("Sub", ["z", "one"], ["shifted"]),
        helper.make_node("Sqrt", ["shifted"], ["root"]),
        helper.make_node("ReduceMean", ["root"], ["channel_error"], axes=[1], keepdims=0),
        helper.make_node("ReduceMean", ["channel_error"], ["score"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "nan_on_normal",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", WINDOW, channels])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("channel_error", TensorProto.FLOAT, ["batch", channels])],
        initializer=[mean, std, one],
    )  # fmt: skip
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(root / "model.onnx")
    )
    windows = np.broadcast_to((MEAN + 2 * STD).astype(np.float32), (4, WINDOW, channels)).copy()
    backend = create_backend(root / "model.onnx")
    golden = write_golden(root, windows, backend.run(windows).score)
    backend.close()
    reference = load_bundle(make_bundle(root.parent / "reference")).manifest
    manifest = dataclasses.replace(
        reference, model_version="2.0.0", files=describe_files(root, ["model.onnx", GOLDEN_FILE]), golden=golden
    )
    write_manifest(root, manifest)
    return root


def test_a_release_that_scores_nan_is_rolled_back_in_shadow(
    tmp_path: Path, repo: Path, served: str, run_agent: Callable[..., Any], collector: Collector,
    names: Names, publisher: Publisher,
) -> None:  # fmt: skip
    service = run_agent(updates=updates_section(repo, served))
    stop = threading.Event()
    sent = feed(publisher, names, 4000, stop)
    publish(repo, nan_model_bundle(tmp_path / "nan"), fleet=["canary"])
    rolled = wait_step(collector, names, "rolled_back", 30)
    stop.set()
    sent()
    assert "shadow:" in rolled["reason"]
    assert "NaN or infinity" in rolled["reason"]
    assert [s for s, _ in steps(collector, names)] == ["received", "verified", "staged", "shadow", "rolled_back"]
    assert service.manifest.model_version == "1.0.0"


def test_an_unreachable_repository_stops_updates_not_scoring(
    repo: Path, run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher
) -> None:
    run_agent(updates=updates_section(repo, "http://127.0.0.1:9"))
    refused = wait_step(collector, names, "rejected", 15)
    assert refused["check"] == "unreachable"
    publisher.send(names.data("pump-1"), batched_payloads(stream(40), per_message=4))
    stats = collector.latest_json(names.stats, lambda s: s["readings"] == 40, 10)
    assert stats["windows_scored"] > 0, "the running model scores on"


def single_window_model_bundle(root: Path) -> Path:
    """A model that scores one window at a time only (its graph reshapes to a batch of 1): it passes a
    golden set of one window and fails on the batches a live agent scores."""
    root.mkdir(parents=True)
    make_bundle(root.parent / "reference")
    model = onnx.load(str(root.parent / "reference" / "model.onnx"))
    shape = numpy_helper.from_array(np.array([1, WINDOW, len(CHANNELS)], dtype=np.int64), "one_window")
    model.graph.initializer.append(shape)
    model.graph.node.insert(0, helper.make_node("Reshape", ["window", "one_window"], ["window_1"]))
    for node in model.graph.node[1:]:
        node.input[:] = ["window_1" if name == "window" else name for name in node.input]
    onnx.save(model, str(root / "model.onnx"))
    windows = stream(WINDOW)[None].astype(np.float32)
    backend = create_backend(root / "model.onnx")
    golden = write_golden(root, windows, backend.run(windows).score)
    backend.close()
    reference = load_bundle(root.parent / "reference").manifest
    files = describe_files(root, ["model.onnx", GOLDEN_FILE])
    write_manifest(root, dataclasses.replace(reference, model_version="2.0.0", files=files, golden=golden))
    return root


def test_a_release_that_fails_to_score_live_batches_is_rolled_back_in_shadow(
    tmp_path: Path, repo: Path, served: str, run_agent: Callable[..., Any], collector: Collector,
    names: Names, publisher: Publisher,
) -> None:  # fmt: skip
    service = run_agent(updates=updates_section(repo, served))
    publish(repo, single_window_model_bundle(tmp_path / "single"), fleet=["canary"])
    payloads = batched_payloads(stream(4000), per_message=16)  # four windows due per message
    topic = names.agent_topic("update")
    for payload in payloads:
        if any(m.json()["step"] == "rolled_back" for m in collector.on(topic)):
            break
        publisher.send(names.data("pump-1"), payload)
        threading.Event().wait(0.02)
    rolled = wait_step(collector, names, "rolled_back", 5)
    assert "scoring failed on a batch of" in rolled["reason"]
    assert service.manifest.model_version == "1.0.0"
    assert [s for s, _ in steps(collector, names)][-1] == "rolled_back", "not left hanging in shadow"


def test_a_committed_model_that_fails_in_probation_is_rolled_back(
    tmp_path: Path, repo: Path, served: str, run_agent: Callable[..., Any], collector: Collector,
    names: Names, publisher: Publisher,
) -> None:  # fmt: skip
    service = run_agent(updates=updates_section(repo, served, probation_s=60.0))
    stop = threading.Event()
    sent = feed(publisher, names, 8000, stop)
    publish(repo, make_bundle(tmp_path / "v2", model_version="2.0.0"), fleet=["canary"])
    wait_step(collector, names, "probation", 30)
    assert service.manifest.model_version == "2.0.0"

    def broken(windows: np.ndarray) -> Any:
        msg = "injected: the runtime fails on every batch"
        raise BackendError(msg)

    service.backend.run = broken  # the committed model's runtime starts failing
    rolled = wait_step(collector, names, "rolled_back", 20)
    assert rolled["reason"] == "scoring failed within the probation period"
    collector.latest_json(names.stats, lambda s: s["model"]["version"] == "1.0.0", 10)
    before = collector.latest_json(names.stats, lambda s: True, 5)["windows_scored"]
    collector.latest_json(names.stats, lambda s: s["windows_scored"] > before, 10)  # scoring again
    stop.set()
    sent()


def test_an_alert_open_at_the_swap_is_ended_with_a_reason(
    tmp_path: Path, repo: Path, served: str, run_agent: Callable[..., Any], collector: Collector,
    names: Names, publisher: Publisher,
) -> None:  # fmt: skip
    run_agent(updates=updates_section(repo, served))
    payloads = batched_payloads(stream(8000, ("temp", 40, 8000)), per_message=4)  # a fault that goes on
    topic, alerts = names.agent_topic("update"), names.alert("pump-1")
    published = False
    for payload in payloads:
        if not published and collector.on(alerts):
            publish(repo, make_bundle(tmp_path / "v2", model_version="2.0.0"), fleet=["canary"])
            published = True
        if any(m.json()["step"] == "committed" for m in collector.on(topic)) and len(collector.on(alerts)) >= 3:
            break
        publisher.send(names.data("pump-1"), payload)
        threading.Event().wait(0.01)
    first, end, again = (m.json() for m in collector.on(alerts)[:3])
    assert (first["type"], first["model"]["version"]) == ("alert", "1.0.0")
    assert (end["type"], end["id"], end["reason"]) == ("end", first["id"], "model_changed")
    assert (again["type"], again["model"]["version"]) == ("alert", "2.0.0"), "the new model raises its own alert"
    assert again["id"] != first["id"]


def test_over_mqtt_a_bundle_of_several_megabytes_is_taken(
    tmp_path: Path, repo: Path, broker: Broker, run_agent: Callable[..., Any], collector: Collector,
    names: Names, publisher: Publisher,
) -> None:  # fmt: skip
    big = make_bundle(tmp_path / "v2", model_version="2.0.0")
    (big / "notes.bin").write_bytes(np.random.default_rng(0).bytes(6 * 1024 * 1024))  # incompressible
    manifest = load_bundle(big).manifest
    files = describe_files(big, ["model.onnx", GOLDEN_FILE, "notes.bin"])
    write_manifest(big, dataclasses.replace(manifest, files=files))
    publish(repo, big, fleet=["canary"])
    mirror(repo, broker.url, prefix=names.prefix)
    run_agent(updates={"trusted_root": str(repo / "metadata" / "1.root.json"), "transport": "mqtt", **FAST})
    stop = threading.Event()
    sent = feed(publisher, names, 4000, stop)
    wait_step(collector, names, "committed", 60)
    stop.set()
    sent()
