"""`edgevae rollout`: a release to the canary group first, then, once every canary has taken it, the fleet.

1. Find the canaries: agents whose retained update state names the canary group (`--canary-devices N`
   waits until that many are seen).
2. Publish the bundle to the canary group (and mirror the repository to the broker).
3. Watch their update topics: each must reach `committed` (or `probation` with `--promote-on probation`)
   for that release. One that rolls back or rejects it halts the rollout at once, saying which device and
   why; the fleet pointer is never published then.
4. Publish the same bundle to the fleet group (a new release number) and mirror again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgevae.core.errors import ExportError
from edgevae.export.fleet import AgentView, FleetWatch
from edgevae.export.repo_mirror import mirror
from edgevae.export.repo_publish import publish

logger = logging.getLogger(__name__)

FAILED_STEPS = ("rolled_back", "rejected")


@dataclass
class RolloutResult:
    canary_release: int
    fleet_release: int | None
    canaries: dict[str, str] = field(default_factory=dict)  # agent -> its outcome for the canary release
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"canary release {self.canary_release}:"]
        lines += [f"  {agent}: {outcome}" for agent, outcome in sorted(self.canaries.items())]
        lines.append(
            f"promoted: fleet release {self.fleet_release}"
            if self.fleet_release
            else "halted: the fleet was not updated"
        )
        lines.append(f"{self.seconds:.1f} s")
        return "\n".join(lines)


def _canaries(watch: FleetWatch, group: str, expected: int | None, discover_s: float) -> list[str]:
    deadline = time.monotonic() + discover_s
    while True:
        found = sorted(v.agent for v in watch.snapshot() if v.group == group)
        enough = len(found) >= expected if expected else bool(found) and time.monotonic() >= deadline
        if enough:
            return found
        if time.monotonic() >= deadline + (60.0 if expected else 0.0):
            msg = f"{len(found)} devices report group {group!r}" + (f", {expected} expected" if expected else "")
            raise ExportError(msg, remedy="check the canaries run with updates.group set to it and are online")
        watch.wait(0.5)


def _outcome(view: AgentView, release: int, accept: tuple[str, ...]) -> str | None:
    update = view.update
    if update.get("release") != release:
        return None
    step = str(update.get("step", ""))
    if step in accept or step in FAILED_STEPS:
        return step if step not in FAILED_STEPS else f"{step}: {update.get('reason', '')}"
    return None


def rollout(
    repo: Path,
    bundle: Path,
    canary: str,
    fleet: str,
    broker_url: str,
    prefix: str = "edgevae",
    canary_devices: int | None = None,
    promote_on: Literal["committed", "probation"] = "committed",
    timeout_s: float = 7200.0,
    discover_s: float = 3.0,
    **auth: Any,
) -> RolloutResult:
    """Raises ExportError when a canary refuses or rolls the release back, or on timeout."""
    started = time.monotonic()
    accept = ("committed",) if promote_on == "committed" else ("probation", "committed")
    watch = FleetWatch(broker_url, prefix, **auth)
    try:
        canaries = _canaries(watch, canary, canary_devices, discover_s)
        logger.info("canaries in %s: %s", canary, ", ".join(canaries))
        release = publish(repo, bundle, fleet=[canary]).release.release
        mirror(repo, broker_url, prefix, **auth)
        result = RolloutResult(release, None)
        deadline = time.monotonic() + timeout_s
        while len(result.canaries) < len(canaries):
            views = {v.agent: v for v in watch.snapshot()}
            for agent in canaries:
                outcome = _outcome(views[agent], release, accept) if agent in views else None
                if outcome is None or agent in result.canaries:
                    continue
                result.canaries[agent] = outcome
                logger.info("canary %s: %s", agent, outcome)
                if outcome.startswith(FAILED_STEPS):
                    result.seconds = time.monotonic() - started
                    msg = f"rollout halted: canary {agent} {outcome} (release {release})"
                    raise ExportError(msg, remedy="the fleet was not updated; see `edgevae fleet status`")
            if time.monotonic() > deadline:
                waiting = [a for a in canaries if a not in result.canaries]
                msg = f"rollout timed out after {timeout_s:.0f} s waiting for {', '.join(waiting)}"
                raise ExportError(msg, remedy="the fleet was not updated; see `edgevae fleet status`")
            watch.wait(1.0)
        result.fleet_release = publish(repo, bundle, fleet=[fleet]).release.release
        mirror(repo, broker_url, prefix, **auth)
        result.seconds = time.monotonic() - started
        return result
    finally:
        watch.close()
