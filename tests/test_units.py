"""`offload service install|uninstall`: systemd user units and launchd agents, in a fake home."""

from __future__ import annotations

import configparser
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from offload.config import load_settings
from offload.units import main

UNITS = ("offload-supervisor.service", "offload-http.service")


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_install_writes_systemd_user_units_and_says_how_to_enable(
    tmp_path: Path, offload_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "user"
    assert main("install", False, load_settings(), platform="linux", home=home) == 0
    out = capsys.readouterr().out
    unit_dir = home / ".config/systemd/user"
    supervisor, http = (_unit(unit_dir / name) for name in UNITS)
    assert supervisor["Service"]["ExecStart"] == (
        f'"{sys.executable}" "-m" "offload" "supervisor" "--foreground"'
    )
    assert http["Service"]["ExecStart"].endswith('"serve" "--host" "127.0.0.1" "--port" "8765"')
    assert f'"OFFLOAD_HOME={offload_home}"' in (unit_dir / UNITS[0]).read_text()
    assert supervisor["Service"]["KillMode"] == "mixed"
    assert http["Unit"]["After"] == "offload-supervisor.service"
    assert supervisor["Install"]["WantedBy"] == "default.target"
    assert "systemctl --user enable --now offload-supervisor.service offload-http.service" in out
    assert "loginctl enable-linger" in out
    token = (offload_home / "api-token").read_text().strip()
    assert f"http://127.0.0.1:8765/?token={token}" in out

    assert main("install", False, load_settings(), platform="linux", home=home) == 0
    assert "updated" in capsys.readouterr().out


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_accepts_the_units_even_with_odd_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OFFLOAD_HOME", str(tmp_path / "data dir with %n and $HOME"))
    home = tmp_path / "user"
    assert main("install", False, load_settings(), platform="linux", home=home) == 0
    unit_dir = home / ".config/systemd/user"
    text = (unit_dir / UNITS[0]).read_text()
    assert '"OFFLOAD_HOME=' in text and "with %%n and $HOME" in text
    verify = subprocess.run(
        ["systemd-analyze", "verify", *UNITS],
        cwd=unit_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stderr


def test_print_only_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "user"
    assert main("install", True, load_settings(), platform="linux", home=home) == 0
    out = capsys.readouterr().out
    assert not home.exists()
    assert out.count("[Service]") == 2 and "offload-http.service" in out


def test_uninstall_removes_the_units_but_not_enabled_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "user"
    settings = load_settings()
    main("install", False, settings, platform="linux", home=home)
    unit_dir = home / ".config/systemd/user"
    wants = unit_dir / "default.target.wants"
    wants.mkdir()
    (wants / UNITS[0]).symlink_to(unit_dir / UNITS[0])
    capsys.readouterr()
    assert main("uninstall", False, settings, platform="linux", home=home) == 1
    assert "systemctl --user disable --now" in capsys.readouterr().err
    assert (unit_dir / UNITS[0]).exists()

    (wants / UNITS[0]).unlink()
    assert main("uninstall", True, settings, platform="linux", home=home) == 0
    assert "would remove" in capsys.readouterr().out and (unit_dir / UNITS[0]).exists()
    assert main("uninstall", False, settings, platform="linux", home=home) == 0
    assert not any((unit_dir / name).exists() for name in UNITS)
    assert "daemon-reload" in capsys.readouterr().out


def test_launchd_agents_on_macos(
    tmp_path: Path, offload_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "user"
    assert main("install", False, load_settings(), platform="darwin", home=home) == 0
    out = capsys.readouterr().out
    agents = home / "Library/LaunchAgents"
    job = plistlib.loads((agents / "offload.supervisor.plist").read_bytes())
    assert job["Label"] == "offload.supervisor"
    assert job["ProgramArguments"] == [
        sys.executable,
        "-m",
        "offload",
        "supervisor",
        "--foreground",
    ]
    assert job["EnvironmentVariables"]["OFFLOAD_HOME"] == str(offload_home)
    assert job["KeepAlive"] == {"SuccessfulExit": False} and job["RunAtLoad"] is True
    http = plistlib.loads((agents / "offload.http.plist").read_bytes())
    assert http["ProgramArguments"][3:] == ["serve", "--host", "127.0.0.1", "--port", "8765"]
    assert f"launchctl bootstrap gui/$(id -u) {agents / 'offload.http.plist'}" in out

    assert main("uninstall", False, load_settings(), platform="darwin", home=home) == 0
    assert "launchctl bootout gui/$(id -u)/offload.http" in capsys.readouterr().out
    assert list(agents.iterdir()) == []


def test_other_platforms_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main("install", False, load_settings(), platform="win32", home=tmp_path) == 1
    assert "systemd (Linux) and launchd (macOS)" in capsys.readouterr().err
