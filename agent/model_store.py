"""The models a device has taken, on disk in its state directory, and which one it runs.

    <state>/models/<release>/      one verified bundle folder per release taken (staged, then renamed)
    <state>/update.json            the update state: active and previous release, the step under way

The state lives outside any model folder, so no bundle can overwrite it, and is written atomically
(write, fsync, rename, fsync the folder): a kill -9 or a power cut at any moment leaves either the old
state or the new one. What a restart makes of each step is `ModelStore.recover`: a candidate that was
staged or in shadow is dropped (the old model runs on), a model committed but still in probation is rolled
back (a restart within probation counts as a failure), a committed model whose folder is gone falls back
to the previous one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgevae.agent.bundle import load_bundle

logger = logging.getLogger(__name__)

Step = Literal["idle", "received", "verified", "staged", "shadow", "probation", "committed", "rolled_back", "rejected"]
HISTORY = 20


@dataclass
class Installed:
    release: int
    path: str
    model_id: str
    model_version: str


@dataclass
class UpdateState:
    step: Step = "idle"
    active: Installed | None = None  # None: the bundle named in the config (the one installed with the device)
    previous: Installed | None = None
    candidate: Installed | None = None
    probation_until: float = 0.0
    reason: str = ""
    refused: list[int] = field(default_factory=list)  # releases rejected or rolled back: never taken again
    history: list[dict[str, Any]] = field(default_factory=list)

    def record(self, step: Step, release: int | None, reason: str = "") -> None:
        self.step, self.reason = step, reason
        self.history = [
            *self.history,
            {"time": round(time.time(), 3), "step": step, "release": release, "reason": reason},
        ][-HISTORY:]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UpdateState:
        def installed(key: str) -> Installed | None:
            value = data.get(key)
            return Installed(**value) if value else None

        return cls(
            step=data.get("step", "idle"),
            active=installed("active"),
            previous=installed("previous"),
            candidate=installed("candidate"),
            probation_until=float(data.get("probation_until", 0.0)),
            reason=str(data.get("reason", "")),
            refused=[int(r) for r in data.get("refused", [])],
            history=list(data.get("history", [])),
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "models"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state_file = state_dir / "update.json"
        self.state = self._read()

    def _read(self) -> UpdateState:
        try:
            return UpdateState.from_dict(json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return UpdateState()
        except (ValueError, TypeError, KeyError) as exc:
            # Never fatal: the installed bundle from the config is always there to fall back to.
            logger.error("update state %s unreadable (%s); running the configured bundle", self.state_file, exc)
            return UpdateState()

    def save(self) -> None:
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        data = json.dumps(asdict(self.state), indent=1, sort_keys=True).encode()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)
        _fsync_dir(self.state_file.parent)

    def stage(self, release: int, archive: Path) -> Path:
        """Unpack a verified archive into models/<release> (write, fsync, rename); returns the folder."""
        final = self.root / str(release)
        if final.exists():
            return final  # staged before a restart, or the same release pushed twice
        staging = self.root / f".staging-{release}"
        shutil.rmtree(staging, ignore_errors=True)
        bundle = load_bundle(archive)  # unpacks and checks every file's sha256 against the manifest
        try:
            shutil.copytree(bundle.root, staging)
        finally:
            bundle.close()
        for child in staging.iterdir():
            with open(child, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(staging)
        os.replace(staging, final)
        _fsync_dir(self.root)
        return final

    def recover(self) -> str | None:
        """Make the state consistent after a restart; returns what was done, for the log, or None."""
        state = self.state
        note = None
        if state.step in ("received", "verified", "staged", "shadow") and state.candidate is not None:
            release = state.candidate.release
            note = f"release {release} was in step {state.step} when the agent stopped; dropped, the old model runs on"
            state.candidate = None
            state.record("rolled_back", release, "restarted before the release was committed")
            state.refused = sorted({*state.refused, release})
        elif state.step == "probation" and state.active is not None:
            bad = state.active
            note = f"release {bad.release} restarted within its probation; rolled back"
            self._roll_back("restarted within the probation period")
        if state.active is not None and not Path(state.active.path).is_dir():
            gone = state.active
            note = f"release {gone.release}'s folder {gone.path} is gone; rolled back"
            self._roll_back("the model folder is gone")
        if note:
            self.save()
        return note

    def _roll_back(self, reason: str) -> None:
        state = self.state
        bad = state.active
        state.active, state.previous = state.previous, None
        if bad is not None:
            state.refused = sorted({*state.refused, bad.release})
        state.probation_until = 0.0
        state.record("rolled_back", bad.release if bad else None, reason)

    def roll_back(self, reason: str) -> Installed | None:
        """Return to the previous model (or the configured bundle); the release left is never taken again."""
        bad = self.state.active
        self._roll_back(reason)
        self.save()
        return bad

    def commit(self, installed: Installed, probation_s: float) -> None:
        state = self.state
        state.previous, state.active, state.candidate = state.active, installed, None
        state.probation_until = time.time() + probation_s
        state.record("probation" if probation_s > 0 else "committed", installed.release)
        self.save()

    def prune(self) -> None:
        """Keep the active and previous folders (and a candidate's); remove older ones."""
        keep = {str(i.release) for i in (self.state.active, self.state.previous, self.state.candidate) if i}
        for child in self.root.iterdir():
            if child.name not in keep and not child.name.startswith("."):
                shutil.rmtree(child, ignore_errors=True)
