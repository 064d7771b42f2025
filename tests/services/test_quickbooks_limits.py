"""The per-realm request budget in Postgres: shared concurrency, the window, Retry-After
pauses and the circuit breaker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.quickbooks_support import configured


class Waited(Exception):
    pass


def _refuse_to_wait(seconds: float) -> None:
    raise Waited(seconds)


@pytest.fixture()
def realm(services: dict[str, str]) -> Iterator[str]:
    env = {
        "QUICKBOOKS_MAX_CONCURRENT": "3",
        "QUICKBOOKS_MAX_REQUESTS_PER_WINDOW": "5",
        "QUICKBOOKS_RATE_WINDOW_S": "60",
        "QUICKBOOKS_BREAKER_FAILURES": "2",
        "QUICKBOOKS_BREAKER_OPEN_S": "60",
    }
    with configured(env):
        yield str(uuid.uuid4().int % 10**15)


def test_the_window_limit_makes_the_next_request_wait(realm: str) -> None:
    from shared.services import quickbooks_limits as limits

    for _ in range(5):
        limits.release(limits.acquire(realm, sleep=_refuse_to_wait), "ok")
    with pytest.raises(Waited) as waited:
        limits.acquire(realm, sleep=_refuse_to_wait)
    assert 0 < waited.value.args[0] <= 1.0


def test_in_flight_leases_make_the_fourth_wait(realm: str) -> None:
    from shared.services import quickbooks_limits as limits

    leases = [limits.acquire(realm, sleep=_refuse_to_wait) for _ in range(3)]
    with pytest.raises(Waited):
        limits.acquire(realm, sleep=_refuse_to_wait)
    limits.release(leases[0], "ok")
    limits.release(limits.acquire(realm, sleep=_refuse_to_wait), "ok")


def test_retry_after_pauses_every_worker_of_the_realm(realm: str) -> None:
    from shared.services import quickbooks_limits as limits

    limits.release(limits.acquire(realm), "throttled", retry_after_s=30)
    with pytest.raises(Waited) as waited:
        limits.acquire(realm, sleep=_refuse_to_wait)
    assert waited.value.args[0] == 1.0  # waits in slices, re-reading the shared pause


def test_breaker_opens_after_failures_in_a_row_and_says_so(realm: str) -> None:
    from shared.services import quickbooks_limits as limits

    limits.release(limits.acquire(realm), "failed")
    limits.release(limits.acquire(realm), "ok")  # a success in between resets the count
    limits.release(limits.acquire(realm), "failed")
    limits.release(limits.acquire(realm), "failed")
    with pytest.raises(limits.CircuitOpen, match=f"circuit open for realm {realm} for another"):
        limits.acquire(realm, sleep=_refuse_to_wait)
