"""`offload service install|uninstall [--print]`: the supervisor and the HTTP server as user
services, a systemd user unit on Linux and a launchd agent on macOS.

Nothing here starts, stops or enables anything: it writes (or removes) the files and says
the one or two commands that enable them, so a person sees exactly what runs at login.
Each service runs this very interpreter (`python -m offload …`) with this data dir and
this PATH, because a service manager starts with a bare environment in which the venv's
`offload` and the tools tasks call (make, node, …) are not found.
"""

from __future__ import annotations

import os
import plistlib
import sys
from dataclasses import dataclass
from pathlib import Path

from offload.config import Settings
from offload.records import replace

__all__ = ["SERVICES", "ServiceFile", "main", "service_files"]

HTTP_PORT = 8765
SERVICES = ("supervisor", "http")
_SYSTEMD_DIR = Path(".config/systemd/user")
_LAUNCHD_DIR = Path("Library/LaunchAgents")
_STOP_MARGIN_SECONDS = 15


@dataclass(frozen=True)
class ServiceFile:
    """One file to write: where, what, and the name the service manager knows it by."""

    path: Path
    text: str
    name: str


def _argv(service: str, python: str) -> list[str]:
    # -P and a working directory of / (below): no directory a task can write may shadow a
    # module the supervisor imports (a planted ~/psutil.py would run holding the keys).
    if service == "supervisor":
        return [python, "-P", "-m", "offload", "supervisor", "--foreground"]
    return [python, "-P", "-m", "offload", "serve", "--host", "127.0.0.1", "--port", str(HTTP_PORT)]


