"""Claiming ready tasks and starting each as its own contained process tree.

The loop decides when to claim (a wake-up, a freed slot, the safety-net poll); this module
does the claim, spawns every task it got and records how it runs. A task that cannot be
started fails with the reason, and one task's failure never strands the others. Every
write names the member the task was claimed under, so a fenced member's are refused.
"""

from __future__ import annotations

import os
from typing import Any

from offload.config import Settings
from offload.errors import LeaseLost, OffloadError
from offload.policies.limits import Limits
from offload.policies.submitter_env import task_base_env
from offload.queue.models import State, Task
from offload.queue.store import Store
from offload.supervisor.containment import Containment
from offload.supervisor.spawn import SpawnError, shell_base_env, spawn_task
from offload.supervisor.tracker import Running, Tracker
from offload.supervisor.tree import TaskTree

__all__ = ["TaskStarter", "limits_of"]


def limits_of(settings: Settings) -> Limits:
    """The rlimits and nice value every task process gets."""
    return Limits(
        address_space_bytes=(settings.max_address_space_mb or 0) * 1024 * 1024 or None,
        cpu_seconds=settings.max_cpu_seconds,
        open_files=settings.max_open_files,
        nice=settings.nice,
    )


class TaskStarter:
    """Claims tasks for one supervisor and spawns them into its Tracker."""

    def __init__(
        self, settings: Settings, store: Store, tracker: Tracker, keys: dict[str, str], log: Any
    ) -> None:
        self.settings = settings
        self.store = store
        self.tracker = tracker
        self.log = log
        self.limits = limits_of(settings)
        self.containment: Containment | None = None  # found when the supervisor starts
        self._keys = keys  # provider keys, handed to LLM/agent workers over a pipe
        # The allow-listed part of our own environment, filtered once: every shell task
        # starts from it (then its own env and the marker go on top).
        self._shell_env = shell_base_env(os.environ, settings.env_allow)

    def claim_and_spawn(self, n: int, supervisor_id: str, now: float) -> bool:
        """Claims up to `n` ready tasks and starts them; False when the claim was refused.

        A refusal (`LeaseLost`) means this member's lease is gone: `tracker.lease_lost`
        makes the next pass ask for it, and be fenced.
        """
        settings = self.settings
        try:
            claimed = self.store.claim(
                n,
                supervisor_id,
                settings.groups,
                settings.default_group_limit,
                labels=settings.labels,
            )
        except LeaseLost as exc:
            self.log.error("claim_refused", error=str(exc))
            self.tracker.lease_lost = True
            return False
        for task in claimed:
            try:
                self.spawn(task, now)
            except Exception as exc:  # one task's failure must not strand the others
                self.log.exception("spawn_error", task_id=task.id)
                self._fail(task, f"could not start: {exc}")
        return True

    def spawn(self, task: Task, now: float) -> None:
        """Starts one claimed task and records its process."""
        assert self.containment is not None, "the supervisor's start() first"
        base_env = task_base_env(
            task.environ, self._shell_env, unbuffered=self.settings.python_unbuffered
        )
        try:
            spawned = spawn_task(
                task,
                logs_dir=self.settings.logs_dir,
                parent_env=os.environ,
                shell_env=base_env,
                env_allow=(*self.settings.env_allow, *base_env),
                limits=self.limits,
                containment=self.containment,
                keys=self._keys,
            )
        except SpawnError as exc:
            self.log.info("spawn_failed", task_id=task.id, error=str(exc))
            self._fail(task, str(exc))
            return
        pid = spawned.popen.pid
        timeout = task.timeout_seconds or self.settings.default_timeout_seconds
        self.tracker.running[pid] = Running(
            task=task,
            popen=spawned.popen,
            tree=TaskTree(task.id, pid, spawned.cgroup, pid if spawned.pid_namespace else None),
            log_path=spawned.log_path,
            deadline=now + timeout if timeout else None,
            wrapped=spawned.wrapped,
            log_by_init=spawned.log_by_init,
        )
        try:
            self.store.mark_started(
                task.id,
                pid=pid,
                pgid=pid,
                proc_start=spawned.started,
                cgroup=spawned.cgroup,
                log_path=str(spawned.log_path),
                containment=spawned.containment,
                supervisor_id=task.supervisor_id,
            )
        except LeaseLost as exc:  # fenced: the next pass confirms it and kills the tree
            self.tracker.lease_lost = True
            self.log.error("mark_started_refused", task_id=task.id, error=str(exc))
        except OffloadError as exc:  # it runs and is tracked; only the record is missing
            self.log.error("mark_started_failed", task_id=task.id, error=str(exc))

    def _fail(self, task: Task, error: str) -> None:
        self.tracker.record(task.id, State.FAILED, error=error, supervisor_id=task.supervisor_id)
