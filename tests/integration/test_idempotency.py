"""`Idempotency-Key`: a repeat gets what the first created and creates nothing, even when repeats race."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from nmdc_runtime.db import Database
from nmdc_runtime.domain.errors import AlreadyExists
from nmdc_runtime.models import IdempotencyKey, Site
from nmdc_runtime.services.transactions import run_once
from nmdc_runtime.store import accounts as accounts_store
from nmdc_runtime.store.idempotency import IdempotencyKeyReused, IdempotentRequest
from tests.integration.builders import data_resource_body, error_locations


def _create_site(database: Database, *, key: str | None, site_id: str, principal: str = "user:alice"):
    """The once-only run around a creation, as a service uses it; one transaction per call."""
    with database.session() as session:
        return run_once(
            session,
            request=IdempotentRequest(
                principal=principal, key=key, endpoint="POST /sites", payload={"id": site_id}
            ),
            create=lambda: (
                accounts_store.create_site(session, site_id=site_id, name=site_id, capabilities=[]).id
            ),
            document=lambda site_id: {"id": site_id},
            restore=lambda document: document["id"],
        )


def _count(database: Database, model) -> int:
    with database.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model))


def test_store_repeat_gets_what_the_first_created(clean_database):
    first = _create_site(clean_database, key="k1", site_id="s1")
    again = _create_site(clean_database, key="k1", site_id="s1")
    assert first == ("s1", False)
    assert again == ("s1", True)
    assert _count(clean_database, Site) == 1


def test_store_same_key_with_another_body_is_refused(clean_database):
    _create_site(clean_database, key="k1", site_id="s1")
    with pytest.raises(IdempotencyKeyReused):
        _create_site(clean_database, key="k1", site_id="s2")
    assert _count(clean_database, Site) == 1


def test_store_keys_belong_to_one_principal(clean_database):
    _create_site(clean_database, key="k1", site_id="s1", principal="user:alice")
    second = _create_site(clean_database, key="k1", site_id="s2", principal="user:bob")
    assert second.replayed is False
    assert _count(clean_database, Site) == 2


def test_store_failed_creation_leaves_no_key(clean_database):
    _create_site(clean_database, key="k1", site_id="s1")
    # s1 exists: the creation under a new key fails and its key is rolled back with it.
    with pytest.raises(AlreadyExists):
        _create_site(clean_database, key="k2", site_id="s1")
    assert _count(clean_database, IdempotencyKey) == 1


def test_store_without_a_key_always_creates(clean_database):
    _create_site(clean_database, key=None, site_id="s1")
    _create_site(clean_database, key=None, site_id="s2")
    assert _count(clean_database, Site) == 2
    assert _count(clean_database, IdempotencyKey) == 0


def test_store_concurrent_repeats_create_once(clean_database):
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    outcomes, errors = [], []

    def repeat():
        barrier.wait()
        try:
            outcomes.append(_create_site(clean_database, key="race", site_id="s-race"))
        except Exception as exc:  # collected: asserted below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=repeat) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(outcomes) == threads_n
    assert sum(not outcome.replayed for outcome in outcomes) == 1
    assert {outcome.value for outcome in outcomes} == {"s-race"}
    assert _count(clean_database, Site) == 1


# --- through the API: POST /data_resources ---------------------------------------------------------------


def _post(client, headers, key, **body):
    return client.post(
        "/data_resources", json=data_resource_body(**body), headers={**headers, "Idempotency-Key": key}
    )


def _listed(client, headers) -> list[dict]:
    return client.get("/data_resources", params={"max_page_size": 1000}, headers=headers).json()["resources"]


def test_repeat_with_the_same_key_returns_the_first_response(client, site_headers):
    site = site_headers("site-d")
    first = _post(client, site, "upload-1")
    again = _post(client, site, "upload-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert _listed(client, site) == [first.json()]


def test_same_key_with_another_body_is_422_and_creates_nothing(client, site_headers):
    site = site_headers("site-d")
    first = _post(client, site, "upload-1", name="a")
    response = _post(client, site, "upload-1", name="b")
    assert ("header", "Idempotency-Key") in error_locations(response)
    assert _listed(client, site) == [first.json()]


def test_keys_belong_to_their_caller(client, site_headers):
    site_d, site_x = site_headers("site-d"), site_headers("site-x")
    from_d = _post(client, site_d, "same-key").json()
    from_x = _post(client, site_x, "same-key").json()
    assert from_d["id"] != from_x["id"]
    assert (from_d["site_id"], from_x["site_id"]) == ("site-d", "site-x")


def test_without_a_key_every_post_creates(client, site_headers):
    site = site_headers("site-d")
    for _ in range(2):
        assert client.post("/data_resources", json=data_resource_body(), headers=site).status_code == 201
    assert len(_listed(client, site)) == 2


def test_different_keys_create_different_resources(client, site_headers):
    site = site_headers("site-d")
    assert _post(client, site, "k1").json()["id"] != _post(client, site, "k2").json()["id"]


def test_a_refused_request_does_not_use_up_its_key(client, site_headers):
    site = site_headers("site-d")
    assert _post(client, site, "k1", size=-1).status_code == 422
    assert _post(client, site, "k1").status_code == 201


def test_malformed_keys_are_422(client, site_headers):
    site = site_headers("site-d")
    for key in ("", "x" * 256, "has space", "tab\there", "é"):
        headers = {**site, "Idempotency-Key": key.encode()}
        response = client.post("/data_resources", json=data_resource_body(), headers=headers)
        assert ("header", "Idempotency-Key") in error_locations(response), key
    assert _listed(client, site) == []


def test_concurrent_repeats_through_the_api_create_one_resource(client, site_headers):
    site = site_headers("site-d")
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    responses = []

    def repeat():
        barrier.wait()
        responses.append(_post(client, site, "race"))

    threads = [threading.Thread(target=repeat) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in responses] == [201] * threads_n
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == threads_n - 1
    assert len(_listed(client, site)) == 1
