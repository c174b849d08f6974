"""`POST /token` under a flood of wrong credentials: 429 with Retry-After for the address that fails, never for
correct credentials from elsewhere; X-Forwarded-For believed only from trusted proxies; hash checks bounded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.login_guard import LoginGuard, TooManyAttempts, client_address
from api.main import create_app
from nmdc_runtime.config import Settings
from tests.integration.builders import USER_PASSWORD, make_user_headers
from tests.integration.conftest import make_site

PROXY = "10.9.9.9"


@pytest.fixture
def guarded(settings: Settings, clean_database) -> Iterator[Settings]:
    """Settings with small limits: 3 failures per account and address, 5 per address."""
    return settings.model_copy(
        update={
            "login_max_failures": 3,
            "login_max_failures_per_address": 5,
            "login_failure_window_seconds": 60,
            "trusted_proxies": [PROXY],
        }
    )


def _client(settings: Settings, address: str) -> TestClient:
    return TestClient(create_app(settings), client=(address, 40000))


def _login(client: TestClient, username: str, password: str, forwarded_for: str | None = None):
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    data = {"grant_type": "password", "username": username, "password": password}
    return client.post("/token", data=data, headers=headers)


def test_failures_for_an_account_get_429_from_that_address_only(guarded, clean_database):
    with _client(guarded, "203.0.113.1") as attacker:
        make_user_headers(attacker, clean_database, "bob")
        for _ in range(3):
            assert _login(attacker, "bob", "wrong-password").status_code == 401
        refused = _login(attacker, "bob", "wrong-password")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "retry after" in refused.json()["detail"]
        # The flooding address is refused even with the right password: it is not told which one is right.
        assert _login(attacker, "bob", USER_PASSWORD).status_code == 429
        # Other accounts from the same address still get their own count.
        assert _login(attacker, "carol", "wrong-password").status_code == 401
    with _client(guarded, "198.51.100.7") as owner:
        # The account is not locked for everybody: correct credentials from elsewhere pass.
        assert _login(owner, "bob", USER_PASSWORD).status_code == 200


def test_an_address_failing_across_many_accounts_gets_429(guarded, clean_database):
    with _client(guarded, "203.0.113.2") as sprayer:
        for n in range(5):
            assert _login(sprayer, f"user-{n}", "wrong-password").status_code == 401
        assert _login(sprayer, "user-99", "wrong-password").status_code == 429
    with _client(guarded, "198.51.100.8") as other:
        assert _login(other, "user-99", "wrong-password").status_code == 401


def test_site_clients_are_counted_by_client_id(guarded, clean_database):
    form = make_site(clean_database, "site-e")
    with _client(guarded, "203.0.113.3") as attacker:
        wrong = {**form, "client_secret": "not-the-secret"}
        for _ in range(3):
            assert attacker.post("/token", data=wrong).status_code == 401
        assert attacker.post("/token", data=wrong).status_code == 429
    with _client(guarded, "198.51.100.9") as site:
        assert site.post("/token", data=form).status_code == 200


def test_forwarded_for_counts_only_behind_a_trusted_proxy(guarded, clean_database):
    with _client(guarded, PROXY) as proxy:
        for _ in range(3):
            assert _login(proxy, "bob", "wrong", forwarded_for="203.0.113.4").status_code == 401
        assert _login(proxy, "bob", "wrong", forwarded_for="203.0.113.4").status_code == 429
        # Another client behind the same proxy is another address.
        assert _login(proxy, "bob", "wrong", forwarded_for="203.0.113.5").status_code == 401
    with _client(guarded, "203.0.113.6") as untrusted:
        # A client that is not a trusted proxy cannot pick its address by sending the header.
        for n in range(3):
            assert _login(untrusted, "bob", "wrong", forwarded_for=f"192.0.2.{n}").status_code == 401
        assert _login(untrusted, "bob", "wrong", forwarded_for="192.0.2.200").status_code == 429


def test_client_address():
    trusted = ["10.0.0.0/8", "127.0.0.1"]
    assert client_address("203.0.113.1", "1.2.3.4", trusted) == "203.0.113.1"
    assert client_address("10.1.2.3", "1.2.3.4", trusted) == "1.2.3.4"
    # Right to left, past every trusted hop; what the client wrote further left is not believed.
    assert client_address("10.1.2.3", "6.6.6.6, 1.2.3.4, 10.0.0.7", trusted) == "1.2.3.4"
    assert client_address("10.1.2.3", None, trusted) == "10.1.2.3"
    assert client_address("10.1.2.3", "10.0.0.5", trusted) == "10.0.0.5"
    assert client_address("1.2.3.4", "5.6.7.8", []) == "1.2.3.4"
    assert client_address(None, None, trusted) == "unknown"


def test_hash_checks_run_at_most_n_at_once_and_the_queue_is_bounded():
    guard = LoginGuard(
        max_failures=10, max_failures_per_address=10, window_seconds=60, hash_concurrency=2, queue_limit=1
    )
    release = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()

    def check() -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(5)
        with lock:
            running -= 1
        return "checked"

    async def scenario():
        admitted = [asyncio.create_task(guard.run_check(check)) for _ in range(3)]
        await asyncio.sleep(0.2)
        with pytest.raises(TooManyAttempts):
            await guard.run_check(check)
        release.set()
        return await asyncio.gather(*admitted)

    try:
        assert asyncio.run(scenario()) == ["checked"] * 3
    finally:
        guard.close()
    assert peak == 2
