"""Access grants: who gets one (`POST /data_resources/{id}:access`), what it says, the public keys
(`GET /.well-known/jwks.json`), and how a data site checks a grant offline (`nmdc_site.grants`)."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm
from pydantic import SecretStr

from api.main import create_app
from nmdc_runtime.config import Settings
from nmdc_runtime.grants import KEY_FILE, GrantKeys, issue_grant, load_grant_keys, new_key_set
from nmdc_site.grants import GrantRefused, GrantVerifier, PublicKeys
from tests.integration.claim_world import (
    World,
    claim,
    claimed,
    data_resource_body,
    make_world,
    new_job,
    register_data,
    site_principal,
)

PRIVATE_PARTS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


@pytest.fixture
def world(client, clean_database, admin_headers, settings) -> World:
    return make_world(client, clean_database, admin_headers, settings)


def access(world: World, headers: dict[str, str], data_resource_id: str):
    return world.client.post(f"/data_resources/{data_resource_id}:access", headers=headers)


def grant_of(response) -> str:
    assert response.status_code == 200, response.text
    scheme, _, token = response.json()["headers"]["Authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


def verifier(client: TestClient, site_id: str) -> GrantVerifier:
    """What the data site `site_id` checks grants with: the API's published keys."""
    return GrantVerifier(PublicKeys(lambda: client.get("/.well-known/jwks.json").json()), site_id)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def input_of(op: dict, world: World) -> str:
    job = world.client.get(f"/jobs/{op['metadata']['job_id']}", headers=world.admin).json()
    return job["config"]["data_resources"][0]["id"]


# ---- the published keys ---------------------------------------------------------------------------------


def test_the_jwks_holds_public_keys_only_and_needs_no_token(client, settings):
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys
    for key in keys:
        assert not PRIVATE_PARTS & set(key), key
        assert key["kid"] and key["alg"] in ("EdDSA", "ES256") and key["use"] == "sig"
    # They are the public halves of the keys generated into NMDC_HOME, kept there for the owner alone.
    kept = settings.home / KEY_FILE
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert load_grant_keys(None, settings.home).jwks()["keys"] == keys
    assert "d" in json.loads(kept.read_text())["keys"][0]


def test_configured_keys_are_all_published_without_their_private_parts(settings, clean_database):
    ec_jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True)
    ec_key = json.dumps({"keys": [{**ec_jwk, "kid": "ec-1"}]})
    both = {"keys": json.loads(new_key_set())["keys"] + json.loads(ec_key)["keys"]}
    configured = settings.model_copy(update={"grant_keys": SecretStr(json.dumps(both))})
    with TestClient(create_app(configured)) as client:
        keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert [key["kid"] for key in keys] == [key["kid"] for key in both["keys"]]
    assert [key["alg"] for key in keys] == ["EdDSA", "ES256"]
    assert all(not PRIVATE_PARTS & set(key) for key in keys)
    assert set(keys[1]) == {"kty", "crv", "x", "y", "kid", "alg", "use"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", "JSON Web Key Set"),
        ('{"keys": []}', "no key"),
        ('{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}', "no kid"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}', "neither"),
    ],
)
def test_unusable_keys_are_refused_with_a_reason(value, message):
    with pytest.raises(ValueError, match=message):
        GrantKeys.from_jwks(value)


def test_public_keys_alone_cannot_sign():
    public = {"keys": [{**json.loads(new_key_set())["keys"][0], "d": None}]}
    public["keys"][0].pop("d")
    with pytest.raises(ValueError, match="no private part"):
        GrantKeys.from_jwks(json.dumps(public))


