"""Downloading an input (`nmdc_site.run.inputs.download`): it stops at the declared size, leaves nothing
behind when it fails, says what failed without repeating what the data site answered, sends a grant, names
whose fault a refusal is, and neither a slow data site nor a silent one holds it up."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from nmdc_site.client import DataResource
from nmdc_site.run.egress import AllowedHost, Egress
from nmdc_site.run.errors import Interrupted
from nmdc_site.run.inputs import InputError, InputUnavailable, Meter, Pace, download, fetch_inputs
from tests.site_servers import Recorder, body, drip, flood, redirect

LOCAL = Egress(allowed=(AllowedHost.parse("127.0.0.1"),))


def resource(url: str, data: bytes = b"0123456789", **extra) -> DataResource:
    return DataResource(
        id="dr-test",
        site_id="site-d",
        name="input.tsv",
        url=url,
        data_type="table",
        size=len(data),
        checksums=[{"type": "sha256", "checksum": hashlib.sha256(data).hexdigest()}],
        **extra,
    )


@pytest.mark.parametrize("declare_length", [False, True], ids=["streamed", "content-length"])
def test_more_than_the_declared_size_is_data_loss_and_the_partial_file_is_removed(tmp_path, declare_length):
    with Recorder() as site:
        site.routes["/big"] = flood(site, "/big", 30 * 1024 * 1024, declare_length=declare_length)
        dest = tmp_path / "inputs" / "input.tsv"
        with pytest.raises(InputError) as caught:
            download(resource(site.base + "/big"), dest, LOCAL)
    assert caught.value.code == "DATA_LOSS"
    assert "more than the declared 10 bytes" in str(caught.value)
    assert list(dest.parent.iterdir()) == []
    assert site.sent.get("/big", 0) < 30 * 1024 * 1024  # it stopped reading


def test_an_error_answer_is_unavailable_and_its_body_is_not_repeated(tmp_path):
    with Recorder() as site:
        site.routes["/gone"] = lambda handler: handler.send_error(404, "secret internal detail")
        with pytest.raises(InputUnavailable) as caught:
            download(resource(site.base + "/gone"), tmp_path / "x", LOCAL)
    assert "404" not in str(caught.value) and "secret" not in str(caught.value)
    assert not list(tmp_path.iterdir())


def test_a_protected_input_is_fetched_where_the_grant_says_with_its_header(tmp_path):
    data = b"0123456789"
    with Recorder({"/file": body(data)}) as site:
        asked = []

        def access(res: DataResource) -> tuple[str, dict[str, str]]:
            asked.append(res.id)
            return site.base + "/file", {"Authorization": "Bearer the-grant"}

        job = type("J", (), {"data_resources": [resource(site.base + "/file", data, requires_grant=True)]})
        [path] = fetch_inputs(job, tmp_path, LOCAL, access)
        open_job = type("J", (), {"data_resources": [resource(site.base + "/file", data)]})
        fetch_inputs(open_job, tmp_path / "open", LOCAL, access)
    assert path.read_bytes() == data and asked == ["dr-test"]  # the open input asked for no grant
    assert [headers.get("Authorization") for _, headers in site.requests] == ["Bearer the-grant", None]
    assert all(headers.get("Accept-Encoding") == "identity" for _, headers in site.requests)


def test_a_host_at_a_private_address_is_unavailable_as_a_redirect_there_is(tmp_path):
    """The data site's doing, not the executing site's fault: as a SiteFault, one data resource at such an
    address stopped every agent that claimed its job, and drained their sites three in a row."""
    with Recorder() as site, Recorder({"/hop": redirect(site.base + "/x")}) as hopper:
        with pytest.raises(InputUnavailable) as caught:
            download(resource(site.base + "/x"), tmp_path / "x", Egress())  # 127.0.0.1 is not allowed
        assert "--allow-host does not admit it" in str(caught.value) and str(site.port) not in str(
            caught.value
        )
        assert str(site.port) in caught.value.detail  # the agent's own log says where
        # Allowed to reach the one data site, which redirects to another loopback port: its doing.
        only_hopper = Egress(allowed=(AllowedHost.parse(f"127.0.0.1:{hopper.port}"),))
        with pytest.raises(InputUnavailable) as caught:
            download(resource(hopper.base + "/hop"), tmp_path / "x", only_hopper)
        assert "refused" in str(caught.value)
    assert site.requests == [] and not list(tmp_path.iterdir())


def test_the_meter_says_stalled_only_after_a_whole_window_below_the_floor():
    now = [0.0]
    meter = Meter(Pace(min_rate=100, stall_seconds=10), clock=lambda: now[0])
    for second in range(1, 10):
        now[0] = second
        assert not meter.stalled()  # not a whole window yet, however slow
    now[0] = 10.0
    assert meter.stalled()  # nothing in 10 s
    meter.add(1000)  # 100 a second over the last window: enough
    assert not meter.stalled()
    now[0] = 15.0
    meter.add(499)
    assert not meter.stalled()  # 1499 bytes in the last 10 s (5..15 holds the 1000 at 10 and these)
    now[0] = 20.1
    assert meter.stalled()  # only 499 since 10: below 1000 in 10 s
    assert not Meter(Pace(min_rate=0, stall_seconds=1), clock=lambda: 1e9).stalled()  # no floor


def test_a_dripping_data_site_is_unavailable_once_a_window_passes_below_the_floor(tmp_path):
    with Recorder({"/drip": drip(0.1, 1000)}) as site:
        started = time.monotonic()
        with pytest.raises(InputUnavailable) as caught:
            download(
                resource(site.base + "/drip", b"x" * 1000),
                tmp_path / "x",
                LOCAL,
                pace=Pace(min_rate=100, stall_seconds=1),
            )
        took = time.monotonic() - started
    assert "sent less than 100 bytes a second for 1 s" in str(caught.value)
    assert 1 <= took < 2, took
    assert not list(tmp_path.iterdir())  # no .part file left


def test_a_stop_request_ends_a_download_at_once_even_one_that_never_sends(tmp_path):
    stopping = threading.Event()
    with Recorder({"/silent": drip(3600, 10)}) as site:
        threading.Timer(0.5, stopping.set).start()
        started = time.monotonic()
        with pytest.raises(Interrupted):
            download(resource(site.base + "/silent"), tmp_path / "x", LOCAL, stopping=stopping)
        assert time.monotonic() - started < 1.5
    assert not list(tmp_path.iterdir())
