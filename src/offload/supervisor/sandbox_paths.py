"""The sandbox's default paths, apart from the sandbox itself.

The settings need them as defaults on every `offload` call; the sandbox module (bwrap,
probing) is only for the supervisor and the workers, so the defaults live here, with no
imports to pay for.
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_HIDE", "default_writable"]

DEFAULT_HIDE: tuple[str, ...] = (
    "~/.ssh",
    "~/.aws",
    "~/.gnupg",
    "~/.netrc",
    "~/.config/gh",
    "~/.docker",
    "~/.kube",
    # other places that hold provider or registry credentials
    "~/.azure",
    "~/.config/gcloud",
    "~/.git-credentials",
    "~/.config/git/credentials",
    "~/.pypirc",
    "~/.npmrc",
    "~/.cargo/credentials.toml",
    "~/.cargo/credentials",
    "~/.config/openai",
    "~/.anthropic",
    # a root-equivalent socket is a credential too
    "/var/run/docker.sock",
    "/run/docker.sock",
)
"""Paths a sandboxed task never sees (setting `sandbox_hide`)."""


def default_writable() -> tuple[str, ...]:
    """The user's cache dir, so pip/npm/cargo builds inside the sandbox keep working."""
    return (os.environ.get("XDG_CACHE_HOME") or "~/.cache",)
