"""`edgevae repo status`: each role's version, expiry, keys and threshold, then the releases devices can see."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from tuf.api.metadata import Signed

from edgevae.agent.release import Release
from edgevae.export import repo_keys
from edgevae.export.repo_publish import CHANNELS, releases
from edgevae.export.repo_store import ROLES, Current, Repository, load_current, open_repository, utcnow


def span(delta: timedelta) -> str:
    """A duration as people read it.

    >>> span(timedelta(days=3, hours=5)), span(timedelta(hours=5, minutes=7)), span(timedelta(minutes=-90))
    ('3 d 5 h', '5 h 7 min', '-1 h 30 min')
    """
    sign, delta = ("-", -delta) if delta < timedelta(0) else ("", delta)
    minutes = int(delta.total_seconds()) // 60
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    text = f"{days} d {hours} h" if days else f"{hours} h {mins} min" if hours else f"{mins} min"
    return sign + text


@dataclass(frozen=True)
class RoleStatus:
    role: str
    version: int
    expires: datetime
    left: timedelta
    threshold: int
    keys: tuple[str, ...]  # short ids, "(offline)" when the private key is not in keys/
    flag: str  # "", "soon" or "EXPIRED"


def role_status(repo: Repository, current: Current, now: datetime) -> list[RoleStatus]:
    root = current.root.signed
    signed: dict[str, Signed] = {
        "root": root,
        "targets": current.targets.signed,
        "snapshot": current.snapshot.signed,
        "timestamp": current.timestamp.signed,
    }
    rows = []
    for role in ROLES:
        md = signed[role]
        left = md.expires - now
        flag = "EXPIRED" if left <= timedelta(0) else "soon" if repo.running_out(md, now) else ""
        keys = tuple(
            repo_keys.short(k) + ("" if repo_keys.key_path(repo.keys_dir, role, k).exists() else " (offline)")
            for k in root.roles[role].keyids
        )
        rows.append(RoleStatus(role, md.version, md.expires, left, root.roles[role].threshold, keys, flag))
    return rows


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]


def _audience(release: Release) -> str:
    return ", ".join([f"fleet/{g}" for g in release.fleet] + [f"device/{d}" for d in release.devices])


def status(path: Path, now: datetime | None = None) -> str:
    repo = open_repository(path)
    now = now or utcnow()
    with repo.locked():
        current = load_current(repo)
    roles = role_status(repo, current, now)
    lines = [f"repository {repo.path}", ""]
    lines += _table(
        ("role", "version", "expires", "in", "threshold", "keys", ""),
        [
            (
                r.role,
                str(r.version),
                r.expires.strftime("%Y-%m-%d %H:%M UTC"),
                span(r.left),
                f"{r.threshold} of {len(r.keys)}",
                ", ".join(r.keys),
                r.flag,
            )
            for r in roles
        ],
    )
    for r in roles:
        if r.flag:
            lines.append(f"! {r.role} version {r.version} {_warning(r)}")
    targets = current.targets.signed.targets
    by_path = releases(current.targets.signed)
    pointed: dict[str, list[str]] = {}
    for pointer, release in sorted(by_path.items()):
        if pointer.startswith(CHANNELS):
            pointed.setdefault(release.bundle, []).append(pointer.removeprefix(CHANNELS))
    bundles = sorted((r.release, p) for p, r in by_path.items() if not p.startswith(CHANNELS))
    lines += ["", f"releases ({len(bundles)} current, next release {max((n for n, _ in bundles), default=0) + 1})"]
    rows = []
    for number, target in bundles:
        release = by_path[target]
        rows.append(
            (
                str(number),
                f"{release.model_id} {release.model_version}",
                _audience(release),
                ", ".join(pointed.get(target, [])),
                target,
                str(targets[target].length),
            )
        )
    lines += _table(("release", "model", "published for", "current for", "target", "bytes"), rows) if rows else []
    return "\n".join(lines)


def _warning(r: RoleStatus) -> str:
    if r.flag == "EXPIRED":
        what = f"expired {span(-r.left)} ago: devices refuse the whole repository until it is re-signed"
    else:
        what = f"expires in {span(r.left)}"
    remedy = {
        "timestamp": "run `edgevae repo refresh-timestamp` and check that edgevae-timestamp.timer is active",
        "snapshot": "run `edgevae repo refresh-timestamp`, which renews it too",
        "targets": "run `edgevae repo refresh-timestamp`, which renews it too",
        "root": "sign a new root: bring the root keys back and run `edgevae repo rotate-key root`",
    }[r.role]
    return f"{what} ({remedy})"


__all__ = ["RoleStatus", "role_status", "span", "status"]