def test_racing_first_starts_generate_one_key_set(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        sets = list(pool.map(lambda _: load_grant_keys(None, tmp_path).jwks(), range(16)))
    assert all(jwks == sets[0] for jwks in sets)
    assert [path.name for path in tmp_path.iterdir()] == [KEY_FILE]


# ---- who gets a grant -----------------------------------------------------------------------------------


def test_the_grant_matrix(world: World, settings: Settings):
    op = claimed(world)  # site E holds a job reading site D's data resource
    dr = input_of(op, world)
    callers = {
        "anonymous": {},
        "holder": world.site_e,
        "other_site": world.site_f,
        "owner": world.site_d,
        "admin": world.admin,
        "plain_user": world.user,
    }
    got = {name: access(world, headers, dr).status_code for name, headers in callers.items()}
    assert got == dict(anonymous=401, holder=200, other_site=403, owner=200, admin=200, plain_user=403)
    assert access(world, world.admin, "dr-nosuch").status_code == 404
    assert access(world, world.site_f, "dr-nosuch").status_code == 404

    data_site = verifier(world.client, "site-d")
    lease_end = datetime.fromisoformat(op["metadata"]["lease_expire_time"])
    for name, requester in (("holder", "site-e"), ("owner", "site-d"), ("admin", None)):
        response = access(world, callers[name], dr)
        body = response.json()
        resource = world.client.get(f"/data_resources/{dr}", headers=world.admin).json()
        assert body["url"] == resource["url"]
        claims = data_site.check(body["headers"]["Authorization"], {dr})
        assert claims["data_resource_id"] == dr
        assert claims["owner_site_id"] == claims["aud"] == "site-d"
        assert claims["requesting_site_id"] == requester
        assert claims["url"] == resource["url"]
        expire_time = datetime.fromisoformat(body["expire_time"])
        assert claims["exp"] == expire_time.timestamp()
        assert expire_time <= datetime.now(UTC) + timedelta(seconds=Settings().grant_seconds)
        if name == "holder":
            assert expire_time <= lease_end  # never past the claim's lease


def test_a_holder_s_grant_expires_with_its_lease(world: World):
    op = claimed(world)
    dr = input_of(op, world)
    with world.database.session() as session:
        session.execute(
            sa.text("UPDATE operations SET lease_expire_time = now() + interval '20 seconds' WHERE id = :id"),
            {"id": op["id"]},
        )
        session.commit()
    stored = world.client.get(f"/operations/{op['id']}", headers=world.admin).json()
    lease_end = datetime.fromisoformat(stored["metadata"]["lease_expire_time"])
    expire_time = datetime.fromisoformat(access(world, world.site_e, dr).json()["expire_time"])
    assert lease_end - timedelta(seconds=1) < expire_time <= lease_end


def test_a_claim_on_another_job_lapsed_or_released_gives_no_grant(world: World):
    op = claimed(world)
    dr = input_of(op, world)
    other = claimed(world, world.site_f)  # F holds a job that reads something else
    assert access(world, world.site_f, dr).status_code == 403
    assert access(world, world.site_f, input_of(other, world)).status_code == 200
    # The lease lapses: no grant, and asking changes nothing (the operation stays as it was).
    with world.database.session() as session:
        session.execute(
            sa.text("UPDATE operations SET lease_expire_time = now() - interval '1 second' WHERE id = :id"),
            {"id": op["id"]},
        )
        session.commit()
    assert access(world, world.site_e, dr).status_code == 403
    assert world.client.get(f"/operations/{op['id']}", headers=world.admin).json()["done"] is False
    # Claimed afresh, then released: a grant, then none.
    again = claim(world.client, world.site_e, op["metadata"]["job_id"])
    assert again.status_code == 201
    assert access(world, world.site_e, dr).status_code == 200
    assert (
        world.client.post(f"/jobs/{op['metadata']['job_id']}:release", headers=world.site_e).status_code
        == 200
    )
    assert access(world, world.site_e, dr).status_code == 403


def test_a_job_with_several_inputs_opens_each_of_them(world: World):
    first, second = register_data(world)["id"], register_data(world)["id"]
    job = new_job(world, data_resource_ids=[first, second])
    claimed(world, job=job)
    assert access(world, world.site_e, first).status_code == 200
    assert access(world, world.site_e, second).status_code == 200


def test_requires_grant_is_kept_shown_and_copied_into_jobs(world: World):
    response = world.client.post(
        "/data_resources", json={**data_resource_body(), "requires_grant": True}, headers=world.site_d
    )
    assert response.status_code == 201, response.text
    protected = response.json()
    assert protected["requires_grant"] is True
    assert world.client.get(f"/data_resources/{protected['id']}", headers=world.site_f).json()[
        "requires_grant"
    ]
    assert register_data(world)["requires_grant"] is False
    job = new_job(world, data_resource_ids=[protected["id"]])
    assert job["config"]["data_resources"][0]["requires_grant"] is True
    refused = world.client.post(
        "/data_resources", json={**data_resource_body(), "requires_grant": "yes"}, headers=world.site_d
    )
    assert refused.status_code == 422


# ---- checking a grant at the data site -------------------------------------------------------------------


@pytest.fixture
def granted(world: World) -> Iterator[tuple[World, str, str]]:
    """(world, the data resource, a grant site E got for it as the holder of a claim)."""
    op = claimed(world)
    dr = input_of(op, world)
    yield world, dr, grant_of(access(world, world.site_e, dr))


def _refused(check, status: int) -> str:
    with pytest.raises(GrantRefused) as caught:
        check()
    assert caught.value.status == status, caught.value.reason
    return caught.value.reason


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_the_data_site_accepts_a_valid_grant_for_that_file_only(granted):
    world, dr, token = granted
    data_site = verifier(world.client, "site-d")
    assert data_site.check(bearer(token), {dr})["data_resource_id"] == dr
    assert "another file" in _refused(lambda: data_site.check(bearer(token), {"dr-other"}), 403)
    assert "another data site" in _refused(
        lambda: verifier(world.client, "site-f").check(bearer(token), {dr}), 403
    )
    assert "needed" in _refused(lambda: data_site.check(None, {dr}), 401)
    assert "needed" in _refused(lambda: data_site.check(f"Basic {token}", {dr}), 401)


def test_the_data_site_refuses_expired_tampered_forged_and_unknown_grants(granted, settings):
    world, dr, token = granted
    data_site = verifier(world.client, "site-d")
    keys = load_grant_keys(None, settings.home)  # the API's own keys (kept in its NMDC_HOME)
    now = datetime.now(UTC)

    def signed(with_keys: GrantKeys, expires_at: datetime) -> str:
        return issue_grant(
            with_keys,
            issuer="nmdc-runtime",
            data_resource_id=dr,
            url="http://x/",
            owner_site_id="site-d",
            requester=site_principal("site-e"),
            expires_at=expires_at,
            now=now - timedelta(minutes=10),
        )[0]

    assert data_site.check(bearer(signed(keys, now + timedelta(minutes=1))), {dr})
    expired = signed(keys, now - timedelta(minutes=1))
    assert "expired" in _refused(lambda: data_site.check(bearer(expired), {dr}), 401)

    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered = ".".join([header, _b64({**claims, "data_resource_id": "dr-other"}), signature])
    assert "not valid" in _refused(lambda: data_site.check(bearer(tampered), {"dr-other"}), 401)
    stretched = ".".join([header, _b64({**claims, "exp": claims["exp"] + 3600}), signature])
    assert "not valid" in _refused(lambda: data_site.check(bearer(stretched), {dr}), 401)

    # Another key that claims to be the API's (the same kid): the signature does not match.
    impostor = json.loads(new_key_set())
    impostor["keys"][0]["kid"] = keys.signing.kid
    forged = signed(GrantKeys.from_jwks(json.dumps(impostor)), now + timedelta(minutes=1))
    assert "not valid" in _refused(lambda: data_site.check(bearer(forged), {dr}), 401)
    # A key the API does not publish.
    unknown = signed(GrantKeys.from_jwks(new_key_set()), now + timedelta(minutes=1))
    assert "does not publish" in _refused(lambda: data_site.check(bearer(unknown), {dr}), 401)
    # No signature, or HMAC with the published public key as the secret.
    unsigned = jwt.encode({**claims}, None, algorithm="none", headers={"kid": keys.signing.kid})
    _refused(lambda: data_site.check(bearer(unsigned), {dr}), 401)
    public_x = keys.signing.public_jwk()["x"]
    confused = jwt.encode(claims, public_x, algorithm="HS256", headers={"kid": keys.signing.kid})
    _refused(lambda: data_site.check(bearer(confused), {dr}), 401)
    _refused(lambda: data_site.check("Bearer not-a-token", {dr}), 401)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keys_are_fetched_again_on_a_new_kid_so_rotation_works_but_not_on_every_request(
    world: World, settings: Settings
):
    """The API moves to a new signing key (published first, beside the old one); the data site learns of it
    from the first grant naming it, and grants with made-up kids cost at most one fetch per refresh period."""
    old = json.loads(new_key_set())["keys"]
    new = json.loads(new_key_set())["keys"]
    apps = {
        "before": settings.model_copy(update={"grant_keys": SecretStr(json.dumps({"keys": old}))}),
        "after": settings.model_copy(update={"grant_keys": SecretStr(json.dumps({"keys": new + old}))}),
    }
    serving = {"now": "before"}
    fetched = []
    clock = Clock()

    with TestClient(create_app(apps["before"])) as before, TestClient(create_app(apps["after"])) as after:
        clients = {"before": before, "after": after}

        def fetch() -> dict:
            fetched.append(serving["now"])
            return clients[serving["now"]].get("/.well-known/jwks.json").json()

        keys = PublicKeys(fetch, refresh_seconds=30, clock=clock)
        data_site = GrantVerifier(keys, "site-d")
        op = claimed(world)
        dr = input_of(op, world)

        def grant_from(client: TestClient) -> str:
            response = client.post(f"/data_resources/{dr}:access", headers=world.site_e)
            return grant_of(response)

        assert data_site.check(bearer(grant_from(before)), {dr})
        assert fetched == ["before"]
        assert data_site.check(bearer(grant_from(before)), {dr})
        assert fetched == ["before"]  # known kid: no fetch

        serving["now"] = "after"
        clock.now += 31
        assert data_site.check(bearer(grant_from(after)), {dr})  # signed by the new key
        assert fetched == ["before", "after"]

        stranger = issue_grant(
            GrantKeys.from_jwks(new_key_set()),
            issuer="x",
            data_resource_id=dr,
            url="u",
            owner_site_id="site-d",
            requester=site_principal("site-e"),
            expires_at=datetime.now(UTC) + timedelta(minutes=1),
            now=datetime.now(UTC),
        )[0]
        for _ in range(5):
            _refused(lambda: data_site.check(bearer(stranger), {dr}), 401)
        assert fetched == ["before", "after"]  # within the refresh period: no fetch at all
        clock.now += 31
        for _ in range(5):
            _refused(lambda: data_site.check(bearer(stranger), {dr}), 401)
        assert fetched == ["before", "after", "after"]  # one fetch for five requests
