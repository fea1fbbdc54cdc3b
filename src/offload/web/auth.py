"""Who may talk to the HTTP server: the token, and the Host and Origin rules.

The server guards three doors. The **Host** header must name this server (a loopback
name, or an address it is bound to), which defeats DNS rebinding: a hostile page whose
name was re-pointed at 127.0.0.1 still sends its own name as Host. An **Origin** header,
when a browser sends one, must be this server's own origin, so another site can neither
post to the API nor read it. A random **token**, kept in the data dir (mode 0600), is needed
for every request that touches the queue, reads included and on loopback too: the loopback
address is shared by every local user and by every task whose sandbox keeps the network,
and none of them may read another's tasks, commands or output.

The token travels as ``Authorization: Bearer <token>`` or as ``?token=``. The dashboard's
URL carries it once; the page then keeps it in ``sessionStorage`` and sends the header,
and the server also sets an ``HttpOnly``, ``SameSite=Strict`` cookie that only ever
authorises *reads* (the browser's EventSource cannot send headers). A cookie never
authorises a write, so a forged cross-site request has nothing to ride on.

Everything here is a pure function of its inputs except :func:`load_token`.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from offload.errors import ConfigError

__all__ = [
    "COOKIE_NAME",
    "TOKEN_FILE",
    "AccessPolicy",
    "TokenKeeper",
    "Verdict",
    "check_mcp_request",
    "check_request",
    "host_allowed",
    "is_loopback",
    "load_token",
    "origin_allowed",
    "split_host",
    "token_matches",
]

TOKEN_FILE = "api-token"
COOKIE_NAME = "offload_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Paths anyone who passes the Host and Origin checks may fetch: the page carries no data.
_PUBLIC_PREFIXES = ("/static/",)
_PUBLIC_PATHS = frozenset({"/", "/favicon.ico"})
_NEEDS_TOKEN = (
    "{what} needs the token: open the URL `offload serve` printed, or send "
    f"'Authorization: Bearer <token>' (the token is in $OFFLOAD_HOME/{TOKEN_FILE})"
)


def load_token(home: Path) -> str:
    """Returns the server token of data dir ``home``, creating it (mode 0600) on first use.

    A token file that others can read is tightened to 0600 rather than trusted as is.
    Delete the file to rotate the token; the next ``offload serve`` writes a new one.

    Raises:
        ConfigError: The file cannot be read or written, or is empty.
    """
    path = home / TOKEN_FILE
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                path.chmod(0o600)
            token = path.read_text().strip()
        else:
            token = secrets.token_urlsafe(32)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot read or create the API token {path}: {exc}") from exc
    if not token:
        raise ConfigError(f"the API token file {path} is empty; delete it to make a new one")
    return token


class TokenKeeper:
    """The token of one data dir, re-read when its file changes.

    Deleting or rewriting the token file rotates the token of a running server: the next
    request is checked against the new one, and every MCP session bound to the old one is
    refused. One ``stat`` per request; the file is read again only when it changed.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""
        self.current()

    def current(self) -> str:
        """The token in force now.

        Raises:
            ConfigError: The file cannot be read or written, or is empty.
        """
        try:
            info = (self.home / TOKEN_FILE).stat()
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            stamp = None
        if stamp is None or stamp != self._stamp:
            self._token = load_token(self.home)
            info = (self.home / TOKEN_FILE).stat()
            self._stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        return self._token


def is_loopback(host: str) -> bool:
    """True when ``host`` (a name or an address) only ever means this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, str]:
    """Splits a Host header (``name``, ``name:port``, ``[v6]:port``) into name and port."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    if value.count(":") == 1:
        name, _, port = value.partition(":")
        return name, port
    return value, ""


