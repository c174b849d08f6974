"""Where the agent may download from: the URLs in a job come from other sites, so they are treated as hostile.

* `http` and `https` only.
* The host is resolved first, and the download refused when any address it resolves to is not a public one
  (loopback, private, link-local, shared, reserved, multicast, unspecified), unless the host is allowed
  (`--allow-host HOST[:PORT]`, for a lab or a test on one machine).
* The connection goes to the address that was checked (the URL's host is kept for the `Host` header and for
  TLS), so a name that resolves elsewhere a moment later cannot slip past the check.
* Redirects are followed by hand, each one checked the same way; headers given for the download (an access
  grant) go only to the origin they were given for.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import httpx

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_REDIRECTS = 5


class Refused(Exception):
    """A download the agent will not make: another scheme, an address that is not public, too many redirects."""


class NotAllowed(Refused):
    """The input's own host (not one it redirects to) resolves to an address that is not public, and
    `--allow-host` does not admit it: the site's own rules refuse it."""


@dataclass(frozen=True)
class AllowedHost:
    """A host (any port, or one port) the agent may download from although its address is not public."""

    host: str
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> AllowedHost:
        """`HOST`, `HOST:PORT`, `[IPv6]` or `[IPv6]:PORT`; ValueError otherwise."""
        try:
            url = httpx.URL(f"http://{text.strip()}")
            port = url.port
        except (httpx.InvalidURL, ValueError):
            raise ValueError(f"{text!r} is not HOST or HOST:PORT") from None
        if not url.host or url.path not in ("", "/") or url.query or url.userinfo:
            raise ValueError(f"{text!r} is not HOST or HOST:PORT")
        return cls(url.host.lower(), port)

    def admits(self, host: str, port: int) -> bool:
        return self.host == host.lower() and self.port in (None, port)


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (itself, for an address); OSError when it does not resolve."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # An IPv6 link-local answer may carry a zone ("fe80::1%eth0"): the address is what gets checked.
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


def is_public(address: str) -> bool:
    """Whether `address` is a globally routable unicast address (an IPv4-mapped IPv6 one judged as IPv4)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host.lower(), url.port or DEFAULT_PORTS.get(url.scheme, 0)


@dataclass(frozen=True)
class Egress:
    """The agent's rules for downloads (see the module)."""

    allowed: tuple[AllowedHost, ...] = ()
    resolver: Callable[[str, int], list[str]] = resolve
    max_redirects: int = MAX_REDIRECTS

    def pin(self, url: httpx.URL) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
        """The URL to connect to (the checked address in place of the host), the `Host` header, and the
        request extensions that keep TLS checking the host's name. Refused; httpx.ConnectError when the host
        does not resolve."""
        if url.scheme not in SCHEMES:
            raise Refused(f"only http and https URLs are downloaded, not {url.scheme or 'a relative'} ones")
        if not url.host:
            raise Refused("the URL has no host")
        _, host, port = _origin(url)
        try:
            addresses = self.resolver(host, port)
        except OSError as exc:
            # As a failed connection: a name server may answer next time.
            raise httpx.ConnectError(f"{host} does not resolve: {exc}") from exc
        if not addresses:
            raise httpx.ConnectError(f"{host} resolves to no address")
        if not any(rule.admits(host, port) for rule in self.allowed):
            hidden = [address for address in addresses if not is_public(address)]
            if hidden:
                raise NotAllowed(
                    f"{host}:{port} resolves to {hidden[0]}, which is not a public address "
                    "(allow it with --allow-host if it is meant)"
                )
        pinned = url.copy_with(host=addresses[0])
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        return pinned, {"Host": url.netloc.decode("ascii")}, extensions

    @contextlib.contextmanager
    def get(
        self, client: httpx.Client, url: str, headers: Mapping[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        """GET `url`, streaming, following redirects by hand with every hop checked (see the module).

        `headers` go only to the origin of `url`, never to where it redirects elsewhere.
        """
        current = httpx.URL(url)
        home = _origin(current)
        for hop in range(self.max_redirects + 1):
            try:
                pinned, host_header, extensions = self.pin(current)
            except NotAllowed as exc:
                if hop == 0:
                    raise
                # Where a data site redirects to is its doing, not the site's own rules' fault.
                raise Refused(f"a redirect to {exc}") from None
            sent = {**(dict(headers or {}) if _origin(current) == home else {}), **host_header}
            request = client.build_request("GET", pinned, headers=sent, extensions=extensions)
            response = client.send(request, stream=True, follow_redirects=False)
            location = response.headers.get("Location") if response.is_redirect else None
            if location is None:
                try:
                    yield response
                finally:
                    response.close()
                return
            response.close()
            try:
                current = current.join(location)
            except httpx.InvalidURL:
                raise Refused("a redirect to a malformed URL") from None
        raise Refused(f"more than {self.max_redirects} redirects")
