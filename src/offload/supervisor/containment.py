"""What a supervisor can put around its tasks, found once at start and said once.

The layers, innermost last: a process group and session (everywhere), a cgroup v2 (Linux,
when one is writable), a PID namespace (Linux, root or CAP_SYS_ADMIN), the bubblewrap
sandbox (where bwrap runs, for tasks whose policy asks for it). What is missing is logged
once at start and written to `containment.json` in the data dir, which
`offload supervisor status` shows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offload.config import Settings
from offload.supervisor.cgroups import CgroupRoot, find_cgroup_root
from offload.supervisor.pidns import PidNamespaces, probe_pid_namespaces
from offload.supervisor.sandbox import Sandbox, probe_sandbox, with_targets

__all__ = ["STATUS_FILE", "Containment", "find_containment", "read_status"]

STATUS_FILE = "containment.json"


@dataclass
class Containment:
    """What this supervisor can put around a task.

    Attributes:
        cgroups: Where task cgroups go, or None.
        pidns: Whether tasks get their own PID namespace (and why not).
        sandbox: A working bwrap, or why there is none.
        hide: Paths hidden from every sandboxed task on top of its policy's
            (`sandbox_hide` and offload's data dir, and what each resolved to at start).
        require_sandbox: True (setting `sandbox = on`) to refuse a task that should be
            sandboxed where bwrap is missing, instead of running it without.
    """

    cgroups: CgroupRoot | None
    pidns: PidNamespaces
    sandbox: Sandbox
    hide: tuple[str, ...] = ()
    require_sandbox: bool = False

    def summary(self) -> dict[str, Any]:
        """Each layer: True, or the reason it is missing."""
        return {
            "pid_namespace": True if self.pidns.available else self.pidns.reason,
            "cgroup": str(self.cgroups.path) if self.cgroups else "no writable cgroup v2",
            "sandbox": True if self.sandbox.available else self.sandbox.reason,
        }

    def close(self) -> None:
        """Releases what was opened for the PID namespaces."""
        self.pidns.close()


def find_containment(settings: Settings, log: Any) -> Containment:
    """Probes every layer; logs (once) each that is missing, and writes the status file."""
    cgroups = find_cgroup_root(settings.home) if settings.cgroups else None
    if settings.pid_namespaces:
        pidns = probe_pid_namespaces()
    else:
        pidns = PidNamespaces(False, "turned off (pid_namespaces = false)")
    sandbox = probe_sandbox()  # whether a task is sandboxed is its policy's call, not ours
    box = Containment(
        cgroups=cgroups,
        pidns=pidns,
        sandbox=sandbox,
        hide=with_targets((str(settings.home), *settings.sandbox_hide)),
        require_sandbox=settings.sandbox == "on",
    )
    if not pidns.available:
        log.warning("no_pid_namespaces", reason=pidns.reason, fallback="process group + marker")
    if not sandbox.available:
        log.warning("no_sandbox", reason=sandbox.reason, required=box.require_sandbox)
    path = settings.home / STATUS_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(box.summary(), f)
    except OSError as exc:
        log.error("containment_status_unwritable", path=str(path), error=exc.strerror)
    return box


def read_status(home: Path) -> dict[str, Any] | None:
    """What the running supervisor of `home` wrote about its containment, if anything."""
    try:
        found = json.loads((home / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None
