"""The body of ``POST /api/engagements`` on the running host: a period or type that is not a
string, or text Postgres cannot hold, is a 400 naming the field, and opens nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import Devhost


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    devhost = Devhost(
        tmp_path_factory.mktemp("engagement-body"),
        ENGAGEMENT_REMINDER_INTERVAL_S="60",
        DEVHOST_DURABLE_POLL_INTERVAL_S="0.05",
    )
    devhost.start()
    try:
        yield devhost
    finally:
        devhost.stop()


@pytest.mark.parametrize(
    "period",
    [None, ["2026"], {"year": 2026}, True, "2026\u0000"],
    ids=["null", "list", "object", "bool", "nul-char"],
)
def test_a_period_that_is_not_plain_text_is_a_400(host: Devhost, period: Any) -> None:
    app = host.app
    client_id = app.create_client("Engagement body client")
    status, body = app.call(
        "POST",
        "/api/engagements",
        {"client_id": client_id, "engagement_type": "advisory_project", "period": period},
    )
    assert status == 400, (status, body)
    with psycopg.connect(app.database_url) as conn:
        opened = conn.execute(
            "SELECT period FROM engagements WHERE client_id = %s", (client_id,)
        ).fetchall()
    assert opened == []
