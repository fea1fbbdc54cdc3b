"""The submitter's environment: what a task takes from the shell (or server) that queued it.

A task runs with the PATH, virtualenv, locale and tool-chain variables of whoever
submitted it, not of whoever happened to start the supervisor, so `mytool` and the right
`python3` are found, as with pueue or tsp. Only names on a fixed list (plus the config's
`env_allow`) are captured, so an unknown name never travels; secret-looking names never do
(`is_secret_name`), nor names that make the loader or the shell run code first
(`LD_PRELOAD`, `BASH_ENV`, ...). The front end's own environment is trusted this far
because it already chose the front end's policy (`OFFLOAD_ALLOW` comes from it too).

Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from offload.policies.environment import ENV_ALLOWLIST, MAX_ENV_VALUE_BYTES, is_secret_name

__all__ = [
    "CAPTURED_NAMES",
    "UNBUFFERED_VAR",
    "capture_environ",
    "is_sensitive_name",
    "masked",
    "task_base_env",
]

CAPTURED_NAMES: frozenset[str] = ENV_ALLOWLIST | frozenset(
    {
        "LANGUAGE",
        "COLORTERM",
        "NO_COLOR",
        "XDG_CONFIG_HOME",
        "XDG_CACHE_HOME",
        "XDG_DATA_HOME",
        # Python
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "CONDA_DEFAULT_ENV",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYENV_ROOT",
        "PYENV_VERSION",
        # C, C++ and friends
        "CC",
        "CXX",
        "CPP",
        "AR",
        "LD",
        "CFLAGS",
        "CXXFLAGS",
        "CPPFLAGS",
        "LDFLAGS",
        "CPATH",
        "LIBRARY_PATH",
        "PKG_CONFIG_PATH",
        "CMAKE_PREFIX_PATH",
        # Go, Rust, Java, Node, Ruby, .NET
        "GOPATH",
        "GOROOT",
        "GOBIN",
        "GOCACHE",
        "GOMODCACHE",
        "GOFLAGS",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "JAVA_HOME",
        "GRADLE_USER_HOME",
        "MAVEN_HOME",
        "NODE_PATH",
        "NVM_DIR",
        "GEM_HOME",
        "GEM_PATH",
        "DOTNET_ROOT",
    }
)
"""Names captured from the submitter's environment (every ``LC_*`` name too)."""

UNBUFFERED_VAR = "PYTHONUNBUFFERED"
MAX_CAPTURED_BYTES = 256 * 1024

# Names (upper-cased) that make the loader or the shell run code first, and offload's own.
_LOADER_NAMES = frozenset({"BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "IFS"})
_LOADER_PREFIXES = ("LD_", "DYLD_", "OFFLOAD_")
# Broader than `is_secret_name`: what `offload show` masks rather than what is refused.
_SENSITIVE = r".*(KEY|TOKEN|SECRET|PASS|AUTH|CRED|COOKIE|SESSION|PRIVATE).*"  # see masked()


def _safe(name: str) -> bool:
    upper = name.upper()
    loader = upper in _LOADER_NAMES or upper.startswith(_LOADER_PREFIXES)
    return not (loader or is_secret_name(name))


def _wanted(name: str, extra: frozenset[str]) -> bool:
    if not (name in CAPTURED_NAMES or name in extra or name.startswith("LC_")):
        return False
    return _safe(name)


def _usable(value: object) -> bool:
    if not isinstance(value, str) or "\0" in value:
        return False
    try:
        return len(os.fsencode(value)) <= MAX_ENV_VALUE_BYTES
    except UnicodeEncodeError:
        return False


def capture_environ(environ: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The part of a front end's environment a task it submits runs with.

    Args:
        environ: The front end's environment (``os.environ`` of the CLI or MCP server).
        extra: More names to capture (the ``env_allow`` setting); secrets still never pass.

    Returns:
        The captured names and values, sorted by name; values with a NUL byte, that cannot
        be encoded or larger than 32 KiB are left out, and the whole stays under 256 KiB.
    """
    if isinstance(extra, str):
        raise TypeError("extra must be a collection of names, not a single string")
    more = frozenset(extra)
    captured: dict[str, str] = {}
    total = 0
    for name in sorted(environ):
        value = environ[name]
        if not (_wanted(name, more) and _usable(value)):
            continue
        total += len(name) + len(value)
        if total > MAX_CAPTURED_BYTES:
            break
        captured[name] = value
    return captured


def task_base_env(
    environ: Mapping[str, str],
    fallback: Mapping[str, str],
    *,
    unbuffered: bool = True,
) -> dict[str, str]:
    """What a shell task starts from before its own ``env`` and the marker go on top.

    The task's stored submitter environment was captured under the submitter's settings
    (its ``env_allow``); it is scrubbed again of secrets and loader names, so a row written
    by hand never smuggles one in. A task stored without one (an older offload) starts from
    `fallback`, the supervisor's allow-listed environment. With `unbuffered`,
    ``PYTHONUNBUFFERED=1`` makes Python output reach the log (and progress) as it is written.
    """
    base = (
        {k: v for k, v in environ.items() if _safe(k) and _usable(v)} if environ else dict(fallback)
    )
    if unbuffered:
        base.setdefault(UNBUFFERED_VAR, "1")
    return base


def is_sensitive_name(name: str) -> bool:
    """Whether a variable's value should be hidden when a task is shown."""
    return is_secret_name(name) or re.fullmatch(_SENSITIVE, name.upper()) is not None


def masked(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment with the values of sensitive-looking names replaced by ``***``."""
    return {k: ("***" if is_sensitive_name(k) else v) for k, v in environ.items()}