def _systemd_quote(value: str) -> str:
    """One systemd word: double-quoted, with specifiers (%) and variables ($) kept literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def _systemd_unit(service: str, settings: Settings, python: str, path_env: str) -> str:
    home = str(settings.home)
    exec_start = " ".join(_systemd_quote(a).replace("$", "$$") for a in _argv(service, python))
    if service == "supervisor":
        head = "Description=offload supervisor: runs the queued background tasks"
        # The supervisor stops its own tasks (SIGTERM, grace, SIGKILL) when told to stop;
        # `mixed` lets it, and only then kills what is left. Delegate lets it make a
        # cgroup per task inside its own subtree.
        extra = [
            "KillMode=mixed",
            f"TimeoutStopSec={int(settings.grace_seconds) + _STOP_MARGIN_SECONDS}",
            "Delegate=yes",
        ]
    else:
        head = (
            "Description=offload dashboard and HTTP API on 127.0.0.1\n"
            "Wants=offload-supervisor.service\nAfter=offload-supervisor.service"
        )
        extra = []
    lines = [
        "# Written by `offload service install`; `offload service uninstall` removes it.",
        "[Unit]",
        head,
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        f"Environment={_systemd_quote('OFFLOAD_HOME=' + home)}",
        f"Environment={_systemd_quote('PATH=' + path_env)}",
        "WorkingDirectory=/",
        "Restart=on-failure",
        "RestartSec=2",
        *extra,
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def _launchd_plist(service: str, settings: Settings, python: str, path_env: str) -> str:
    log = settings.home / ("supervisor.out" if service == "supervisor" else "http.out")
    job = {
        "Label": f"offload.{service}",
        "ProgramArguments": _argv(service, python),
        "EnvironmentVariables": {"OFFLOAD_HOME": str(settings.home), "PATH": path_env},
        "WorkingDirectory": "/",
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "StandardOutPath": str(log),
        "StandardErrorPath": str(log),
        "ExitTimeOut": int(settings.grace_seconds) + _STOP_MARGIN_SECONDS,
    }
    return plistlib.dumps(job).decode()


def service_files(
    settings: Settings, platform: str, home: Path, python: str, path_env: str
) -> list[ServiceFile]:
    """The service files for ``platform`` (``linux`` or ``darwin``), not yet written.

    Raises:
        ValueError: Another platform; offload knows systemd and launchd only.
    """
    if platform.startswith("linux"):
        return [
            ServiceFile(
                home / _SYSTEMD_DIR / f"offload-{s}.service",
                _systemd_unit(s, settings, python, path_env),
                f"offload-{s}.service",
            )
            for s in SERVICES
        ]
    if platform == "darwin":
        return [
            ServiceFile(
                home / _LAUNCHD_DIR / f"offload.{s}.plist",
                _launchd_plist(s, settings, python, path_env),
                f"offload.{s}",
            )
            for s in SERVICES
        ]
    raise ValueError(f"offload service knows systemd (Linux) and launchd (macOS), not {platform}")


def _enable_hint(files: list[ServiceFile], platform: str) -> str:
    if platform == "darwin":
        loads = "\n".join(f"  launchctl bootstrap gui/$(id -u) {f.path}" for f in files)
        return f"Start them now and at every login:\n{loads}\n"
    names = " ".join(f.name for f in files)
    return (
        "Enable and start them:\n"
        "  systemctl --user daemon-reload\n"
        f"  systemctl --user enable --now {names}\n"
        "Keep them running after you log out:\n"
        "  loginctl enable-linger $USER\n"
    )


def _install(files: list[ServiceFile], platform: str, settings: Settings) -> int:
    from offload.web.auth import load_token

    for f in files:
        f.path.parent.mkdir(parents=True, exist_ok=True)
        existed = f.path.exists()
        f.path.write_text(f.text)
        print(f"{'updated' if existed else 'wrote'} {f.path}")
    print(_enable_hint(files, platform), end="")
    token = load_token(settings.home)
    print(f"Then open the dashboard: http://127.0.0.1:{HTTP_PORT}/?token={token}")
    return 0


def _uninstall(files: list[ServiceFile], platform: str, home: Path, print_only: bool) -> int:
    names = " ".join(f.name for f in files)
    if platform.startswith("linux"):
        wants = home / _SYSTEMD_DIR / "default.target.wants"
        if any((wants / f.name).is_symlink() for f in files):
            sys.stderr.write(
                "offload: the services are enabled; disable them first, then uninstall:\n"
                f"  systemctl --user disable --now {names}\n"
            )
            return 1
    for f in files:
        if f.path.exists():
            if not print_only:
                f.path.unlink()
            print(f"{'would remove' if print_only else 'removed'} {f.path}")
        else:
            print(f"not installed: {f.path}")
    if print_only:
        return 0
    if platform == "darwin":
        stops = "\n".join(f"  launchctl bootout gui/$(id -u)/{f.name}" for f in files)
        print(f"If they are loaded, stop them:\n{stops}")
    else:
        print("Then: systemctl --user daemon-reload")
    return 0


def main(
    action: str,
    print_only: bool,
    settings: Settings,
    *,
    platform: str | None = None,
    home: Path | None = None,
    python: str | None = None,
) -> int:
    """Runs ``offload service install|uninstall [--print]``; returns the exit code.

    Args:
        action: ``install`` or ``uninstall``.
        print_only: Print the files (install) or what would be removed (uninstall),
            change nothing.
        settings: offload's settings; the services use its data dir.
        platform: ``sys.platform`` by default.
        home: The user's home directory (``Path.home()`` by default).
        python: The interpreter the services run (this one by default).
    """
    platform = platform or sys.platform
    home = home or Path.home()
    settings_abs = _absolute(settings)
    try:
        files = service_files(
            settings_abs, platform, home, python or sys.executable, os.environ.get("PATH", "")
        )
    except ValueError as exc:
        sys.stderr.write(f"offload: {exc}\n")
        return 1
    if action == "uninstall":
        return _uninstall(files, platform, home, print_only)
    if action != "install":
        sys.stderr.write(f"offload: unknown service action {action!r}; use install or uninstall\n")
        return 2
    if print_only:
        for f in files:
            print(f"# {f.path}\n{f.text}")
        print(_enable_hint(files, platform), end="")
        return 0
    return _install(files, platform, settings_abs)


def _absolute(settings: Settings) -> Settings:
    return replace(settings, home=settings.home.expanduser().absolute())
