"""Hashes of secrets and the access tokens."""

from __future__ import annotations

import subprocess
import sys

import pytest
from argon2 import profiles

from nmdc_runtime import auth
from nmdc_runtime.domain.principals import Principal

KEY = "unit-test-signing-key-of-some-length"


def test_production_hashes_use_the_rfc_9106_low_memory_profile():
    # A fresh process: the test session itself hashes with the cheapest profile.
    encoded = subprocess.run(
        [sys.executable, "-c", "from nmdc_runtime import auth; print(auth.hash_secret('s3cret-value'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    low = profiles.RFC_9106_LOW_MEMORY
    assert encoded.startswith(f"$argon2id$v=19$m={low.memory_cost},t={low.time_cost},p={low.parallelism}$")
    # Hashes made with other parameters still verify.
    assert auth.verify_secret(encoded, "s3cret-value")
    assert not auth.verify_secret(encoded, "s3cret-valuf")


def test_hashes_are_salted_and_never_contain_the_secret():
    first, second = auth.hash_secret("same secret"), auth.hash_secret("same secret")
    assert first != second
    assert "same secret" not in first
    assert auth.verify_secret(first, "same secret") and auth.verify_secret(second, "same secret")


@pytest.mark.parametrize("stored", [None, "", "not-a-hash"])
def test_unknown_accounts_and_broken_hashes_never_match(stored):
    assert auth.verify_secret(stored, "anything") is False


def test_tokens_carry_the_principal_and_its_roles():
    site = Principal(kind="site_client", name="sc-1", site_id="site-e")
    assert auth.read_token(auth.issue_token(site, key=KEY, expires_in=60), key=KEY) == site
    user = Principal(kind="user", name="alice", admin=True, site_admin_of=frozenset({"site-d"}))
    assert auth.read_token(auth.issue_token(user, key=KEY, expires_in=60), key=KEY) == user


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (auth.issue_token(Principal(kind="user", name="a"), key=KEY, expires_in=-1), "expired"),
        (
            auth.issue_token(Principal(kind="user", name="a"), key=KEY + "-other", expires_in=3600),
            "not valid",
        ),
        ("not.a.jwt", "not valid"),
        # A site client token must name its site.
        (auth.issue_token(Principal(kind="site_client", name="sc-1"), key=KEY, expires_in=3600), "no valid"),
    ],
)
def test_bad_tokens_are_refused(token, message):
    with pytest.raises(auth.InvalidToken, match=message):
        auth.read_token(token, key=KEY)


def test_tokens_name_their_issuer_and_this_api_as_audience():
    import jwt

    token = auth.issue_token(Principal(kind="user", name="a"), key=KEY, expires_in=60, issuer="runtime-a")
    claims = jwt.decode(token, KEY, algorithms=["HS256"], audience=auth.AUDIENCE)
    assert (claims["iss"], claims["aud"]) == ("runtime-a", auth.AUDIENCE)
    assert auth.read_token(token, key=KEY, issuer="runtime-a").name == "a"
    # Another deployment's tokens (same key, other issuer) and tokens for another audience are refused.
    with pytest.raises(auth.InvalidToken):
        auth.read_token(token, key=KEY, issuer="runtime-b")
    other_audience = jwt.encode({**claims, "aud": "another-service"}, KEY, algorithm="HS256")
    with pytest.raises(auth.InvalidToken):
        auth.read_token(other_audience, key=KEY, issuer="runtime-a")
    without = jwt.encode({k: v for k, v in claims.items() if k != "aud"}, KEY, algorithm="HS256")
    with pytest.raises(auth.InvalidToken):
        auth.read_token(without, key=KEY, issuer="runtime-a")


def test_unsigned_tokens_are_refused():
    import jwt

    signed = auth.issue_token(Principal(kind="user", name="a", admin=True), key=KEY, expires_in=60)
    claims = jwt.decode(signed, KEY, algorithms=["HS256"], audience=auth.AUDIENCE)
    unsigned = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(auth.InvalidToken):
        auth.read_token(unsigned, key=KEY)


def test_verified_tokens_remember_a_token_until_it_expires(monkeypatch):
    site = Principal(kind="site_client", name="sc-1", site_id="site-a")
    token = auth.issue_token(site, key=KEY, expires_in=60)
    tokens = auth.VerifiedTokens()
    decoded = []
    real = auth._read_token
    monkeypatch.setattr(auth, "_read_token", lambda *a, **k: decoded.append(1) or real(*a, **k))
    assert tokens.read(token, key=KEY) == site
    assert tokens.read(token, key=KEY) == site
    assert len(decoded) == 1, "the second read comes from memory"
    # An expired token is refused as read_token refuses it.
    with pytest.raises(auth.InvalidToken, match="expired"):
        tokens.read(auth.issue_token(site, key=KEY, expires_in=-10), key=KEY)
    # Past its `exp` (by this process's clock) the remembered token is checked again, as new.
    later = auth.time.time() + 61
    monkeypatch.setattr(auth.time, "time", lambda: later)
    tokens.read(token, key=KEY)
    assert len(decoded) == 3


def test_verified_tokens_check_the_key_and_issuer_they_are_read_with():
    token = auth.issue_token(Principal(kind="user", name="u"), key=KEY, expires_in=60)
    tokens = auth.VerifiedTokens()
    assert tokens.read(token, key=KEY).name == "u"
    with pytest.raises(auth.InvalidToken):
        tokens.read(token, key=KEY + "-other")
    with pytest.raises(auth.InvalidToken):
        tokens.read(token, key=KEY, issuer="another-runtime")
    with pytest.raises(auth.InvalidToken):
        tokens.read(token[:-2] + ("AA" if not token.endswith("AA") else "BB"), key=KEY)


def test_verified_tokens_are_bounded():
    tokens = auth.VerifiedTokens(max_entries=3)
    issued = [
        auth.issue_token(Principal(kind="user", name=f"u{i}"), key=KEY, expires_in=60) for i in range(5)
    ]
    for token in issued:
        tokens.read(token, key=KEY)
    assert len(tokens._entries) == 3
    assert [entry[0].name for entry in tokens._entries.values()] == ["u2", "u3", "u4"]