@dataclass(frozen=True)
class AccessPolicy:
    """What the server accepts, fixed when it starts.

    Attributes:
        token: The secret every request but the page and its static files must carry.
        hosts: Host names and addresses (lower case, IPv6 without brackets) a Host
            header may name.
    """

    token: str
    hosts: frozenset[str]
    keeper: TokenKeeper | None = field(default=None, compare=False)

    @classmethod
    def for_bind(
        cls,
        token: str,
        host: str,
        extra_hosts: Iterable[str] = (),
        keeper: TokenKeeper | None = None,
    ) -> AccessPolicy:
        """The policy of a server bound to ``host``, also answering to ``extra_hosts``.

        With a ``keeper``, the token is the keeper's current one (rotation takes effect at
        once); ``token`` is then only the token at start.
        """
        names = set(LOOPBACK_NAMES) | {h.strip("[]").lower() for h in extra_hosts}
        if host not in {"0.0.0.0", "::", ""}:
            names.add(host.strip("[]").lower())
        return cls(token=token, hosts=frozenset(names), keeper=keeper)

    def current_token(self) -> str:
        """The token requests must carry now."""
        return self.keeper.current() if self.keeper is not None else self.token


@dataclass(frozen=True)
class Verdict:
    """A refusal: the HTTP status and the one-line reason sent back."""

    status: int
    detail: str


def host_allowed(host_header: str | None, policy: AccessPolicy) -> bool:
    """True when the Host header names this server (any port)."""
    if not host_header:
        return False
    name, port = split_host(host_header)
    return name in policy.hosts and (port == "" or port.isdigit())


def origin_allowed(origin: str | None, host_header: str | None) -> bool:
    """True when there is no Origin, or it is exactly this server's own origin."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in {"http", "https"} or not host_header:
        return False
    if parts.path not in {"", "/"} or parts.query or parts.fragment:
        return False
    return parts.netloc.lower() == host_header.strip().lower()


def token_matches(candidate: str | None, token: str) -> bool:
    """Compares a presented token with the real one in constant time."""
    if not candidate:
        return False
    return hmac.compare_digest(candidate.encode(), token.encode())


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def check_request(
    policy: AccessPolicy,
    *,
    method: str,
    path: str,
    headers: Mapping[str, str],
    query_token: str | None,
    cookie_token: str | None,
) -> Verdict | None:
    """Decides whether one request may go on; returns the refusal, or None to let it pass.

    Args:
        policy: The server's access policy.
        method: The HTTP method.
        path: The request path.
        headers: Request headers with lower-case names.
        query_token: The ``token`` query parameter, if any.
        cookie_token: The token cookie, if any (honoured for reads only).
    """
    host = headers.get("host")
    if not host_allowed(host, policy):
        return Verdict(400, "this server does not answer to that Host header")
    if not origin_allowed(headers.get("origin"), host):
        return Verdict(403, "cross-origin requests are refused")
    if headers.get("sec-fetch-site") == "cross-site":
        return Verdict(403, "cross-site requests are refused")
    presented = _bearer(headers.get("authorization")) or query_token
    token = policy.current_token()
    if method.upper() not in SAFE_METHODS:
        if token_matches(presented, token):
            return None
        return Verdict(401, _NEEDS_TOKEN.format(what="this action"))
    if path in _PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES):
        return None
    if token_matches(presented, token) or token_matches(cookie_token, token):
        return None
    return Verdict(401, _NEEDS_TOKEN.format(what="reading tasks"))


def check_mcp_request(policy: AccessPolicy, headers: Mapping[str, str]) -> Verdict | None:
    """Decides whether one request to the MCP endpoint may go on.

    Stricter than :func:`check_request`: every method needs ``Authorization: Bearer``
    (no query token, no cookie: an MCP client is a program, not a page), on loopback too.
    """
    host = headers.get("host")
    if not host_allowed(host, policy):
        return Verdict(400, "this server does not answer to that Host header")
    if not origin_allowed(headers.get("origin"), host):
        return Verdict(403, "cross-origin requests are refused")
    if headers.get("sec-fetch-site") == "cross-site":
        return Verdict(403, "cross-site requests are refused")
    if token_matches(_bearer(headers.get("authorization")), policy.current_token()):
        return None
    return Verdict(
        401,
        "the MCP endpoint needs the header 'Authorization: Bearer <token>'; the token is in "
        f"$OFFLOAD_HOME/{TOKEN_FILE} (`offload serve` prints a ready client configuration)",
    )
