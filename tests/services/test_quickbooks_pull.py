"""Pull from QuickBooks into the mirror: webhook changes (create, update, delete, void,
merge), duplicates, entities deleted since, and Change Data Capture from the cursor."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CORPUS
from tests.quickbooks_fake import FakeQuickBooks
from tests.quickbooks_support import add_customers_and_invoices, configured, connect, settings_for


@pytest.fixture()
def fake(services: dict[str, str], tmp_path: Path) -> Iterator[FakeQuickBooks]:
    with FakeQuickBooks() as server, configured(settings_for(server, tmp_path)):
        yield server


@pytest.fixture()
def realm(fake: FakeQuickBooks, client_id: uuid.UUID) -> str:
    realm_id = str(9450000000000000 + uuid.uuid4().int % 10**6)
    connect(fake, client_id, realm_id)
    return realm_id


def _change(realm: str, entity: str, qbo_id: str, operation: str, **extra: str) -> dict[str, str]:
    return {
        "realm_id": realm,
        "entity": entity,
        "entity_id": qbo_id,
        "operation": operation,
        "last_updated": "2026-12-01T10:00:00.000Z",
        **extra,
    }


def _mirror(client_id: uuid.UUID) -> dict[tuple[str, str], tuple[Any, ...]]:
    from shared.adapters.postgres import transaction

    with transaction() as conn:
        rows = conn.execute(
            "SELECT entity, qbo_id, state, sync_token, merged_into, data->>'DisplayName' "
            "FROM quickbooks_entities WHERE client_id = %s",
            (client_id,),
        ).fetchall()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def test_a_created_customer_is_read_and_mirrored_once_even_when_delivered_twice(
    fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
) -> None:
    from shared.services import quickbooks_pull

    recorded = json.loads((CORPUS / "qbo" / "qboapi__customer_create_response.json").read_text())
    made = fake.put(realm, "Customer", recorded["Customer"])
    change = _change(
        realm, "Customer", made["Id"], "Create", last_updated=made["MetaData"]["LastUpdatedTime"]
    )
    first = quickbooks_pull.apply_change(change)
    requests = fake.api_requests(realm)
    second = quickbooks_pull.apply_change(change)

    assert (first.status, second.status) == ("applied", "stale")
    assert fake.api_requests(realm) == requests  # the duplicate did not even read
    assert _mirror(client_id)[("Customer", made["Id"])] == ("active", "0", None, "Doe5, Jane")


def test_a_webhook_for_an_entity_deleted_since_marks_it_deleted(
    fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
) -> None:
    from shared.services import quickbooks_pull

    made = fake.put(realm, "Invoice", {"TotalAmt": 100.0, "CustomerRef": {"value": "1"}})
    fake.remove(realm, "Invoice", made["Id"])
    outcome = quickbooks_pull.apply_change(_change(realm, "Invoice", made["Id"], "Update"))

    assert outcome.state == "deleted"
    assert _mirror(client_id)[("Invoice", made["Id"])][0] == "deleted"


def test_void_and_delete_of_a_record_we_sent_are_reported_as_conflicts(
    fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
) -> None:
    from shared.services import quickbooks_pull, quickbooks_sync

    add_customers_and_invoices(client_id, customers=1, invoices=2)
    quickbooks_sync.push_client(client_id, sleep=lambda _: None)
    first, second = sorted(fake.all(realm, "Invoice"), key=lambda i: i["DocNumber"])
    fake.edit(realm, "Invoice", first["Id"], TotalAmt=0, Balance=0, PrivateNote="Voided")
    voided = quickbooks_pull.apply_change(
        _change(realm, "Invoice", first["Id"], "Void", last_updated="2999-01-01T00:00:00Z")
    )
    deleted = quickbooks_pull.apply_change(_change(realm, "Invoice", second["Id"], "Delete"))

    assert (voided.state, deleted.state) == ("voided", "deleted")
    report = quickbooks_sync.reconciliation(client_id)
    assert [p["reason"] for p in report["failed"]] == [
        f"conflict: Invoice {second['Id']} was deleted in QuickBooks"
    ]


def test_a_merge_points_our_record_at_the_surviving_customer(
    fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
) -> None:
    from shared.adapters.postgres import transaction
    from shared.services import quickbooks_pull, quickbooks_sync

    add_customers_and_invoices(client_id, customers=1, invoices=0)
    quickbooks_sync.push_client(client_id, sleep=lambda _: None)
    [ours] = fake.all(realm, "Customer")
    survivor = fake.put(realm, "Customer", {"DisplayName": "Survivor"})
    fake.remove(realm, "Customer", ours["Id"])
    quickbooks_pull.apply_change(
        _change(realm, "Customer", survivor["Id"], "Merge", deleted_id=ours["Id"])
    )

    mirror = _mirror(client_id)
    assert mirror[("Customer", ours["Id"])][0] == "merged"
    assert mirror[("Customer", ours["Id"])][2] == survivor["Id"]
    with transaction() as conn:
        row = conn.execute(
            "SELECT qbo_id FROM quickbooks_sync WHERE client_id = %s AND entity = 'Customer'",
            (client_id,),
        ).fetchone()
    assert row == (survivor["Id"],)


def test_cdc_brings_missed_changes_and_moves_the_cursor(
    fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
) -> None:
    from shared.services import quickbooks_pull

    fake.put(realm, "Customer", {"DisplayName": "Missed one"})
    fake.put(realm, "Customer", {"DisplayName": "Missed two"})
    first = quickbooks_pull.run_cdc(realm)
    again = quickbooks_pull.run_cdc(realm)

    names = sorted(v[3] for k, v in _mirror(client_id).items() if k[0] == "Customer")
    assert names == ["Missed one", "Missed two"]
    # Accounts made before the connection are not changes; the second run found nothing
    # newer than the cursor.
    assert (first, again) == (2, 0)


def test_changes_to_entities_not_mirrored_are_ignored_without_a_request(
    fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
) -> None:
    from shared.services import quickbooks_pull

    outcome = quickbooks_pull.apply_change(_change(realm, "Class", "1234", "Create"))

    assert outcome.status == "ignored"
    assert fake.api_requests(realm) == 0
