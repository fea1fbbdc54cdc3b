"""The policy a task carries: what its submitter's front end allowed, stored with the task.

A task is judged by the policy in force where it was submitted, never by the environment
that happened to start the supervisor. The supervisor, the LLM and agent workers and every
retry read it from the task's row. A sub-task inherits its parent's policy and may only
narrow it (`narrowed`): a stricter allow list adds a layer that every command must also
pass, deny lists and hidden paths add up, the sandbox and a cut network stay on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offload.config import Settings
    from offload.policies.commands import CommandPolicy

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

    @classmethod
    def from_settings(
        cls, settings: Settings, roots: Sequence[Path | str], *, sandbox: bool | None = None
    ) -> TaskPolicy:
        """The effective policy of a front end running under `settings` over `roots`.

        `sandbox` is the front end's decision for this submission (``auto`` resolves to on
        for agents' work and off for a person's CLI); None reads the setting ``sandbox``
        and counts only ``on``. Sandbox settings this version lacks keep their defaults.

        Raises:
            ConfigError: An allow or deny pattern is not a valid regex.
        """
        from offload.policies.commands import compile_policy

        compile_policy(settings.allow, settings.deny)  # a typo fails here, at the front end
        mode = getattr(settings, "sandbox", "off")
        return cls(
            allow=(tuple(settings.allow),) if any(p.strip() for p in settings.allow) else (),
            deny=tuple(p for p in settings.deny if p.strip()),
            env_allow=tuple(settings.env_allow),
            sandbox=bool(mode == "on" or mode is True) if sandbox is None else sandbox,
            network=bool(getattr(settings, "sandbox_network", True)),
            writable=_strings(getattr(settings, "sandbox_writable", ())),
            hide=_with_targets(_strings(getattr(settings, "sandbox_hide", ()))),
            roots=tuple(str(Path(root)) for root in roots),
        )

    def for_task(
        self, sandbox: bool | None, network: bool | None, *, may_loosen: bool
    ) -> TaskPolicy:
        """This policy with one submission's own containment choice applied.

        Asking for the sandbox, or for no network (which needs the sandbox), always
        narrows and is always granted. Turning the sandbox off, or the network back on,
        loosens: only a person's own door may (`may_loosen`); an agent can never turn its
        containment off for itself.

        Raises:
            PolicyRefused: An agent asked to loosen its containment.
        """
        from dataclasses import replace

        from offload.errors import PolicyRefused

        chosen = self
        if sandbox is True or network is False:
            chosen = replace(chosen, sandbox=True)
        if network is False:
            chosen = replace(chosen, network=False)
        loosen = (sandbox is False and self.sandbox) or (network is True and not self.network)
        if loosen and not may_loosen:
            raise PolicyRefused(
                "an agent cannot turn its own sandbox or network cut off; drop the "
                "sandbox/network field, or ask the person to run the task themselves"
            )
        if sandbox is False and may_loosen:
            chosen = replace(chosen, sandbox=False)
        if network is True and may_loosen:
            chosen = replace(chosen, network=True)
        return chosen

    def command_policy(
        self, *, forbidden: Sequence[Path | str] = (), roots: Sequence[Path | str] | None = None
    ) -> CommandPolicy:
        """The compiled command rules of this policy.

        Args:
            forbidden: Directories no redirection may reach (offload's data directory).
            roots: Where redirections may point, if not this policy's roots (an agent's
                commands run in a staging copy of the workspace).

        Raises:
            ConfigError: A stored pattern is not a valid regex.
        """
        from offload.policies.commands import compile_policy

        layers = [layer for layer in self.allow if layer]
        return compile_policy(
            layers[0] if layers else (),
            self.deny,
            more_allow=layers[1:],
            roots=self.roots if roots is None else roots,
            forbidden=forbidden,
        )

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


def _with_targets(paths: tuple[str, ...]) -> tuple[str, ...]:
    """The hidden paths and what each resolves to at submit: a task may re-point a link
    inside its workspace, and the credentials it pointed at must stay hidden."""
    resolved = (os.path.realpath(os.path.expanduser(p)) for p in paths)
    return tuple(dict.fromkeys([*paths, *resolved]))


def _unique(items: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(i for i in items if i))
