"""The benchmark's report: the machine it ran on and its tables, as markdown."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, cores this process may use, memory, load, library versions."""
    cpu = next((line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())  # fmt: skip
    memory = next((line.split()[1] for line in _lines("/proc/meminfo") if line.startswith("MemTotal:")), "0")
    versions = {name: _version(name) for name in ("onnxruntime", "paho-mqtt", "numpy", "edgevae")}
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(int(memory) / 2**20, 1),
        "load_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "kernel": platform.release(),
        **versions,
    }


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    b = results["bundle"]
    lines = [
        "# Hot-path benchmark"
        + (" (quick mode: a check that the benchmark runs, not figures)" if results["quick"] else ""),  # fmt: skip
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, load {m['load_1m_at_start']} at the "
        f"start; Python {m['python']}, onnxruntime {m['onnxruntime']}, paho-mqtt {m['paho-mqtt']}, edgevae "
        f"{m['edgevae']}. The model: the simulated plant's VAE, window {b['window']}, {b['channels']} channels, "
        f"default stride {b['stride']}. Regenerate with `make bench` ({results['seconds']} s).",
        "",
        "## Throughput",
        "",
        "Each consumer is paused (SIGSTOP) while the publisher hands the broker every message, then resumed:",
        "it reads at its own speed. Same broker (mosquitto, loopback), same messages, MQTT 5, QoS 1. The agent "
        f"runs its defaults: readings through {results.get('readings_client', 'paho')} (`mqtt.readings_client`); "
        "the ratio is to the bare paho subscriber.",
        "",
        "| consumer | readings/message | precision | stride | readings/s | ratio to bare | CPU µs/reading | "
        "dropped | lost | windows/batch | peak RSS MiB | start to online s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["throughput"]:
        if r["consumer"] != "agent":
            lines.append(f"| bare paho subscriber | {r['per_message']} | | | {r['readings_per_s']:,.0f} | 1 | "
                         f"{r['cpu_us_per_reading']:.1f} | | | | | |")  # fmt: skip
            continue
        dropped = _dropped(r)
        per_batch = r["windows_scored"] / r["batches"] if r["batches"] else 0.0
        lines.append(
            f"| agent | {r['per_message']} | {r['precision']} | {r['stride']} | {r['readings_per_s']:,.0f} | "
            f"{r['ratio']:.3f} | {r['cpu_us_per_reading']:.1f} | {dropped} | {r['lost']:,} | {per_batch:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {r['start_to_online_s']:.1f} |"
        )
    if "protocols" in results:
        lines += [
            "",
            "## MQTT 5 against MQTT 3.1.1",
            "",
            "One reading a message, stride 1, the default precision; the bare subscriber and the agent "
            "(`mqtt.protocol`) in each protocol, on the same messages.",
            "",
            "| protocol | bare readings/s | bare CPU µs/reading | agent readings/s | ratio | "
            "agent CPU µs/reading | dropped |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in results["protocols"]:
            bare, agent = p["bare"], p["agent"]
            lines.append(f"| {p['protocol']} | {_bare_cells(bare)} | {agent['readings_per_s']:,.0f} | "
                         f"{agent['ratio']:.3f} | {agent['cpu_us_per_reading']:.1f} | {_dropped(agent)} |")  # fmt: skip
    if "clients" in results:
        paho = next(c["bare"]["readings_per_s"] for c in results["clients"] if c["client"] == "paho")
        lines += [
            "",
            "## The readings' client: paho against libmosquitto",
            "",
            "One reading a message, stride 1, the default precision; the bare subscriber on each client and the "
            "agent with each `mqtt.readings_client`, on the same messages.",
            "",
            "| client | bare readings/s | bare CPU µs/reading | agent readings/s | agent / bare paho | "
            "agent / bare on its client | agent CPU µs/reading | dropped |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in results["clients"]:
            bare, agent = c["bare"], c["agent"]
            rate = agent["readings_per_s"]
            lines.append(f"| {c['client']} | {_bare_cells(bare)} | {rate:,.0f} | {rate / paho:.3f} | "
                         f"{rate / bare['readings_per_s']:.3f} | {agent['cpu_us_per_reading']:.1f} | "
                         f"{_dropped(agent)} |")  # fmt: skip
    lat = results["latency"]
    lines += [
        "",
        "## Publish→alert latency",
        "",
        f"{lat['devices']} devices, {lat['rate']:,.0f} readings/s in all (published at {lat['published_rate']:,.0f}), "
        f"one reading a message, a step fault on each device; {b.get('precision', 'int8').upper()} (the export's "
        "default), stride 1.",
        "",
        "| | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| publish → alert ({lat['alerts']} alerts of {lat['faults']} faults) | {lat['alert_p50_ms']:.2f} | "
        f"{lat['alert_p99_ms']:.2f} |",
        f"| publish → subscriber (the broker's round trip, same run) | {lat['broker_p50_ms']:.2f} | "
        f"{lat['broker_p99_ms']:.2f} |",
        "",
        f"The agent scored {lat['windows_scored']:,} windows in {lat['batches']:,} batches.",
        "",
        "## Offline scoring",
        "",
        "| precision | rows | `edgevae score` rows/s | bare ONNX Runtime loop rows/s | ratio | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for precision, o in results["offline"].items():
        lines.append(
            f"| {precision} | {o['rows']:,} | {o['score_rows_per_s']:,.0f} | {o['bare_rows_per_s']:,.0f} | "
            f"{o['score_rows_per_s'] / o['bare_rows_per_s']:.3f} | {o['score_peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _dropped(row: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in row["dropped"].items()) or "0"


def _bare_cells(bare: dict[str, Any]) -> str:
    return f"{bare['readings_per_s']:,.0f} | {bare['cpu_us_per_reading']:.1f}"
