"""The HTTP server's access rules as pure functions: Host, Origin, token, and the token file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from offload.web.auth import (
    TOKEN_FILE,
    AccessPolicy,
    check_request,
    host_allowed,
    is_loopback,
    load_token,
    origin_allowed,
    split_host,
)

TOKEN = "s3cret-token"
LOCAL = AccessPolicy.for_bind(TOKEN, "127.0.0.1")
REMOTE = AccessPolicy.for_bind(TOKEN, "192.0.2.10", ["box.lan"])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.4", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("127.0.0.1:8765", ("127.0.0.1", "8765")),
        ("LocalHost", ("localhost", "")),
        ("[::1]:8765", ("::1", "8765")),
        ("[::1]", ("::1", "")),
        ("::1", ("::1", "")),
    ],
)
def test_split_host(value: str, parts: tuple[str, str]) -> None:
    assert split_host(value) == parts


@pytest.mark.parametrize(
    ("policy", "host", "ok"),
    [
        (LOCAL, "127.0.0.1:8765", True),
        (LOCAL, "localhost:8765", True),
        (LOCAL, "[::1]:8765", True),
        (LOCAL, "localhost", True),
        (LOCAL, "evil.example:8765", False),  # DNS rebinding: the attacker's name as Host
        (LOCAL, "127.0.0.1.nip.io:8765", False),
        (LOCAL, "localhost:80x", False),
        (LOCAL, "", False),
        (LOCAL, None, False),
        (REMOTE, "192.0.2.10:8765", True),
        (REMOTE, "box.lan:8765", True),
        (REMOTE, "other.lan:8765", False),
    ],
)
def test_host_allowed(policy: AccessPolicy, host: str | None, ok: bool) -> None:
    assert host_allowed(host, policy) is ok


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        (None, "127.0.0.1:8765", True),  # curl, or a same-origin GET
        ("http://127.0.0.1:8765", "127.0.0.1:8765", True),
        ("http://127.0.0.1:8765/", "127.0.0.1:8765", True),
        ("http://localhost:8765", "127.0.0.1:8765", False),  # another origin, same machine
        ("http://127.0.0.1:9999", "127.0.0.1:8765", False),  # another local port
        ("https://evil.example", "127.0.0.1:8765", False),
        ("null", "127.0.0.1:8765", False),  # sandboxed frames, file:// pages
        ("file://", "127.0.0.1:8765", False),
        ("http://127.0.0.1:8765@evil.example", "127.0.0.1:8765", False),
        ("http://127.0.0.1:8765/path", "127.0.0.1:8765", False),
    ],
)
def test_origin_allowed(origin: str | None, host: str, ok: bool) -> None:
    assert origin_allowed(origin, host) is ok


def _check(
    policy: AccessPolicy,
    method: str = "GET",
    path: str = "/api/stats",
    query: str | None = None,
    cookie: str | None = None,
    **headers: str,
) -> int | None:
    base = {"host": "127.0.0.1:8765"} | {k.replace("_", "-"): v for k, v in headers.items()}
    verdict = check_request(
        policy, method=method, path=path, headers=base, query_token=query, cookie_token=cookie
    )
    return None if verdict is None else verdict.status


@pytest.mark.parametrize(
    ("policy", "kwargs", "status"),
    [
        (LOCAL, {}, 401),  # every read needs the token, on loopback too
        (LOCAL, {"cookie": TOKEN}, None),  # the dashboard's cookie authorises reads
        (LOCAL, {"authorization": f"Bearer {TOKEN}"}, None),
        (LOCAL, {"path": "/"}, None),  # the page and its files hold no data
        (LOCAL, {"path": "/static/app.js"}, None),
        (LOCAL, {"path": "/openapi.json"}, 401),
        (LOCAL, {"method": "POST"}, 401),  # every write needs the token
        (LOCAL, {"method": "POST", "authorization": f"Bearer {TOKEN}"}, None),
        (LOCAL, {"method": "POST", "authorization": f"bearer {TOKEN}"}, None),
        (LOCAL, {"method": "POST", "query": TOKEN}, None),
        (LOCAL, {"method": "POST", "authorization": "Bearer wrong"}, 401),
        (LOCAL, {"method": "POST", "authorization": f"Basic {TOKEN}"}, 401),
        (LOCAL, {"method": "POST", "cookie": TOKEN}, 401),  # a cookie never authorises writes
        (LOCAL, {"method": "DELETE", "authorization": "Bearer "}, 401),
        (LOCAL, {"host": "evil.example:8765"}, 400),
        (
            LOCAL,
            {"method": "POST", "authorization": f"Bearer {TOKEN}", "origin": "http://evil.example"},
            403,
        ),
        (LOCAL, {"origin": "http://evil.example"}, 403),  # cross-origin reads too
        (
            LOCAL,
            {"method": "POST", "authorization": f"Bearer {TOKEN}", "sec_fetch_site": "cross-site"},
            403,
        ),
        (
            LOCAL,
            {
                "method": "POST",
                "authorization": f"Bearer {TOKEN}",
                "origin": "http://127.0.0.1:8765",
            },
            None,
        ),
        (REMOTE, {"host": "192.0.2.10:8765"}, 401),  # beyond loopback, reads need it too
        (REMOTE, {"host": "192.0.2.10:8765", "cookie": TOKEN}, None),
        (REMOTE, {"host": "192.0.2.10:8765", "authorization": f"Bearer {TOKEN}"}, None),
        (REMOTE, {"host": "192.0.2.10:8765", "path": "/"}, None),  # the page holds no data
        (REMOTE, {"host": "192.0.2.10:8765", "path": "/static/app.js"}, None),
        (REMOTE, {"host": "192.0.2.10:8765", "path": "/openapi.json"}, 401),
    ],
)
def test_check_request(policy: AccessPolicy, kwargs: dict[str, str], status: int | None) -> None:
    assert _check(policy, **kwargs) == status


def test_token_file_is_private_and_stable(offload_home: Path) -> None:
    token = load_token(offload_home)
    path = offload_home / TOKEN_FILE
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_token(offload_home) == token


def test_token_file_readable_by_others_is_tightened(offload_home: Path) -> None:
    offload_home.mkdir(mode=0o700)
    path = offload_home / TOKEN_FILE
    path.write_text("abc\n")
    path.chmod(0o644)
    assert load_token(offload_home) == "abc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
