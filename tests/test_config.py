"""Config validation: every error names its key path, the value and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest

from edgevae.agent.__main__ import main
from edgevae.agent.backends import REGISTRY, BackendConfig
from edgevae.agent.config import Config
from edgevae.agent.config_file import InvalidConfig, load_config, read_password, read_toml, reference
from edgevae.agent.readings import DropReason


def doc(bundle: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"model": {"bundle": str(bundle)}}
    for name, values in sections.items():
        out.setdefault(name, {}).update(values)
    return out


TOPIC = "a topic filter with exactly one `+` level (the device id)"
URL = "a URL mqtt://host[:port] or mqtts://host[:port]"
ALL_BACKENDS = "one of onnxruntime-cpu, onnxruntime-cuda, tensorrt"
KEEPALIVE = "an integer >= 1 and <= 65535"
PREFIX = "topic levels without wildcards or empty levels"
MQTT_STRING = "at most 65535 bytes of UTF-8, without U+0000 (an MQTT string)"
MQTT_KEYS = (
    "broker, protocol, client_id, username, password_file, password_credential, tls, keepalive, qos, topics, "
    "topic_prefix, state_interval_s, reconnect_max_s, session_expiry_s, readings_client"
)


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidConfig) as info:
        load_config(data)
    return [str(bad_value) for bad_value in info.value.bad_values]


def test_defaults(bundle: Path) -> None:
    config = load_config(doc(bundle))
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.use_tls) == ("localhost", 1883, False)
    assert config.mqtt.topics == ("sensors/+/data",)
    assert config.model.backend_key == "onnxruntime-cpu"
    assert config.agent_id.startswith("edgevae-")
    assert config.detection.trigger is None


def test_mqtts_defaults_to_port_8883(bundle: Path) -> None:
    mqtt = load_config(doc(bundle, mqtt={"broker": "mqtts://broker.example"})).mqtt
    assert (mqtt.use_tls, mqtt.host, mqtt.port) == (True, "broker.example", 8883)


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("mqtt", {"qos": 3}, "mqtt.qos: 3: one of 0, 1, 2"),
        ("mqtt", {"qos": True}, "mqtt.qos: True: one of 0, 1, 2"),  # a bool is not a QoS
        ("mqtt", {"qos": False}, "mqtt.qos: False: one of 0, 1, 2"),
        ("mqtt", {"keepalive": 0}, "mqtt.keepalive: 0: " + KEEPALIVE),  # MQTT's 0 (no keepalive) is refused
        ("mqtt", {"keepalive": 65536}, "mqtt.keepalive: 65536: " + KEEPALIVE),  # a two-byte field in CONNECT
        ("mqtt", {"keepalive": "60"}, "mqtt.keepalive: '60': " + KEEPALIVE),  # TOML's strings are not numbers
        ("mqtt", {"keepalive": 1.5}, "mqtt.keepalive: 1.5: " + KEEPALIVE),
        ("mqtt", {"protocol": "3"}, "mqtt.protocol: '3': one of '5', '3.1.1'"),
        ("mqtt", {"protocol": 5}, "mqtt.protocol: 5: one of '5', '3.1.1'"),  # a version, written as a string
        ("mqtt", {"topics": "a/+/b"}, "mqtt.topics: 'a/+/b': a list of strings"),
        ("mqtt", {"topics": ["a/+/b", 7]}, "mqtt.topics[1]: 7: a string"),
        ("mqtt", {"topics": ["a/b"]}, "mqtt.topics[0]: 'a/b': " + TOPIC),
        ("mqtt", {"topics": ["a/+/#"]}, "mqtt.topics[0]: 'a/+/#': " + TOPIC),
        ("mqtt", {"broker": "http://x"}, "mqtt.broker: 'http://x': " + URL),
        ("mqtt", {"broker": "mqtt://x:99999"}, "mqtt.broker: 'mqtt://x:99999': " + URL),
        ("mqtt", {"broker": "mqtt://x:0"}, "mqtt.broker: 'mqtt://x:0': " + URL),  # ports are 1..65535
        ("mqtt", {"broker": "mqtt://:1883"}, "mqtt.broker: 'mqtt://:1883': " + URL),  # no host
        (
            "mqtt",
            {"broker": "mqtt://u:p@x"},
            "mqtt.broker: 'mqtt://u:p@x': only scheme, host and port (credentials go in username/password_file)",
        ),
        ("mqtt", {"client_id": "a/b"}, "mqtt.client_id: 'a/b': an id without '/', '+' or '#' (it is a topic level)"),
        ("mqtt", {"topic_prefix": "a//b"}, "mqtt.topic_prefix: 'a//b': " + PREFIX),
        ("homeassistant", {"discovery_prefix": "ha/+"}, "homeassistant.discovery_prefix: 'ha/+': " + PREFIX),
        ("homeassistant", {"discovery_prefix": ""}, "homeassistant.discovery_prefix: '': " + PREFIX),
        ("metrics", {"host": "localhost"}, "metrics.host: 'localhost': an IP address such as 127.0.0.1 or ::1"),
        ("mqtt", {"state_interval_s": -1.0}, "mqtt.state_interval_s: -1.0: a number >= 0"),
        ("mqtt", {"topic_prefix": "a/+"}, "mqtt.topic_prefix: 'a/+': " + PREFIX),
        ("mqtt", {"topic_prefix": "#"}, "mqtt.topic_prefix: '#': " + PREFIX),
        ("mqtt", {"topic_prefix": ""}, "mqtt.topic_prefix: '': " + PREFIX),
        (
            "mqtt",
            {"topic_prefix": "$SYS"},
            "mqtt.topic_prefix: '$SYS': a topic that does not start with '$' (brokers reserve those)",
        ),
        ("mqtt", {"client_id": "x" * 65536}, f"mqtt.client_id: '{'x' * 76}...: " + MQTT_STRING),
        ("mqtt", {"client_id": "a\0b"}, "mqtt.client_id: 'a\\x00b': " + MQTT_STRING),
        ("mqtt", {"username": "é" * 32768}, f"mqtt.username: '{'é' * 76}...: " + MQTT_STRING),  # 2 bytes each
        ("mqtt", {"tls": "x"}, "mqtt.tls: 'x': a table with keys: ca, cert, key"),
        (
            "mqtt",
            {"tls": {"ca": "/nonexistent"}, "broker": "mqtts://x"},
            "mqtt.tls.ca: '/nonexistent': a readable file",
        ),
        ("mqtt", {"tls": {"crt": "x"}}, "mqtt.tls.crt: 'x': unknown key; allowed keys: ca, cert, key"),
        ("detection", {"trigger": 0}, "detection.trigger: 0: an integer >= 1, or left out"),
        ("detection", {"max_gap_periods": -1}, "detection.max_gap_periods: -1: a number >= 0"),
        ("detection", {"unknown_channels": "keep"}, "detection.unknown_channels: 'keep': one of 'drop', 'ignore'"),
        ("limits", {"max_payload_bytes": 10}, "limits.max_payload_bytes: 10: an integer >= 64"),
        ("limits", {"queue_wait_s": 60}, "limits.queue_wait_s: 60: a number >= 0 and <= 30"),
        ("stats", {"interval_s": 0}, "stats.interval_s: 0: a number > 0"),
        ("stats", {"interval_s": float("nan")}, "stats.interval_s: nan: a number > 0"),
        ("log", {"level": "verbose"}, "log.level: 'verbose': one of 'debug', 'info', 'warning', 'error'"),
        (
            "model",
            {"bundle": "/no/such/bundle"},
            "model.bundle: '/no/such/bundle': an existing bundle folder or .tar.gz",
        ),
        ("model", {"backend": {"type": "onnxruntime-cpu", "threads": 0}}, "model.backend.threads: 0: an integer >= 1"),
        (
            "model",
            {"backend": {"threads": 2, "thread": 1}},
            "model.backend.thread: 1: unknown key; allowed keys: type, threads",
        ),
        ("model", {"backend": {"type": "coreml"}}, "model.backend.type: 'coreml': " + ALL_BACKENDS),
        ("model", {"backend": "tensorrt"}, "model.backend: 'tensorrt': a table whose `type` is " + ALL_BACKENDS),
        ("model", {"backend": {"type": "tensorrt", "plan": 1}}, "model.backend.plan: 1: a string"),
        ("model", {"bundle": 7}, "model.bundle: 7: a string"),
        ("drift", {"interval_s": 0}, "drift.interval_s: 0: a number > 0"),
        ("mqtt", {"readings_client": "c"}, "mqtt.readings_client: 'c': one of 'auto', 'libmosquitto', 'paho'"),
    ],
)
def test_bad_values_name_key_value_and_expectation(
    bundle: Path, section: str, values: dict[str, Any], message: str
) -> None:
    assert errors(doc(bundle, **{section: values})) == [message]


def test_unknown_keys_name_the_allowed_ones(bundle: Path) -> None:
    got = errors(doc(bundle, mqtt={"brokr": "mqtt://x"}, extra={"a": 1}))
    assert got == [
        "mqtt.brokr: 'mqtt://x': unknown key; allowed keys: " + MQTT_KEYS,
        "extra: {'a': 1}: unknown key; allowed keys: "
        "mqtt, model, detection, limits, state, updates, selftest, stats, log, control, homeassistant, metrics, drift",
    ]


def test_every_problem_is_reported_at_once(bundle: Path) -> None:
    got = errors(doc(bundle, mqtt={"qos": 5}, limits={"max_devices": 0}, log={"level": 1}))
    assert [g.split(":")[0] for g in got] == ["mqtt.qos", "limits.max_devices", "log.level"]
    backend = {"type": "tensorrt", "workspace_mb": 8, "plan": 1, "threads": 2}
    got = errors(doc(Path("/no/bundle"), model={"backend": backend}, mqtt={"topics": ["a"], "qos": 1}))
    assert got == [
        "mqtt.topics[0]: 'a': " + TOPIC,
        "model.bundle: '/no/bundle': an existing bundle folder or .tar.gz",
        "model.backend.plan: 1: a string",
        "model.backend.workspace_mb: 8: an integer >= 16",
        "model.backend.threads: 2: unknown key; allowed keys: type, plan, cache_dir, device_id, max_batch, "
        "opt_batch, workspace_mb",
    ]


def test_inline_password_is_refused(bundle: Path) -> None:
    got = errors(doc(bundle, mqtt={"username": "u", "password": "hunter2"}))
    assert got == ["mqtt.password: '***': no inline passwords: use password_file or password_credential"]
    assert "hunter2" not in " ".join(got)


def test_password_from_credentials_directory(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load_config(doc(bundle, mqtt={"username": "edge", "password_credential": "mqtt-password"}))
    assert read_password(config.mqtt) == "s3cret"  # the file's trailing newline is not part of the secret


def test_credential_needs_credentials_directory(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    got = errors(doc(bundle, mqtt={"username": "edge", "password_credential": "mqtt-password"}))
    assert got == [
        "mqtt.password_credential: 'mqtt-password': a credential name, with $CREDENTIALS_DIRECTORY set "
        "(systemd LoadCredential=)"
    ]


def test_credential_file_must_exist(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    got = errors(doc(bundle, mqtt={"username": "edge", "password_credential": "absent"}))
    assert got == [
        f"mqtt.password_credential: 'absent': the name of a readable file in $CREDENTIALS_DIRECTORY ({tmp_path})"
    ]


def test_password_file(bundle: Path, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("abc")
    config = load_config(doc(bundle, mqtt={"username": "u", "password_file": str(secret)}))
    assert read_password(config.mqtt) == "abc"
    assert read_password(load_config(doc(bundle)).mqtt) is None
    got = errors(doc(bundle, mqtt={"password_file": str(secret)}))
    assert got == ["mqtt.username: '': a user name when a password is configured"]


def test_tls_rules(bundle: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert load_config(doc(bundle, mqtt={"broker": "mqtts://b", "tls": {"ca": str(ca)}})).mqtt.tls.ca == str(ca)
    got = errors(doc(bundle, mqtt={"broker": "mqtt://b", "tls": {"ca": str(ca)}}))
    assert got == [f"mqtt.tls.ca: '{ca}': TLS files only with an mqtts:// broker"]
    got = errors(doc(bundle, mqtt={"broker": "mqtts://b", "tls": {"cert": str(ca)}}))
    assert got == ["mqtt.tls.key: '': set together with `cert`/`key`"]


def test_print_config_is_a_valid_config(capsys: pytest.CaptureFixture[str], bundle: Path, tmp_path: Path) -> None:
    assert main(["--print-config"]) == 0
    (tmp_path / "printed.toml").write_text(capsys.readouterr().out)
    data = read_toml(tmp_path / "printed.toml")
    data["model"]["bundle"] = str(bundle)
    assert load_config(data) == Config(model=load_config(data).model)


def test_check_config_cli(tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(f'[model]\nbundle = "{bundle}"\n[mqtt]\ntopics = ["a/+/b"]\n')
    assert main(["--config", str(good), "--check-config"]) == 0
    assert "config OK" in capsys.readouterr().out

    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt]\nqos = 7\nport = 1883\n")
    assert main(["--config", str(bad), "--check-config", "--bundle", str(bundle)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[1:] == [
        "  mqtt.qos: 7: one of 0, 1, 2",
        "  mqtt.port: 1883: unknown key; allowed keys: " + MQTT_KEYS,
    ]

    broken = tmp_path / "broken.toml"
    broken.write_text("[mqtt\n")
    assert main(["--config", str(broken), "--check-config"]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_flags_override_the_file(tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "agent.toml"
    file.write_text('[mqtt]\nbroker = "ftp://wrong"\n')
    argv = ["--config", str(file), "--bundle", str(bundle), "--broker", "mqtt://h:1", "--check-config"]
    assert main(argv) == 0
    assert main(["--bundle", str(bundle), "--topic", "x/+", "--topic", "y/+/z", "--check-config"]) == 0
    assert main(["--bundle", str(bundle), "--topic", "x", "--check-config"]) == 2
    assert "mqtt.topics[0]: 'x'" in capsys.readouterr().err


def test_check_config_verifies_the_bundle(tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "bundle"
    broken.mkdir()
    for item in bundle.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    (broken / "model.onnx").write_bytes(b"tampered")
    assert main(["--bundle", str(broken), "--check-config"]) == 2
    assert "model.bundle:" in capsys.readouterr().err


def test_docs_list_every_key_and_drop_reason() -> None:
    text = (Path(__file__).parents[1] / "docs" / "agent.md").read_text()
    missing = [key for key, *_ in reference(Config) if f"`{key}`" not in text]
    missing += [reason.value for reason in DropReason if f"`{reason.value}`" not in text]
    assert missing == [], "docs/agent.md does not mention these config keys or drop reasons"


def test_a_first_run_without_a_bundle_says_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "model.bundle: '': the path of a model bundle (or --bundle)" in capsys.readouterr().err


def test_the_systemd_example_is_the_printed_config(capsys: pytest.CaptureFixture[str]) -> None:
    """systemd/agent.toml is --print-config with the unit's bundle path, so it lists every key of this version."""
    assert main(["--print-config"]) == 0
    printed = capsys.readouterr().out
    example = (Path(__file__).parents[1] / "systemd" / "agent.toml").read_text()
    body = example[example.index("[mqtt]") :]  # after the header comment
    assert body.replace('bundle = "/var/lib/edgevae/models/current"', 'bundle = ""') == printed


def test_every_registered_backend_has_its_options_in_the_config_union() -> None:
    tags = {option.model_fields["type"].default for option in get_args(get_args(BackendConfig)[0])}
    assert tags == set(REGISTRY)
    assert all(spec.options.model_fields["type"].default == key for key, spec in REGISTRY.items())


def test_the_default_client_id_tells_cloned_hosts_apart(tmp_path: Path) -> None:
    """Two hosts cloned with one hostname used to share a client id and throw each other off the broker."""
    from edgevae.agent.config import default_client_id

    ids = []
    for machine in ("3d1219c7aa0b4f", "77e0c2b1ffee01"):
        (tmp_path / machine).write_text(machine + "\n")
        ids.append(default_client_id("pump", tmp_path / machine))
    assert ids == ["edgevae-pump-3d1219c7", "edgevae-pump-77e0c2b1"]
    assert default_client_id("pump", tmp_path / "missing") == "edgevae-pump"
