"""The policy a task carries: what its submitter's front end allowed, stored with the task.

A task is judged by the policy in force where it was submitted, never by the environment
that happened to start the supervisor. The supervisor, the LLM and agent workers and every
retry read it from the task's row. A sub-task inherits its parent's policy and may only
narrow it (`narrowed`): a stricter allow list adds a layer that every command must also
pass, deny lists and hidden paths add up, the sandbox and a cut network stay on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["TaskPolicy"]


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value or ())


@dataclass(frozen=True)
class TaskPolicy:
    """A front end's effective policy, as stored with each task it submits.

    Attributes:
        allow: Allow-list layers: every simple command must match a pattern of every
            non-empty layer. One layer per front end that narrowed the policy.
        deny: Deny patterns; any match refuses.
        env_allow: Task `env` names allowed beyond the harmless defaults while an allow
            list is in force.
        sandbox: Whether the task runs in the filesystem/network sandbox.
        network: Whether a sandboxed task may use the network (False: loopback only).
        writable: Extra paths a sandboxed task may write (besides its workspace and /tmp).
        hide: Paths a sandboxed task must not see at all.
        roots: The workspace roots every path of the task must stay inside.
    """

    allow: tuple[tuple[str, ...], ...] = ()
    deny: tuple[str, ...] = ()
    env_allow: tuple[str, ...] = ()
    sandbox: bool = False
    network: bool = True
    writable: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()
    roots: tuple[str, ...] = ()

    @property
    def has_allow_list(self) -> bool:
        """True when at least one allow-list layer is in force."""
        return any(self.allow)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (lists, not tuples)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "allow":
                value = [list(layer) for layer in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> TaskPolicy:
        """The policy stored as `data`; an empty or missing record is the open default."""
        if not data:
            return cls()
        return cls(
            allow=tuple(_strings(layer) for layer in data.get("allow") or () if layer),
            deny=_strings(data.get("deny")),
            env_allow=_strings(data.get("env_allow")),
            sandbox=bool(data.get("sandbox", False)),
            network=bool(data.get("network", True)),
            writable=_strings(data.get("writable")),
            hide=_strings(data.get("hide")),
            roots=_strings(data.get("roots")),
        )

    def narrowed(self, other: TaskPolicy) -> TaskPolicy:
        """This policy further restricted by `other`: never wider than either.

        Allow layers and deny patterns add up; env names must be allowed by both; the
        sandbox stays on if either asks for it and the network stays off if either cuts it;
        writable paths are those both allow; hidden paths add up. Roots stay this policy's
        (a narrower front end's roots lie inside them, and paths are checked at submit).
        """
        writable = tuple(p for p in self.writable if p in set(other.writable))
        env_allow = tuple(n for n in self.env_allow if n in set(other.env_allow))
        return TaskPolicy(
            allow=_unique(self.allow + other.allow),
            deny=_unique(self.deny + other.deny),
            env_allow=env_allow,
            sandbox=self.sandbox or other.sandbox,
            network=self.network and other.network,
            writable=writable,
            hide=_unique(self.hide + other.hide),
            roots=self.roots,
        )


def _unique(items: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(i for i in items if i))
