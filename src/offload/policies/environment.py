"""Task environments: what a task process inherits and what a submitter may add.

A task starts from a small allowlist of the supervisor's environment (``PATH``, ``HOME``,
locale, ...), never a provider secret, then the submitter's own ``env``, then the marker
``OFFLOAD_TASK_ID`` that lets the supervisor find the task's processes again. Secret-looking
names are refused in a submitter's ``env`` too, so a task cannot be used to smuggle
credentials into logs. Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Iterable, Mapping

from offload.errors import InvalidInput, PolicyRefused

__all__ = [
    "DEFAULT_PATH",
    "ENV_ALLOWLIST",
    "MAX_ENV_ENTRIES",
    "MAX_ENV_VALUE_BYTES",
    "SECRET_PATTERNS",
    "TASK_ID_VAR",
    "SAFE_TASK_ENV",
    "build_task_env",
    "check_env_allowed",
    "check_task_env",
    "is_secret_name",
]

ENV_ALLOWLIST: frozenset[str] = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TERM",
        "TZ",
        "TMPDIR",
        "PWD",
    }
)
"""Names a task inherits from the supervisor (every other ``LC_*`` name is inherited too)."""

SECRET_PATTERNS: tuple[str, ...] = (
    "AWS_*",
    "OPENAI_*",
    "ANTHROPIC_*",
    "AZURE_*",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "*API_KEY",
    "*_SECRET*",
    "SECRET_*",
    "*_TOKEN",
    "*_PASSWORD",
    "OFFLOAD_*",
)
"""Shell-style globs (matched case-insensitively) for names that hold secrets or offload's
own settings; such names never reach a task."""

SAFE_TASK_ENV: tuple[str, ...] = (
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "FORCE_COLOR",
    "CLICOLOR",
    "COLUMNS",
    "LINES",
    "CI",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONIOENCODING",
    "PYTHONHASHSEED",
    "SOURCE_DATE_EPOCH",
)
"""Task ``env`` names (globs) allowed while an allow list is in force: none of them makes a
program load code, run a helper or read another config. Everything else (``MAKEFLAGS``,
``PYTHONPATH``, ``NODE_OPTIONS``, ``GIT_CONFIG_*``, ``BROWSER``, ``PAGER`` ...) needs the
setting ``env_allow``."""

TASK_ID_VAR = "OFFLOAD_TASK_ID"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_ENV_ENTRIES = 64
MAX_ENV_VALUE_BYTES = 32 * 1024

_LOCALE_PREFIX = "LC_"
# Patterns are compiled by `re` on first use (and cached there), not at import: every
# `offload submit` imports this module, and most never check a task env name.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# Names that make the dynamic loader or the shell run code before the command itself,
# which would get round the command policy.
_LOADER = r"LD_.*|DYLD_.*|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|IFS"
# SECRET_PATTERNS split at their `*`s: matched with string methods, as `fnmatch` would
# match them, without compiling a regex on every CLI call (they hold no `?` or `[`).
_SECRET_PARTS = tuple(tuple(glob.split("*")) for glob in SECRET_PATTERNS)


def _star_match(name: str, parts: tuple[str, ...]) -> bool:
    """Whether `name` matches the glob whose `*`-separated literal parts are `parts`."""
    if len(parts) == 1:
        return name == parts[0]
    first, last = parts[0], parts[-1]
    end = len(name) - len(last)
    if end < len(first) or not name.startswith(first) or not name.endswith(last):
        return False
    at = len(first)
    for middle in parts[1:-1]:
        found = name.find(middle, at, end)
        if found < 0:
            return False
        at = found + len(middle)
    return True


def is_secret_name(name: str) -> bool:
    """Tell whether an environment name looks like a credential or an offload setting."""
    # The supervisor judges the same few inherited names for every task it starts, so
    # verdicts are kept; only for short names: a submitter's env names are not limited
    # in length, and 4,096 names of a megabyte each would pin gigabytes.
    return _judged(name) if len(name) <= _KEPT_NAME_MAX else _judge(name)


_KEPT_NAME_MAX = 128


def _judge(name: str) -> bool:
    upper = name.upper()
    return any(_star_match(upper, parts) for parts in _SECRET_PARTS)


_judged = functools.lru_cache(maxsize=4096)(_judge)


def check_task_env(env: Mapping[str, str]) -> dict[str, str]:
    """Validate the ``env`` a submitter asked for and return a plain copy.

    Raises:
        PolicyRefused: A name looks like a secret, is an ``OFFLOAD_*`` name, or changes how
            programs are loaded or how the shell starts (``LD_PRELOAD``, ``BASH_ENV``, ...).
        InvalidInput: ``env`` is not a mapping, has more than 64 entries, a name is not a
            shell identifier, or a value is not a string, holds a NUL byte, cannot be
            encoded or is larger than 32 KiB.
    """
    if not isinstance(env, Mapping):
        raise InvalidInput(f"env must be a mapping of names to strings, not {type(env).__name__}")
    if len(env) > MAX_ENV_ENTRIES:
        raise InvalidInput(f"env has {len(env)} entries; at most {MAX_ENV_ENTRIES} are allowed")
    checked: dict[str, str] = {}
    for name, value in env.items():
        _check_name(name)
        checked[name] = _check_value(name, value)
    return checked


def check_env_allowed(names: Iterable[str], env_allow: Iterable[str] = ()) -> str | None:
    """The reason a task ``env`` name is refused under an allow list, or None.

    A name passes when it matches (as a shell glob, case-sensitively) one of
    :data:`SAFE_TASK_ENV` or `env_allow`. An allow list judges the programs a task runs;
    variables such as ``MAKEFLAGS=--eval=...``, ``GIT_CONFIG_*`` or ``PYTHONWARNINGS`` +
    ``BROWSER`` turn an allowed program into any other, so only known-harmless names pass.
    """
    globs = (*SAFE_TASK_ENV, *env_allow)
    for name in names:
        if not any(fnmatch.fnmatchcase(name, glob) for glob in globs):
            return (
                f"env {name!r} is not allowed while an allow list is in force: it could "
                "change what an allowed program runs; add it to the setting env_allow if "
                "it is harmless"
            )
    return None


def build_task_env(
    parent: Mapping[str, str],
    task_env: Mapping[str, str],
    task_id: str,
    *,
    extra_allow: Iterable[str] = (),
) -> dict[str, str]:
    """Build the complete environment of one task process.

    Args:
        parent: The supervisor's environment; only allowlisted, non-secret names pass.
        task_env: The submitter's ``env``; validated again with :func:`check_task_env`.
        task_id: The task's id, set as ``OFFLOAD_TASK_ID`` last so nothing overrides it.
        extra_allow: More names to inherit from ``parent`` (from the config); secrets are
            still dropped.

    Raises:
        PolicyRefused: ``task_env`` holds a refused name (see :func:`check_task_env`).
        InvalidInput: ``task_env`` is malformed or ``task_id`` is empty.
    """
    if isinstance(extra_allow, str):
        raise TypeError("extra_allow must be a collection of names, not a single string")
    if not isinstance(task_id, str) or not task_id or "\0" in task_id:
        raise InvalidInput(f"task id {task_id!r} must be a non-empty string")
    requested = check_task_env(task_env)
    allowed = ENV_ALLOWLIST | frozenset(extra_allow)
    env = {
        name: value
        for name, value in parent.items()
        if _inherited(name, allowed) and isinstance(value, str) and "\0" not in value
    }
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(requested)
    env.pop(TASK_ID_VAR, None)
    env[TASK_ID_VAR] = task_id
    return env


def _inherited(name: str, allowed: frozenset[str]) -> bool:
    return (name in allowed or name.startswith(_LOCALE_PREFIX)) and not is_secret_name(name)


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not re.fullmatch(_NAME, name):
        raise InvalidInput(
            f"env name {name!r} is invalid; use letters, digits and '_', not starting with a digit"
        )
    if name.upper().startswith("OFFLOAD_"):
        raise PolicyRefused(
            f"env {name!r} is reserved; OFFLOAD_* names hold offload's own settings and marker"
        )
    if is_secret_name(name):
        raise PolicyRefused(
            f"env {name!r} looks like a secret; offload keeps secrets out of task environments"
        )
    if re.fullmatch(_LOADER, name):
        raise PolicyRefused(
            f"env {name!r} changes how programs load or how the shell starts; "
            "offload refuses it so the command policy cannot be bypassed"
        )


def _check_value(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"env {name!r} must be a string, not {type(value).__name__}")
    if "\0" in value:
        raise InvalidInput(f"env {name!r} contains a NUL byte, which no process can receive")
    try:
        size = len(os.fsencode(value))
    except UnicodeEncodeError:
        raise InvalidInput(f"env {name!r} holds characters that cannot be encoded") from None
    if size > MAX_ENV_VALUE_BYTES:
        raise InvalidInput(
            f"env {name!r} is {size} bytes; at most {MAX_ENV_VALUE_BYTES} (32 KiB) are allowed"
        )
    return value
