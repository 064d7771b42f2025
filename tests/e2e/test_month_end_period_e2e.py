"""The period of ``POST /api/clients/{id}/closes/{period}`` on the running host: one close per
client and month, whatever spelling of the month the route carries, and a month that no
calendar has is a 400."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Devhost


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    devhost = Devhost(
        tmp_path_factory.mktemp("month-end-period"),
        DEVHOST_DURABLE_POLL_INTERVAL_S="0.05",
    )
    devhost.start()
    try:
        yield devhost
    finally:
        devhost.stop()


def test_a_month_with_a_trailing_newline_is_not_a_second_close(host: Devhost) -> None:
    app = host.app
    client_id = app.create_client("Close period client")
    status, first = app.call("POST", f"/api/clients/{client_id}/closes/2026-11")
    assert status == 202, first
    status, second = app.call("POST", f"/api/clients/{client_id}/closes/2026-11%0A")
    # Either refused, or the same close answered again: never a second instance.
    assert status in (400, 404) or (status == 200 and second["id"] == first["id"]), (
        status,
        second,
    )


def test_year_zero_is_a_400(host: Devhost) -> None:
    app = host.app
    client_id = app.create_client("Close year zero client")
    status, body = app.call("POST", f"/api/clients/{client_id}/closes/0000-01")
    assert status == 400, (status, body)
