"""`python -m offload.workers <task-id>`: the process one LLM or agent task runs in.

The supervisor starts it (own session and process group, output appended to the task's
log, `OFFLOAD_TASK_ID` set, provider keys on a pipe, never in its environment, where any
process of the same user could read them in /proc) and decides the final
state from the exit code: 0 completed, anything else failed, with the `error` recorded
here as the reason. A cancel or timeout is the supervisor's SIGTERM: the default action
ends this process at once, even mid-request.

Runners are looked up by task type and imported lazily; each is a callable
`run(task, ctx: WorkerContext) -> Outcome` that raises `OffloadError` on failure.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from offload.errors import OffloadError
from offload.queue.models import LLM_TYPES

__all__ = ["RUNNERS", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
RUNNERS: dict[str, str] = {
    **{name: "offload.workers.llm:run_llm_task" for name in LLM_TYPES},
    "agent": "offload.workers.agent:run_agent_task",
}


def _runner(task_type: str) -> Callable[..., Any]:
    target = RUNNERS.get(task_type)
    if target is None:
        raise OffloadError(f"task type '{task_type}' does not run in a worker process")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise OffloadError(f"{task_type} tasks are not available in this version") from None
    runner: Callable[..., Any] = getattr(module, attr)
    return runner


def _receive_keys() -> None:
    """Takes the keys the supervisor sent on a pipe and makes this process undumpable.

    They go into `os.environ` (which the SDKs read), not into the starting environment
    block /proc/self/environ shows; the commands an agent runs get an environment built
    from an allow list, which no key passes.
    """
    from offload.supervisor.keys import make_undumpable, take_keys

    make_undumpable()
    os.environ.update(take_keys())


def _run(task_id: str) -> int:
    from offload.config import load_settings
    from offload.queue import open_store
    from offload.workers.llm import WorkerContext
    from offload.workers.redact import scrub

    settings = load_settings()
    store = open_store(settings)
    try:
        task = store.get(task_id)
        ctx = WorkerContext(settings=settings, store=store, environ=os.environ, out=sys.stdout)
        try:
            with ctx:
                outcome = _runner(task.type)(task, ctx)
        except OffloadError as exc:
            message = scrub(str(exc))
            ctx.say(f"error: {message}")
            _record(store, task, error=message)
            return EXIT_FAILED
        except Exception as exc:  # the top of the process: log it, record a reason
            ctx.say(scrub(traceback.format_exc()))
            _record(store, task, error=scrub(f"internal error: {type(exc).__name__}: {exc}"))
            return EXIT_FAILED
        _record(store, task, result=outcome.result, files_written=outcome.files_written)
        return EXIT_OK
    finally:
        store.close()


def _record(store: Any, task: Any, **result: Any) -> None:
    """Stores the task's result, fenced by the supervisor that claimed it.

    On a shared queue that supervisor may have lost its lease while this ran: the task is
    `interrupted` already, the write is refused, and there is nothing left to record.
    """
    from offload.errors import LeaseLost

    try:
        store.record_result(task.id, supervisor_id=task.supervisor_id, **result)
    except LeaseLost as exc:
        print(f"error: the result was not recorded: {exc}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the task whose id is the only argument; returns the process exit code."""
    from offload.workers.redact import remember_secrets, scrub

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m offload.workers TASK_ID", file=sys.stderr)
        return EXIT_USAGE
    _receive_keys()
    remember_secrets(os.environ)
    try:
        return _run(args[0])
    except OffloadError as exc:  # bad config or no such task: record it where we can
        message = scrub(str(exc))
        print(f"error: {message}", file=sys.stderr, flush=True)
        _record_early_failure(args[0], message)
        return EXIT_FAILED


def _record_early_failure(task_id: str, message: str) -> None:
    """Stores why the task could not even start (an invalid config file, most likely)."""
    from pathlib import Path

    from offload.config import Settings
    from offload.queue import open_store

    home = Path(os.path.expanduser(os.environ.get("OFFLOAD_HOME") or "~/.offload"))
    if not (home / "queue.db").is_file():
        return
    try:
        store = open_store(Settings(home=home))
    except OffloadError:
        return
    try:
        store.record_result(task_id, error=message)
    except OffloadError:
        pass
    finally:
        store.close()


if __name__ == "__main__":
    raise SystemExit(main())
