"""Send one webhook request: bounded, never redirected, never to private addresses.

Written by hand over urllib3 because no maintained library here does all of
it: the host is resolved once, every address is checked (SECURITY C11:
loopback, private, link-local such as 169.254.169.254, shared and reserved
ranges are refused unless ``CIVITAS_WEBHOOK_ALLOW_PRIVATE``), and the
connection goes to the checked address itself, so a second DNS answer (DNS
rebinding) cannot redirect it; TLS still checks the certificate against the
host name (SNI and hostname verification on the original name). Redirects
are not followed (a 3xx is a failed attempt); the connect and read timeouts
come from the settings, and the whole response read stops at a deadline and
at MAX_RESPONSE_BYTES.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass

import urllib3
from django.conf import settings
from urllib3.exceptions import HTTPError, LocationParseError, NewConnectionError

MAX_RESPONSE_BYTES = 64 * 1024
EXCERPT_CHARS = 1000
_CHUNK = 8192
MAX_ADDRESSES = 3


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a status code and excerpt, or an error name."""

    status_code: int | None
    excerpt: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Refused(Exception):
    """The URL may not be called: scheme, host or address refused."""


def is_public_address(address: str) -> bool:
    """Whether an IP address is a public unicast one (IPv4-mapped IPv6 unwrapped)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str) -> urllib3.util.Url:
    """The parsed URL if its scheme may be used; Refused otherwise (no DNS)."""
    try:
        parsed = urllib3.util.parse_url(url)
    except LocationParseError as exc:
        raise Refused("invalid_url") from exc
    schemes = {"https", "http"} if settings.CIVITAS_WEBHOOK_ALLOW_HTTP else {"https"}
    if parsed.scheme not in schemes or not parsed.host:
        raise Refused("scheme_refused")
    if parsed.auth:
        raise Refused("credentials_in_url")
    return parsed


def resolve(host: str, port: int) -> list[str]:
    """The addresses to connect to; Refused if any address of ``host`` is not public.

    Every address must pass, so a name that also resolves to an internal
    address is refused whichever answer a later lookup would give.
    """
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Refused("unresolvable_host") from exc
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise Refused("unresolvable_host")
    if not settings.CIVITAS_WEBHOOK_ALLOW_PRIVATE and not all(
        is_public_address(a) for a in addresses
    ):
        raise Refused("address_refused")
    return list(dict.fromkeys(addresses))[:MAX_ADDRESSES]


def _pool(parsed: urllib3.util.Url, address: str) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(
        connect=settings.CIVITAS_WEBHOOK_CONNECT_TIMEOUT_SECONDS,
        read=settings.CIVITAS_WEBHOOK_READ_TIMEOUT_SECONDS,
    )
    common = {"port": parsed.port, "timeout": timeout, "retries": False, "maxsize": 1}
    if parsed.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address,
            server_hostname=parsed.host,
            assert_hostname=parsed.host,
            cert_reqs="CERT_REQUIRED",
            **common,
        )
    return urllib3.HTTPConnectionPool(address, **common)


def _read_capped(response, deadline: float) -> bytes:
    """Up to MAX_RESPONSE_BYTES of the body, stopping at ``deadline``."""
    chunks: list[bytes] = []
    size = 0
    while size < MAX_RESPONSE_BYTES and time.monotonic() < deadline:
        chunk = response.read1(min(_CHUNK, MAX_RESPONSE_BYTES - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _attempt(parsed, address: str, *, body: bytes, headers: dict[str, str]):
    """One request to one address; an Outcome, or None if it refused the connection."""
    budget = (
        settings.CIVITAS_WEBHOOK_CONNECT_TIMEOUT_SECONDS
        + settings.CIVITAS_WEBHOOK_READ_TIMEOUT_SECONDS
    )
    deadline = time.monotonic() + budget
    pool = _pool(parsed, address)
    try:
        response = pool.urlopen(
            "POST",
            parsed.request_uri,
            body=body,
            headers=headers,
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            data = _read_capped(response, deadline)
        finally:
            response.release_conn()
    except NewConnectionError:
        return None  # refused or unreachable at once: the next address may answer
    except urllib3.exceptions.TimeoutError:
        return Outcome(None, error="timeout")
    except (HTTPError, OSError) as exc:
        return Outcome(None, error=type(exc).__name__[:100])
    finally:
        pool.close()
    excerpt = data.decode("utf-8", errors="replace")[:EXCERPT_CHARS]
    return Outcome(response.status, excerpt=excerpt)


def post(url: str, *, body: bytes, headers: dict[str, str]) -> Outcome:
    """POST ``body`` to ``url`` once; an Outcome, never an exception for the peer.

    The checked addresses are tried in order while they refuse the
    connection outright (at most MAX_ADDRESSES); a timeout ends the attempt.
    """
    try:
        parsed = check_url(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = resolve(parsed.host, port)
    except Refused as exc:
        return Outcome(None, error=str(exc))
    parsed = parsed._replace(port=port)
    host_header = parsed.host if port in (80, 443) else f"{parsed.host}:{port}"
    headers = {**headers, "Host": host_header}
    for address in addresses:
        outcome = _attempt(parsed, address, body=body, headers=headers)
        if outcome is not None:
            return outcome
    return Outcome(None, error="connection_failed")
