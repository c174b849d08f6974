"""Downloading an input (`nmdc_site.run.inputs.download`): it stops at the declared size, leaves nothing
behind when it fails, says what failed without repeating what the data site answered, and sends a grant."""

from __future__ import annotations

import hashlib

import pytest

from nmdc_site.client import DataResource
from nmdc_site.run.egress import AllowedHost, Egress
from nmdc_site.run.inputs import InputError, InputUnavailable, download, fetch_inputs
from tests.site_servers import Recorder, body, flood

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
        with pytest.raises(InputUnavailable) as caught:
            download(resource(site.base + "/x"), tmp_path / "x", Egress())  # 127.0.0.1 is not allowed
        assert "refused" in str(caught.value) and str(site.port) not in str(caught.value)
        assert str(site.port) in caught.value.detail  # the agent's own log says where
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
