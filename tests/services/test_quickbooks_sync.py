"""Push to QuickBooks against the fake: each record once, with the right amounts, through
throttling, 5xx, timeouts, stale SyncTokens, expiring and rotating tokens."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.quickbooks_fake import FakeQuickBooks
from tests.quickbooks_support import (
    add_customers_and_invoices,
    configured,
    connect,
    post_entries,
    settings_for,
)

REALM = "9130350000000001"


@pytest.fixture()
def fake(services: dict[str, str], tmp_path: Path) -> Iterator[FakeQuickBooks]:
    with FakeQuickBooks() as server, configured(settings_for(server, tmp_path)):
        server.timeout_delay_s = 1.5
        yield server


@pytest.fixture()
def realm(fake: FakeQuickBooks, client_id: uuid.UUID) -> str:
    realm_id = str(int(REALM) + int(uuid.uuid4().int % 10**6))
    connect(fake, client_id, realm_id)
    return realm_id


def _no_sleep(_: float) -> None:
    pass


def _journal_amounts(fake: FakeQuickBooks, realm: str) -> dict[str, list[tuple[str, Decimal]]]:
    found: dict[str, list[tuple[str, Decimal]]] = {}
    for entry in fake.all(realm, "JournalEntry"):
        found[entry["DocNumber"]] = sorted(
            (line["JournalEntryLineDetail"]["PostingType"], Decimal(str(line["Amount"])))
            for line in entry["Line"]
        )
    return found


def _status(client_id: uuid.UUID) -> dict[str, Any]:
    from shared.services import quickbooks_sync

    return quickbooks_sync.sync_state(client_id)


class TestJournalEntries:
    def test_sends_each_entry_once_in_batches_with_exact_amounts(
        self, fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
    ) -> None:
        from shared.services import quickbooks_sync

        post_entries(client_id, [[("6000", 1999), ("1000", -1999)]] * 40)
        outcome = quickbooks_sync.push_client(client_id, sleep=_no_sleep)

        assert outcome.synced == 40
        amounts = _journal_amounts(fake, realm)
        assert len(fake.all(realm, "JournalEntry")) == 40
        assert amounts["JE-7"] == [("Credit", Decimal("19.99")), ("Debit", Decimal("19.99"))]
        # One account query and two batches (30 + 10), not 40 creates.
        assert fake.api_requests(realm) == 3
        assert _status(client_id)["counts"] == {"JournalEntry": {"synced": 40}}

    def test_a_second_push_sends_nothing(
        self, fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
    ) -> None:
        from shared.services import quickbooks_sync

        post_entries(client_id, [[("6000", 500), ("1000", -500)]] * 3)
        quickbooks_sync.push_client(client_id, sleep=_no_sleep)
        again = quickbooks_sync.push_client(client_id, sleep=_no_sleep)

        assert again.synced == 0 and again.requests == 0
        assert len(fake.all(realm, "JournalEntry")) == 3

    def test_unmapped_account_blocks_only_the_entries_that_need_it(
        self, fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
    ) -> None:
        from shared.services import clients, quickbooks_sync

        clients.add_account(client_id, "6200", "Rent", "expense", "test")
        post_entries(client_id, [[("6000", 100), ("1000", -100)], [("6200", 250), ("1000", -250)]])
        outcome = quickbooks_sync.push_client(client_id, sleep=_no_sleep)

        assert (outcome.synced, outcome.blocked) == (1, 1)
        problem = _status(client_id)["problems"][0]
        assert problem["status"] == "blocked"
        assert problem["reason"] == (
            'ledger account 6200 "Rent" has no QuickBooks account; map it with '
            f"PUT /api/clients/{client_id}/quickbooks/account-map"
        )

        # Mapped by hand, the blocked entry goes out on the next push, once.
        rent = fake.put(realm, "Account", {"Name": "Rent or lease", "Classification": "Expense"})
        quickbooks_sync.set_account_map(
            client_id, [{"account": "6200", "qbo_account_id": rent["Id"]}], "test"
        )
        assert quickbooks_sync.push_client(client_id, sleep=_no_sleep).synced == 1
        assert sorted(_journal_amounts(fake, realm)) == ["JE-1", "JE-2"]

    def test_validation_fault_fails_that_record_alone_with_the_fault(
        self, fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
    ) -> None:
        from shared.adapters.postgres import transaction
        from shared.services import quickbooks_sync

        post_entries(client_id, [[("6000", 100), ("1000", -100)]] * 3)
        # QuickBooks lost the account the second entry names (deleted there since).
        with transaction() as conn:
            conn.execute(
                "INSERT INTO quickbooks_account_map (client_id, account_id, qbo_account_id, "
                "qbo_account_name, matched_by) SELECT %s, id, '999', 'Gone', 'manual' "
                "FROM accounts WHERE client_id = %s AND code = '1100'",
                (client_id, client_id),
            )
        post_entries(client_id, [[("1100", 100), ("4000", -100)]])
        outcome = quickbooks_sync.push_client(client_id, sleep=_no_sleep)

        assert (outcome.synced, outcome.failed) == (3, 1)
        problem = _status(client_id)["problems"][0]
        assert problem["status"] == "failed"
        assert problem["fault"]["Error"][0]["code"] == "2500"
        assert "Invalid Reference Id : Accounts element id 999 not found" in problem["reason"]
        assert len(fake.all(realm, "JournalEntry")) == 3


class TestFaults:
    def test_429_burst_with_retry_after_is_waited_out(
        self, fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
    ) -> None:
        from shared.services import quickbooks_sync

        post_entries(client_id, [[("6000", 700), ("1000", -700)]] * 35)
        fake.inject("429", 3, path="/batch", retry_after_s=1)
        waits: list[float] = []
        outcome = quickbooks_sync.push_client(client_id, sleep=waits.append)

        assert outcome.synced == 35 and outcome.throttled == 3
        assert len(fake.all(realm, "JournalEntry")) == 35
        # The limiter waited on QuickBooks' pause, not on its own guess.
        assert waits and max(waits) <= 1.0 and sum(waits) > 0

    def test_500s_and_timeouts_retry_without_duplicates(
        self, fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
    ) -> None:
        from shared.services import quickbooks_sync

        post_entries(client_id, [[("6000", 1234), ("1000", -1234)]] * 30)
        fake.inject("500", 2, path="/batch")
        fake.inject("timeout", 1, path="/batch")
        outcome = quickbooks_sync.push_client(client_id, sleep=_no_sleep)

        assert outcome.synced == 30
        # The timed-out batch was done by QuickBooks; its retry carried the same requestid.
        assert len(fake.all(realm, "JournalEntry")) == 30
        assert {len(v) for v in _journal_amounts(fake, realm).values()} == {2}

    def test_access_token_expiring_mid_push_is_refreshed_and_rotated(
        self, fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
    ) -> None:
        from shared.adapters.quickbooks import Tokens
        from shared.adapters.secrets import secret_store
        from shared.services import quickbooks_sync

        before = Tokens.from_json(secret_store().get(f"qbo-realm-{realm}") or "")
        post_entries(client_id, [[("6000", 100), ("1000", -100)]] * 60)
        fake.inject("expire_token", 1, path="/batch")
        outcome = quickbooks_sync.push_client(client_id, sleep=_no_sleep)

        after = Tokens.from_json(secret_store().get(f"qbo-realm-{realm}") or "")
        assert outcome.synced == 60 and len(fake.all(realm, "JournalEntry")) == 60
        assert fake.refreshes == 1
        assert after.refresh_token != before.refresh_token
        assert after.refresh_token in fake.refresh_tokens

    def test_invalid_grant_marks_the_realm_for_reconnection_and_stops(
        self, fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
    ) -> None:
        from shared.adapters.postgres import transaction
        from shared.services import quickbooks_connections, quickbooks_sync

        fake.refresh_tokens.clear()
        post_entries(client_id, [[("6000", 100), ("1000", -100)]])
        fake.inject("expire_token", 1)
        with pytest.raises(quickbooks_connections.NeedsReconnect, match="invalid_grant"):
            quickbooks_sync.push_client(client_id, sleep=_no_sleep)
        with transaction() as conn:
            row = conn.execute(
                "SELECT status, status_reason FROM quickbooks_connections WHERE realm_id = %s",
                (realm,),
            ).fetchone()
        assert row == ("needs_reconnect", "invalid_grant on token refresh")
        with pytest.raises(quickbooks_connections.NeedsReconnect, match="needs_reconnect"):
            quickbooks_sync.push_client(client_id, sleep=_no_sleep)
        assert fake.all(realm, "JournalEntry") == []

    def test_stale_sync_token_rereads_and_reapplies(
        self, fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
    ) -> None:
        from shared.adapters.postgres import transaction
        from shared.services import quickbooks_sync

        add_customers_and_invoices(client_id, customers=1, invoices=0)
        quickbooks_sync.push_client(client_id, sleep=_no_sleep)
        [customer] = fake.all(realm, "Customer")
        # Someone edits the customer in QuickBooks; then it changes here too.
        fake.edit(realm, "Customer", customer["Id"], Notes="edited in QuickBooks")
        with transaction() as conn:
            conn.execute(
                "UPDATE stripe_customers SET name = 'Renamed' WHERE books_client_id = %s",
                (client_id,),
            )
        quickbooks_sync.mark_changed(client_id, "Customer", "cus_00000")
        outcome = quickbooks_sync.push(client_id, sleep=_no_sleep)

        [after] = fake.all(realm, "Customer")
        assert outcome.synced == 1
        assert after["DisplayName"] == "Renamed (cus_00000)"
        assert after["Notes"] == "edited in QuickBooks"
        assert after["SyncToken"] == "2"
        assert _status(client_id)["counts"] == {"Customer": {"synced": 1}}


class TestInvoices:
    def test_customers_then_invoices_each_once(
        self, fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
    ) -> None:
        from shared.services import quickbooks_sync

        add_customers_and_invoices(client_id, customers=4, invoices=45)
        outcome = quickbooks_sync.push_client(client_id, sleep=_no_sleep)

        assert outcome.synced == 49
        invoices = fake.all(realm, "Invoice")
        assert len(invoices) == 45
        by_number = {i["DocNumber"]: Decimal(str(i["Line"][0]["Amount"])) for i in invoices}
        assert by_number["INV-44"] == Decimal("123.89")
        customers = {c["Id"]: c["DisplayName"] for c in fake.all(realm, "Customer")}
        assert len(customers) == 4
        first = next(i for i in invoices if i["DocNumber"] == "INV-5")
        assert customers[first["CustomerRef"]["value"]] == "Customer 1 (cus_00001)"


def test_charges_become_payments_applied_to_their_invoices(
    fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
) -> None:
    from shared.services import quickbooks_sync
    from tests.quickbooks_support import add_charges

    add_customers_and_invoices(client_id, customers=1, invoices=2)
    add_charges(client_id, ["in_000001"], "cus_00000")
    outcome = quickbooks_sync.push_client(client_id, sleep=_no_sleep)

    assert outcome.synced == 1 + 2 + 2
    invoices = {i["DocNumber"]: i for i in fake.all(realm, "Invoice")}
    payments = {p["PrivateNote"]: p for p in fake.all(realm, "Payment")}
    assert Decimal(str(invoices["INV-1"]["Balance"])) == 0
    assert Decimal(str(invoices["INV-0"]["Balance"])) == Decimal("123.45")
    applied = payments["Stripe charge ch_00000"]
    assert Decimal(str(applied["TotalAmt"])) == Decimal("123.46")
    assert applied["Line"][0]["LinkedTxn"] == [
        {"TxnId": invoices["INV-1"]["Id"], "TxnType": "Invoice"}
    ]
    unapplied = payments["Stripe charge ch_00001"]
    assert Decimal(str(unapplied["TotalAmt"])) == Decimal("50.00") and "Line" not in unapplied


def test_invoices_of_a_refused_customer_wait_and_say_why_without_holding_up_others(
    fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
) -> None:
    from shared.services import quickbooks_sync

    add_customers_and_invoices(client_id, customers=2, invoices=40)
    # A customer of the same name already exists in QuickBooks: cus_00001 is refused.
    fake.put(realm, "Customer", {"DisplayName": "Customer 1 (cus_00001)"})
    outcome = quickbooks_sync.push_client(client_id, sleep=_no_sleep)

    assert (outcome.synced, outcome.failed, outcome.waiting) == (1 + 20, 1, 20)
    assert len(fake.all(realm, "Invoice")) == 20
    state = quickbooks_sync.sync_state(client_id)
    assert state["counts"]["Invoice"] == {"pending": 20, "synced": 20}
    [refused] = state["problems"]
    assert refused["fault"]["Error"][0]["code"] == "6240"
    assert "Duplicate Name Exists Error" in refused["reason"]


class TestTelemetry:
    def test_a_push_that_leaves_nothing_waiting_reports_no_lag_for_its_realm(
        self, fake: FakeQuickBooks, realm: str, client_id: uuid.UUID
    ) -> None:
        from shared.services import quickbooks_sync
        from tests.telemetry_support import points, providers

        providers()
        post_entries(client_id, [[("6000", 700), ("1000", -700)]] * 2)
        quickbooks_sync.enqueue(client_id)
        quickbooks_sync.push(client_id, sleep=_no_sleep)

        assert ({"realm_id": realm}, 0.0) in points("advisoros.quickbooks.sync_lag")
