"""The request budget of a QuickBooks realm, kept in Postgres so that every worker shares it:
at most N requests in any window, at most M in flight, a pause QuickBooks asked for
(Retry-After), and a circuit breaker that stops calls after failures in a row.

``acquire`` waits for room and returns a lease; ``release`` returns it with the outcome.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from shared.adapters.postgres import transaction
from shared.config import get_settings
from shared.errors import UpstreamError

Outcome = Literal["ok", "throttled", "failed"]
LEASE_TIMEOUT_MARGIN_S = 30.0
WAIT_SLICE_S = 0.05


class CircuitOpen(UpstreamError):
    """The realm's breaker is open: calls are refused until it closes."""

    def __init__(self, realm_id: str, seconds_left: float) -> None:
        super().__init__(
            f"circuit open for realm {realm_id} for another {seconds_left:.0f} s after repeated "
            "failures",
            provider="quickbooks",
            retryable=True,
        )
        self.seconds_left = seconds_left


@dataclass(frozen=True, slots=True)
class Lease:
    realm_id: str
    lease_id: uuid.UUID


def acquire(realm_id: str, *, sleep: Callable[[float], None] = time.sleep) -> Lease:
    """Wait until the realm has room for one more request, and take it.

    Raises:
        CircuitOpen: the realm's breaker is open.
    """
    while True:
        wait = _try_acquire(realm_id)
        if isinstance(wait, Lease):
            return wait
        sleep(wait)


def release(lease: Lease, outcome: Outcome, *, retry_after_s: float | None = None) -> None:
    """Give a lease back. ``throttled`` pauses the realm (Retry-After, else a jittered
    backoff); ``failed`` counts towards the breaker; ``ok`` resets it."""
    settings = get_settings()
    with transaction() as conn:
        conn.execute(
            "UPDATE quickbooks_realm_leases SET released_at = clock_timestamp() "
            "WHERE realm_id = %s AND lease_id = %s",
            (lease.realm_id, lease.lease_id),
        )
        if outcome == "ok":
            conn.execute(
                "UPDATE quickbooks_realm_budget SET failures = 0 "
                "WHERE realm_id = %s AND failures > 0",
                (lease.realm_id,),
            )
        elif outcome == "throttled":
            pause = retry_after_s if retry_after_s is not None else backoff_s(1)
            conn.execute(
                "UPDATE quickbooks_realm_budget SET paused_until = greatest(paused_until, "
                "clock_timestamp() + %s) WHERE realm_id = %s",
                (timedelta(seconds=pause), lease.realm_id),
            )
        else:
            conn.execute(
                "UPDATE quickbooks_realm_budget SET failures = failures + 1, "
                "open_until = CASE WHEN failures + 1 >= %s THEN clock_timestamp() + %s "
                "ELSE open_until END WHERE realm_id = %s",
                (
                    settings.quickbooks_breaker_failures,
                    timedelta(seconds=settings.quickbooks_breaker_open_s),
                    lease.realm_id,
                ),
            )


def backoff_s(attempt: int) -> float:
    """A jittered exponential backoff for the n-th retry (1-based), in seconds ("full jitter")."""
    first = get_settings().quickbooks_backoff_first_s
    ceiling = min(60.0, first * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def _try_acquire(realm_id: str) -> Lease | float:
    """A lease, or the seconds to wait before trying again."""
    settings = get_settings()
    window = timedelta(seconds=settings.quickbooks_rate_window_s)
    with transaction() as conn:
        conn.execute(
            "INSERT INTO quickbooks_realm_budget (realm_id) VALUES (%s) ON CONFLICT DO NOTHING",
            (realm_id,),
        )
        row = conn.execute(
            "SELECT extract(epoch FROM open_until - clock_timestamp())::float8, "
            "extract(epoch FROM paused_until - clock_timestamp())::float8 "
            "FROM quickbooks_realm_budget WHERE realm_id = %s FOR UPDATE",
            (realm_id,),
        ).fetchone()
        assert row is not None
        open_left, paused_left = float(row[0]), float(row[1])
        if open_left > 0:
            raise CircuitOpen(realm_id, open_left)
        if paused_left > 0:
            return min(paused_left, 1.0)
        conn.execute(
            "DELETE FROM quickbooks_realm_leases WHERE realm_id = %s "
            "AND granted_at < clock_timestamp() - %s AND (released_at IS NOT NULL "
            "OR expires_at < clock_timestamp())",
            (realm_id, window),
        )
        counts = conn.execute(
            "SELECT count(*) FILTER (WHERE granted_at > clock_timestamp() - %s), "
            "count(*) FILTER (WHERE released_at IS NULL AND expires_at > clock_timestamp()), "
            "extract(epoch FROM min(granted_at) FILTER (WHERE granted_at > clock_timestamp() - %s)"
            " + %s - clock_timestamp())::float8 "
            "FROM quickbooks_realm_leases WHERE realm_id = %s",
            (window, window, window, realm_id),
        ).fetchone()
        assert counts is not None
        in_window, in_flight, oldest_leaves_in = counts
        if in_window >= settings.quickbooks_max_requests_per_window:
            return max(WAIT_SLICE_S, min(float(oldest_leaves_in or WAIT_SLICE_S), 1.0))
        if in_flight >= settings.quickbooks_max_concurrent:
            return WAIT_SLICE_S
        lease_id = uuid.uuid4()
        conn.execute(
            "INSERT INTO quickbooks_realm_leases (realm_id, lease_id, granted_at, expires_at) "
            "VALUES (%s, %s, clock_timestamp(), clock_timestamp() + %s)",
            (
                realm_id,
                lease_id,
                timedelta(seconds=settings.quickbooks_timeout_s + LEASE_TIMEOUT_MARGIN_S),
            ),
        )
        return Lease(realm_id, lease_id)
