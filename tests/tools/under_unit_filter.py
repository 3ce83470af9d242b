"""Run a command under the syscall filter of a systemd unit, as systemd would apply it.

Run by Debian's python3 (it has python3-seccomp); the filter survives the exec into the command, so the
command, e.g. the agent in the project's virtual environment, runs under exactly the unit's filter.

    /usr/bin/python3 under_unit_filter.py [--kill] UNIT_FILE -- COMMAND...

The unit's `SystemCallFilter=` lines are applied in order (the first one an allow-list, `~` lines removing
from it, plain lines adding to it), groups expanded by `systemd-analyze syscall-filter`. A denied call kills
the process (SIGSYS), as systemd does, unless `SystemCallErrorNumber=` names an errno to return instead;
`--kill` ignores that setting, to prove that a command makes no denied call at all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from functools import cache

import seccomp


@cache
def expand(name: str) -> frozenset[str]:
    if not name.startswith("@"):
        return frozenset([name])
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True)
    calls: set[str] = set()
    for line in out.stdout.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            calls |= expand(item)
    return frozenset(calls)


def unit_filter(unit: str) -> tuple[set[str], str | None]:
    allowed: set[str] | None = None
    error_number = None
    with open(unit, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    for raw in lines:
        key, _, value = raw.strip().partition("=")
        if key == "SystemCallErrorNumber":
            error_number = value.strip()
        if key != "SystemCallFilter":
            continue
        deny = value.startswith("~")
        names = set().union(*(expand(n) for n in value.lstrip("~").split()))
        if allowed is None:
            if deny:
                msg = "a deny-list first is not handled; the unit starts with an allow-list"
                raise SystemExit(msg)
            allowed = names
        elif deny:
            allowed -= names
        else:
            allowed |= names
    if allowed is None:
        raise SystemExit(f"{unit}: no SystemCallFilter=")
    return allowed, error_number


def main() -> None:
    args = sys.argv[1:]
    strict = bool(args) and args[0] == "--kill"
    unit, sep, *command = args[1:] if strict else args
    if sep != "--" or not command:
        raise SystemExit(__doc__)
    allowed, error_number = unit_filter(unit)
    if strict:
        error_number = None
    default = seccomp.ERRNO(getattr(errno, error_number)) if error_number else seccomp.KILL_PROCESS
    flt = seccomp.SyscallFilter(defaction=default)
    for call in sorted(allowed | {"execve", "exit_group"}):  # the exec into the command itself
        with contextlib.suppress(RuntimeError, ValueError):  # a name this architecture does not have
            flt.add_rule(seccomp.ALLOW, call)
    flt.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
