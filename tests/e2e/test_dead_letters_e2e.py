"""The dead-letter ops routes on the running app: admin key, routing, problems."""

from __future__ import annotations

from tests.e2e.conftest import MASTER_KEY, App


def test_dead_letters_need_the_admin_key(app: App) -> None:
    assert app.call("GET", "/api/ops/queues/stripe-events/dead-letters")[0] == 401
    status, body = app.call("GET", "/api/ops/queues/stripe-events/dead-letters", key=MASTER_KEY)
    assert status == 200
    assert isinstance(body["dead_letters"], list)


def test_unknown_queue_is_a_404_problem(app: App) -> None:
    status, body = app.call("GET", "/api/ops/queues/orders/dead-letters", key=MASTER_KEY)
    assert status == 404
    assert body["detail"].startswith("queue 'orders' does not exist")


def test_resubmitting_ids_not_in_the_dlq_reports_them(app: App) -> None:
    status, body = app.call(
        "POST",
        "/api/ops/queues/quickbooks-events/dead-letters/resubmit",
        {"message_ids": ["evt_never_sent"]},
        key=MASTER_KEY,
    )
    assert (status, body) == (200, {"resubmitted": [], "not_found": ["evt_never_sent"]})
