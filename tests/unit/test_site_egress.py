"""Where the agent downloads from (`nmdc_site.run.egress`): schemes, addresses after resolution and after every
redirect, the address connected to, and where a grant's headers go. Real servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from nmdc_site.run.egress import AllowedHost, Egress, Refused, is_public
from tests.site_servers import Recorder, body, redirect


@pytest.fixture
def internal() -> Iterator[Recorder]:
    """A service on this machine that the agent must never reach for a data site."""
    with Recorder() as server:
        yield server


def fetch(egress: Egress, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=10) as client, egress.get(client, url, headers) as response:
        response.read()
        return response


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata services
        "100.64.0.1",  # shared address space
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_addresses_that_are_not_public_are_refused(address):
    assert not is_public(address)
    egress = Egress(resolver=lambda host, port: [address])
    with pytest.raises(Refused, match="not a public address"):
        egress.pin(httpx.URL("http://data.example.org/file"))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:8.8.8.8"])
def test_public_addresses_are_connected_to_by_address_with_the_name_kept(address):
    egress = Egress(resolver=lambda host, port: [address])
    pinned, headers, extensions = egress.pin(httpx.URL("https://data.example.org:8443/a/b?c=1"))
    assert pinned.host == address and pinned.port == 8443 and pinned.raw_path == b"/a/b?c=1"
    assert headers == {"Host": "data.example.org:8443"}
    assert extensions == {"sni_hostname": "data.example.org"}  # TLS still checks the name


def test_a_name_with_one_hidden_address_among_public_ones_is_refused():
    egress = Egress(resolver=lambda host, port: ["93.184.216.34", "10.0.0.7"])
    with pytest.raises(Refused):
        egress.pin(httpx.URL("http://data.example.org/"))


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://data.example.org/x", "gopher://127.0.0.1:25/", "data:,hello"]
)
def test_only_http_and_https_are_downloaded(url):
    with pytest.raises(Refused, match="only http and https"):
        Egress(resolver=lambda host, port: ["93.184.216.34"]).pin(httpx.URL(url))


def test_an_allowed_host_is_fetched_and_only_on_its_port(internal: Recorder):
    assert fetch(Egress(allowed=(AllowedHost.parse("127.0.0.1"),)), internal.base + "/x").status_code == 200
    same_port = Egress(allowed=(AllowedHost.parse(f"127.0.0.1:{internal.port}"),))
    assert fetch(same_port, internal.base + "/y").status_code == 200
    other_port = Egress(allowed=(AllowedHost.parse(f"127.0.0.1:{internal.port + 1}"),))
    with pytest.raises(Refused):
        fetch(other_port, internal.base + "/z")
    with pytest.raises(Refused):
        fetch(Egress(), internal.base + "/z")
    assert [path for path, _ in internal.requests] == ["/x", "/y"]


@pytest.mark.parametrize("text", ["localhost:80:1", "http://x/", "x/y", "", "[::1", "host:port"])
def test_malformed_allowed_hosts_are_refused(text):
    with pytest.raises(ValueError):
        AllowedHost.parse(text)


def test_allowed_hosts_may_be_names_or_ipv6_addresses():
    assert AllowedHost.parse("Lab.Example.ORG") == AllowedHost("lab.example.org", None)
    assert AllowedHost.parse("[::1]:8080") == AllowedHost("::1", 8080)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{internal}/secret",
        "http://localhost:{internal}/secret",
        "http://[::1]:{internal}/secret",
        "http://0.0.0.0:{internal}/secret",
        "file:///etc/passwd",
    ],
)
def test_every_redirect_is_checked_again_and_the_internal_service_sees_nothing(internal: Recorder, target):
    location = target.format(internal=internal.port)
    with Recorder({"/data": redirect(location)}) as data_site:
        egress = Egress(allowed=(AllowedHost.parse(f"127.0.0.1:{data_site.port}"),))
        with pytest.raises(Refused):
            fetch(egress, data_site.base + "/data")
        assert [path for path, _ in data_site.requests] == ["/data"]
    assert internal.requests == []


def test_redirects_are_followed_a_few_times_then_refused():
    with Recorder() as site:
        site.routes.update({f"/{n}": redirect(f"/{n + 1}") for n in range(10)})
        site.routes["/3"] = body(b"here")
        egress = Egress(allowed=(AllowedHost.parse("127.0.0.1"),))
        assert fetch(egress, site.base + "/0").content == b"here"
        with pytest.raises(Refused, match="redirects"):
            fetch(egress, site.base + "/4")


def test_the_grant_goes_to_its_data_site_only_never_where_it_redirects(internal: Recorder):
    with Recorder() as data_site:
        data_site.routes["/moved"] = redirect("/file")
        data_site.routes["/file"] = redirect(internal.base + "/elsewhere")
        egress = Egress(allowed=(AllowedHost.parse("127.0.0.1"),))
        fetch(egress, data_site.base + "/moved", {"Authorization": "Bearer grant"})
    assert [headers.get("Authorization") for _, headers in data_site.requests] == ["Bearer grant"] * 2
    [(path, headers)] = internal.requests
    assert path == "/elsewhere" and "Authorization" not in headers


def test_the_name_is_resolved_once_per_hop_and_the_checked_address_is_the_one_connected_to(
    internal: Recorder,
):
    """A name server that answers differently a moment later (DNS rebinding) cannot redirect the connection:
    the agent connects to the address it checked, and the name only travels in the Host header."""
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])
    asked = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return next(answers)

    egress = Egress(allowed=(AllowedHost.parse("data.test"),), resolver=resolver)
    response = fetch(egress, f"http://data.test:{internal.port}/file")
    assert response.status_code == 200 and asked == ["data.test"]
    [(_path, headers)] = internal.requests
    assert headers["Host"] == f"data.test:{internal.port}"


def test_a_name_that_does_not_resolve_is_a_connection_error():
    with pytest.raises(httpx.ConnectError):
        Egress().pin(httpx.URL("http://no-such-host.invalid/x"))
