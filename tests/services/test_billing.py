"""Billing against real Postgres: every corpus event, redelivery, reordering, currencies with
zero and three decimals, and malformed events."""

from __future__ import annotations

import copy
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from shared.config import get_settings
from shared.domain.money import Money
from shared.errors import Conflict, NotFound, UpstreamError, ValidationError
from shared.services import billing, clients, ledger
from tests.services import stripe_events as se

Balances = dict[tuple[str, str], int]


@pytest.fixture()
def account(firm: uuid.UUID) -> str:
    """A Stripe account linked to a fresh firm, so every test has empty books."""
    stripe_account = f"acct_{uuid.uuid4().hex[:16]}"
    billing.link_stripe_account(firm, stripe_account)
    return stripe_account


def books_of(services: dict[str, str], stripe_account: str) -> uuid.UUID:
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT books_client_id FROM stripe_accounts WHERE stripe_account_id = %s",
            (stripe_account,),
        ).fetchone()
    assert row is not None
    books: uuid.UUID = row[0]
    return books


def balances(books: uuid.UUID) -> Balances:
    """The trial balance as {(account code, currency): balance}, zero balances left out."""
    return {
        (line.code, line.currency): line.balance_minor
        for line in ledger.trial_balance(books)
        if line.balance_minor
    }


def mirror(services: dict[str, str], table: str, books: uuid.UUID) -> dict[str, tuple[Any, ...]]:
    """{stripe id: (status, snapshot event)} of one mirror table."""
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        rows = conn.execute(
            f"SELECT stripe_id, status, snapshot_event FROM {table} WHERE books_client_id = %s",
            (books,),
        ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def count(services: dict[str, str], query: str, *args: object) -> int:
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        row = conn.execute(query, args).fetchone()
    assert row is not None
    return int(row[0])


def corpus(name: str, stripe_account: str) -> dict[str, Any]:
    """A corpus event as a Connect event of ``stripe_account``."""
    return {**se.load(name), "account": stripe_account}


# -- Every corpus event -----------------------------------------------------------------------

USD = "USD"
# file: (outcome, (mirror table, object id, status) or None, trial balance)
CORPUS_EXPECTED: dict[str, tuple[str, tuple[str, str, str] | None, Balances]] = {
    "srm__balance.available.json": ("ignored", None, {}),
    "srm__charge.dispute.created.json": (
        "applied",
        ("stripe_disputes", "dp_000000000000000000000000", "warning_needs_response"),
        {},  # an inquiry withdraws nothing
    ),
    "srm__charge.dispute.funds_withdrawn.json": (
        "applied",
        ("stripe_disputes", "dp_00000000000000", "needs_response"),
        {("1200", USD): -26500, ("1300", USD): 25000, ("6100", USD): 1500},
    ),
    "srm__charge.failed.json": (
        "applied",
        ("stripe_charges", "ch_000000000000000000000000", "failed"),
        {},
    ),
    "srm__charge.refund.updated.json": (
        "applied",
        ("stripe_refunds", "re_000000000000000000000000", "succeeded"),
        {("1200", USD): -100, ("4100", USD): 100},
    ),
    "srm__charge.refunded.json": (
        "applied",
        ("stripe_charges", "ch_000000000000000000000000", "succeeded"),
        # The payment (a sale without invoice) and its full refund.
        {("4000", USD): -100, ("4100", USD): 100},
    ),
    "srm__charge.succeeded.json": (
        "applied",
        ("stripe_charges", "ch_000000000000000000000000", "succeeded"),
        {("1200", USD): 2000, ("4000", USD): -2000},
    ),
    "srm__checkout.session.completed.json": ("ignored", None, {}),
    "srm__checkout.session.completed.payment_mode.json": ("ignored", None, {}),
    "srm__checkout.session.completed.setup_mode.json": ("ignored", None, {}),
    "srm__customer.created.json": (
        "applied",
        ("stripe_customers", "cus_00000000000000", "active"),
        {},
    ),
    "srm__customer.subscription.created.json": (
        "applied",
        ("stripe_subscriptions", "sub_000000000000000000000000", "active"),
        {},
    ),
    "srm__customer.subscription.deleted.json": (
        "applied",
        ("stripe_subscriptions", "sub_000000000000000000000000", "canceled"),
        {},
    ),
    "srm__customer.subscription.trial_will_end.json": (
        "applied",
        ("stripe_subscriptions", "su_00000000000000", "trialing"),
        {},
    ),
    "srm__customer.subscription.updated.json": (
        "applied",
        ("stripe_subscriptions", "sub_000000000000000000000000", "active"),
        {},
    ),
    "srm__invoice.created.json": (
        "applied",
        ("stripe_invoices", "in_000000000000000000000000", "draft"),
        {},  # a draft posts nothing
    ),
    "srm__invoice.finalized.json": (
        "applied",
        ("stripe_invoices", "in_000000000000000000000000", "paid"),
        {("1100", USD): 2000, ("4000", USD): -2000},
    ),
    "srm__invoice.paid.json": (
        "applied",
        ("stripe_invoices", "in_000000000000000000000000", "paid"),
        # The receivable; the money received posts from the charge, not from here.
        {("1100", USD): 2000, ("4000", USD): -2000},
    ),
    "srm__invoice.payment_action_required.json": (
        "applied",
        ("stripe_invoices", "in_000000000000000000000000", "open"),
        {("1100", USD): 2000, ("4000", USD): -2000},
    ),
    "srm__invoice.payment_failed.json": (
        "applied",
        ("stripe_invoices", "in_000000000000000000000000", "open"),
        {("1100", USD): 2000, ("4000", USD): -2000},
    ),
    "srm__invoice.payment_succeeded.json": (
        "applied",
        ("stripe_invoices", "in_000000000000000000000000", "paid"),
        {("1100", USD): 2000, ("4000", USD): -2000},
    ),
    "srm__invoice.upcoming.json": ("ignored", None, {}),
    "srm__invoice.updated.json": (
        "applied",
        ("stripe_invoices", "in_000000000000000000000000", "draft"),
        {},
    ),
    "srm__invoiceitem.created.json": ("ignored", None, {}),
    "srm__payment_intent.payment_failed.json": (
        "applied",
        ("stripe_payment_intents", "pi_000000000000000000000000", "requires_payment_method"),
        {},
    ),
    "srm__payment_intent.succeeded.json": (
        "applied",
        ("stripe_payment_intents", "pi_000000000000000000000000", "succeeded"),
        # The embedded charge of this API version posts as charge.succeeded would.
        {("1200", USD): 2000, ("4000", USD): -2000},
    ),
    "srm__payout.created.json": (
        "applied",
        ("stripe_payouts", "po_000000000000000000000000", "paid"),
        {("1000", USD): 1100, ("1200", USD): -1100},
    ),
    "srm__payout.paid.json": (
        "applied",
        ("stripe_payouts", "po_000000000000000000000000", "paid"),
        {("1000", USD): 1100, ("1200", USD): -1100},
    ),
    "srm__payout.updated.json": (
        "applied",
        ("stripe_payouts", "po_000000000000000000000000", "paid"),
        {("1000", USD): 1100, ("1200", USD): -1100},
    ),
    "srm__transfer.paid.json": ("ignored", None, {}),
}


def test_every_corpus_event_file_has_an_expectation() -> None:
    files = {path.name for path in se.STRIPE.glob("srm__*.json")}
    assert files == set(CORPUS_EXPECTED)


@pytest.mark.parametrize("name", sorted(CORPUS_EXPECTED))
def test_corpus_event_applies(services: dict[str, str], account: str, name: str) -> None:
    outcome_status, row, expected = CORPUS_EXPECTED[name]
    books = books_of(services, account)

    outcome = billing.apply_event(corpus(name, account))

    assert outcome.status == outcome_status
    assert outcome.books_client_id == books
    if row is not None:
        table, stripe_id, status = row
        assert mirror(services, table, books)[stripe_id] == (status, outcome.event_id)
    assert balances(books) == expected
    assert len(outcome.postings) == count(
        services, "SELECT count(*) FROM journal_entries WHERE client_id = %s", books
    )


def test_corpus_dispute_mirrors_its_balance_transaction(
    services: dict[str, str], account: str
) -> None:
    books = books_of(services, account)
    billing.apply_event(corpus("srm__charge.dispute.funds_withdrawn.json", account))

    with psycopg.connect(services["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT type, source, currency, amount_minor, fee_minor, net_minor"
            " FROM stripe_balance_transactions WHERE books_client_id = %s",
            (books,),
        ).fetchone()
    assert row == ("adjustment", "dp_1Bl3mMGWCopOTFn1jpVaJDrU", "USD", -25000, 1500, -26500)


def test_subscription_invoice_from_djstripe_mirrors_its_lines(
    services: dict[str, str], account: str
) -> None:
    books = books_of(services, account)
    obj = se.load("djstripe__invoice_paid_subscription_object.json")
    paid = se.event("invoice.paid", obj, event_id="evt_dj1", created=1559545290, account=account)

    outcome = billing.apply_event(paid)

    assert outcome.postings == ("stripe:invoice:in_fakefakefakefakefake0001:finalized",)
    assert balances(books) == {("1100", USD): 2000, ("4000", USD): -2000}
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        invoice = conn.execute(
            "SELECT status, customer, subscription, total_minor, amount_paid_minor"
            " FROM stripe_invoices WHERE books_client_id = %s",
            (books,),
        ).fetchone()
        lines = conn.execute(
            "SELECT kind, amount_minor, subscription, period_start IS NOT NULL"
            " FROM stripe_invoice_lines WHERE books_client_id = %s",
            (books,),
        ).fetchall()
        booked_on = conn.execute(
            "SELECT booked_on::text FROM journal_entries WHERE client_id = %s", (books,)
        ).fetchone()
    assert invoice == ("paid", "cus_6lsBvm5rJ0zyHc", "sub_fakefakefakefakefake0001", 2000, 2000)
    assert lines == [("subscription", 2000, "sub_fakefakefakefakefake0001", True)]
    # Booked when it was finalised (status_transitions.finalized_at), not when the event came.
    assert booked_on == ("2019-06-03",)


# -- Exactly once -------------------------------------------------------------------------


def test_same_event_five_times_posts_once(services: dict[str, str], account: str) -> None:
    books = books_of(services, account)
    paid = corpus("srm__charge.dispute.funds_withdrawn.json", account)

    outcomes = [billing.apply_event(copy.deepcopy(paid)) for _ in range(5)]

    assert [o.status for o in outcomes] == ["applied"] + ["duplicate"] * 4
    assert len(outcomes[0].postings) == 2
    assert all(o.postings == () for o in outcomes[1:])
    assert balances(books) == {("1200", USD): -26500, ("1300", USD): 25000, ("6100", USD): 1500}
    assert count(services, "SELECT count(*) FROM journal_entries WHERE client_id = %s", books) == 2
    assert (
        count(services, "SELECT count(*) FROM stripe_events WHERE stripe_account_id = %s", account)
        == 1
    )


def test_the_payment_posts_once_from_whichever_event_carries_the_charge(
    services: dict[str, str], account: str
) -> None:
    books = books_of(services, account)
    intent = corpus("srm__payment_intent.succeeded.json", account)
    charged = corpus("srm__charge.succeeded.json", account)
    charged["id"] = "evt_charge_succeeded"

    first = billing.apply_event(intent)
    second = billing.apply_event(charged)

    assert first.postings == ("stripe:charge:ch_000000000000000000000000:paid",)
    assert second.status == "applied" and second.postings == ()
    assert balances(books) == {("1200", USD): 2000, ("4000", USD): -2000}


def test_late_invoice_finalized_after_paid_keeps_paid(
    services: dict[str, str], account: str
) -> None:
    books = books_of(services, account)
    obj = se.invoice(
        "in_late1",
        customer="cus_1",
        currency="usd",
        total=5000,
        tax=500,
        status="open",
        finalized_at=1_700_000_100,
    )
    finalized = se.event(
        "invoice.finalized", obj, event_id="evt_f", created=1_700_000_100, account=account
    )
    paid_obj = {**copy.deepcopy(obj), "status": "paid", "paid": True, "amount_paid": 5000}
    # Charged automatically: paid in the same second it was finalised, and the paid event's
    # id happens to sort first, so only the status rank can tell which snapshot is newer.
    paid = se.event(
        "invoice.paid", paid_obj, event_id="evt_a", created=1_700_000_100, account=account
    )

    first = billing.apply_event(paid)
    late = billing.apply_event(finalized)

    assert first.postings == ("stripe:invoice:in_late1:finalized",)
    assert late.status == "applied" and late.postings == ()
    assert mirror(services, "stripe_invoices", books)["in_late1"] == ("paid", "evt_a")
    assert balances(books) == {("1100", USD): 5000, ("2100", USD): -500, ("4000", USD): -4500}


def test_older_snapshot_of_the_same_status_does_not_overwrite_a_newer_one(
    services: dict[str, str], account: str
) -> None:
    books = books_of(services, account)
    sub = se.load("srm__customer.subscription.updated.json")["data"]["object"]
    newer = se.event(
        "customer.subscription.updated",
        {**sub, "quantity": 3},
        event_id="evt_n",
        created=2_000,
        account=account,
    )
    older = se.event(
        "customer.subscription.updated",
        {**sub, "quantity": 1},
        event_id="evt_o",
        created=1_000,
        account=account,
    )

    billing.apply_event(newer)
    billing.apply_event(older)

    assert mirror(services, "stripe_subscriptions", books)[sub["id"]] == ("active", "evt_n")
    assert (
        count(
            services,
            "SELECT (data->>'quantity')::int FROM stripe_subscriptions WHERE books_client_id = %s",
            books,
        )
        == 3
    )


def test_voided_invoice_is_reversed_in_either_order(
    services: dict[str, str], firm: uuid.UUID
) -> None:
    opened = se.invoice(
        "in_void1",
        customer="cus_1",
        currency="usd",
        total=1200,
        status="open",
        finalized_at=1_700_000_000,
    )
    voided = copy.deepcopy(opened)
    voided["status"] = "void"
    voided["status_transitions"]["voided_at"] = 1_700_086_400

    for order in ((opened, voided), (voided, opened)):
        stripe_account = f"acct_{uuid.uuid4().hex[:16]}"
        books = billing.link_stripe_account(clients.create_firm("Void firm"), stripe_account)
        for index, obj in enumerate(order):
            billing.apply_event(
                se.event(
                    f"invoice.{obj['status']}",
                    obj,
                    event_id=f"evt_{index}",
                    created=1_700_000_000 + index,
                    account=stripe_account,
                )
            )
        assert balances(books) == {}
        with psycopg.connect(services["DATABASE_URL"]) as conn:
            rows = conn.execute(
                "SELECT dedupe_key, reverses_id IS NOT NULL, booked_on::text FROM journal_entries"
                " WHERE client_id = %s ORDER BY dedupe_key",
                (books,),
            ).fetchall()
        assert rows == [
            ("stripe:invoice:in_void1:finalized", False, "2023-11-14"),
            ("stripe:invoice:in_void1:voided", True, "2023-11-15"),
        ]


def _apply_all(events: list[dict[str, Any]]) -> None:
    for item in events:
        billing.apply_event(item)


def test_refund_that_fails_after_it_was_sent_is_reversed_in_any_order(
    services: dict[str, str],
) -> None:
    def run(order: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Balances:
        stripe_account = f"acct_{uuid.uuid4().hex[:16]}"
        books = billing.link_stripe_account(clients.create_firm("Refund firm"), stripe_account)
        pending = se.refund(
            "re_f1",
            charge_id="ch_1",
            currency="usd",
            amount=700,
            created=1_700_000_000,
            status="pending",
        )
        events = [
            se.event(
                "charge.refund.updated",
                {**pending, "status": status},
                event_id=f"evt_{i}",
                created=1_700_000_000 + i,
                account=stripe_account,
            )
            for i, status in enumerate(("pending", "failed"))
        ]
        _apply_all(order(events))
        assert mirror(services, "stripe_refunds", books)["re_f1"][0] == "failed"
        return balances(books)

    assert run(lambda events: events) == {}
    assert run(lambda events: events[::-1]) == {}


def test_payout_that_fails_after_it_was_paid_is_reversed(
    services: dict[str, str], account: str
) -> None:
    books = books_of(services, account)
    paid = se.payout("po_f1", currency="usd", amount=9000, created=1_700_000_000, status="paid")
    failed = {**paid, "status": "failed"}
    billing.apply_event(
        se.event("payout.failed", failed, event_id="evt_2", created=2, account=account)
    )
    assert balances(books) == {}  # failed before it was known to be paid: nothing moved

    outcome = billing.apply_event(
        se.event("payout.paid", paid, event_id="evt_1", created=1, account=account)
    )

    assert outcome.postings == ("stripe:payout:po_f1:paid", "stripe:payout:po_f1:failed")
    assert balances(books) == {}
    assert mirror(services, "stripe_payouts", books)["po_f1"] == ("failed", "evt_2")


def test_dispute_won_and_lost(services: dict[str, str], account: str) -> None:
    books = books_of(services, account)
    out = se.balance_transaction(
        "txn_w1",
        currency="usd",
        amount=-4000,
        fee=1500,
        created=10,
        source="dp_1",
        kind="adjustment",
    )
    back = se.balance_transaction(
        "txn_r1",
        currency="usd",
        amount=4000,
        fee=-1500,
        created=20,
        source="dp_1",
        kind="adjustment",
    )
    won = se.dispute(
        "dp_1",
        charge_id="ch_1",
        currency="usd",
        amount=4000,
        created=10,
        status="won",
        movements=[out, back],
    )
    lost_out = se.balance_transaction(
        "txn_w2",
        currency="usd",
        amount=-3000,
        fee=1500,
        created=30,
        source="dp_2",
        kind="adjustment",
    )
    lost = se.dispute(
        "dp_2",
        charge_id="ch_2",
        currency="usd",
        amount=3000,
        created=30,
        status="lost",
        movements=[lost_out],
    )

    billing.apply_event(
        se.event("charge.dispute.closed", won, event_id="evt_w", created=40, account=account)
    )
    billing.apply_event(
        se.event("charge.dispute.closed", lost, event_id="evt_l", created=50, account=account)
    )

    # Won: withdrawn and reinstated, fee returned. Lost: the amount is a loss, the fee stays.
    assert balances(books) == {("1200", USD): -4500, ("6100", USD): 1500, ("6200", USD): 3000}


# -- Currencies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "stripe_total", "minor", "shown"),
    [
        ("jpy", 2000, 2000, "2000 JPY"),  # zero-decimal: whole yen
        ("krw", 15000, 15000, "15000 KRW"),
        ("kwd", 12340, 12340, "12.340 KWD"),  # three-decimal: thousandths
        ("bhd", 500, 500, "0.500 BHD"),
        ("isk", 10000, 100, "100 ISK"),  # two decimals in Stripe, none in ISO 4217
        ("usd", 1999, 1999, "19.99 USD"),
    ],
)
def test_invoice_amounts_keep_the_currency_scale(
    account: str,
    services: dict[str, str],
    currency: str,
    stripe_total: int,
    minor: int,
    shown: str,
) -> None:
    books = books_of(services, account)
    obj = se.invoice(
        "in_cur1",
        customer="cus_1",
        currency=currency,
        total=stripe_total,
        status="open",
        finalized_at=1_700_000_000,
    )

    billing.apply_event(
        se.event("invoice.finalized", obj, event_id="evt_c", created=1, account=account)
    )

    code = currency.upper()
    assert balances(books) == {("1100", code): minor, ("4000", code): -minor}
    assert str(Money(minor, code)) == shown
    assert mirror(services, "stripe_invoices", books)["in_cur1"][0] == "open"


def test_isk_amount_with_fractional_krona_is_rejected(account: str) -> None:
    obj = se.invoice(
        "in_isk",
        customer="cus_1",
        currency="isk",
        total=10050,
        status="open",
        finalized_at=1_700_000_000,
    )
    with pytest.raises(
        billing.InvalidEvent, match=r"field data\.object\.total is not a valid amount"
    ):
        billing.apply_event(
            se.event("invoice.finalized", obj, event_id="evt_i", created=1, account=account)
        )


# -- Malformed events -------------------------------------------------------------------------


def _drop(*path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(event: dict[str, Any]) -> None:
        target = event
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


def _set(value: object, *path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(event: dict[str, Any]) -> None:
        target = event
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_drop("id"), r"^event \(unknown\): field id is required"),
        (_drop("type"), r"^event evt_\w+: field type is required$"),
        (_drop("data", "object"), r"field data\.object is required and must be an object$"),
        (_set("nope", "data"), r"field data is required and must be an object$"),
        (_drop("data", "object", "id"), r"field data\.object\.id is required$"),
        (
            _set("xyz", "data", "object", "currency"),
            r"field data\.object\.currency must be an ISO 4217 currency code with minor units,"
            r" got 'xyz'$",
        ),
        (
            _set("20.00", "data", "object", "total"),
            r"field data\.object\.total must be an integer amount in the currency's smallest unit,"
            r" got \"20\.00\"$",
        ),
        (
            _set(20.5, "data", "object", "amount_paid"),
            r"field data\.object\.amount_paid must be an integer amount",
        ),
        (_set(True, "data", "object", "total"), r"field data\.object\.total must be an integer"),
        (_set("1648320015", "created"), r"field created must be a Unix time in seconds"),
        (_set(10**20, "created"), r"field created is out of range: 1\d+ is no Unix time$"),
        (_set(10**20, "data", "object", "total"), r"field data\.object\.total is out of range"),
        (_set("bad account", "account"), r"field account must be a Stripe account id"),
        (
            _set("x", "data", "object", "lines", "data", 0, "amount"),
            r"field data\.object\.lines\.data\[0\]\.amount must be an integer",
        ),
    ],
)
def test_malformed_event_is_rejected_naming_the_field(
    services: dict[str, str], account: str, mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    books = books_of(services, account)
    bad = corpus("srm__invoice.paid.json", account)
    bad["id"] = f"evt_{uuid.uuid4().hex[:10]}"
    mutate(bad)

    with pytest.raises(billing.InvalidEvent, match=message):
        billing.apply_event(bad)

    # Nothing of it stays: not the event, not a mirror row, not a posting.
    assert (
        count(services, "SELECT count(*) FROM stripe_events WHERE books_client_id = %s", books)
        == 0
    )
    assert (
        count(services, "SELECT count(*) FROM stripe_invoices WHERE books_client_id = %s", books)
        == 0
    )
    assert balances(books) == {}


def test_text_the_database_cannot_store_is_rejected(
    services: dict[str, str], account: str
) -> None:
    bad = corpus("srm__customer.created.json", account)
    bad["data"]["object"]["name"] = "Null\x00byte"

    with pytest.raises(billing.EventRejected, match="holds data the database cannot store"):
        billing.apply_event(bad)


def test_event_that_is_not_an_object_is_rejected(services: dict[str, str]) -> None:
    with pytest.raises(billing.InvalidEvent, match="must be a JSON object"):
        billing.apply_event([1, 2])  # type: ignore[arg-type]


# -- Accounts and customers ---------------------------------------------------------------------


def test_unlinked_account_is_rejected_with_what_to_do(services: dict[str, str]) -> None:
    event = corpus("srm__charge.succeeded.json", "acct_nobodyknows")
    with pytest.raises(
        billing.UnlinkedAccount,
        match=r"Stripe account acct_nobodyknows is not linked to a firm; link it "
        r"\(billing\.link_stripe_account\(firm_id, 'acct_nobodyknows'\)\) and replay",
    ):
        billing.apply_event(event)


def test_event_without_account_uses_the_deployment_account(
    services: dict[str, str], account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    books = books_of(services, account)
    event = se.load("srm__charge.succeeded.json")
    assert "account" not in event

    monkeypatch.delenv("STRIPE_ACCOUNT_ID", raising=False)
    get_settings.cache_clear()
    with pytest.raises(billing.UnlinkedAccount, match="STRIPE_ACCOUNT_ID is not set"):
        billing.apply_event(event)

    monkeypatch.setenv("STRIPE_ACCOUNT_ID", account)
    get_settings.cache_clear()
    try:
        outcome = billing.apply_event(event)
    finally:
        monkeypatch.delenv("STRIPE_ACCOUNT_ID")
        get_settings.cache_clear()
    assert outcome.books_client_id == books
    assert balances(books) == {("1200", USD): 2000, ("4000", USD): -2000}


def test_link_is_idempotent_shares_books_per_firm_and_refuses_other_firms(
    services: dict[str, str], firm: uuid.UUID
) -> None:
    first = f"acct_{uuid.uuid4().hex[:16]}"
    books = billing.link_stripe_account(firm, first)
    assert billing.link_stripe_account(firm, first) == books
    assert billing.link_stripe_account(firm, f"acct_{uuid.uuid4().hex[:16]}") == books

    with pytest.raises(Conflict, match=f"Stripe account {first} is linked to another firm"):
        billing.link_stripe_account(clients.create_firm("Other firm"), first)
    with pytest.raises(ValidationError, match="is not a Stripe account id"):
        billing.link_stripe_account(firm, "cus_123")
    with pytest.raises(NotFound, match="unknown firm"):
        billing.link_stripe_account(uuid.uuid4(), f"acct_{uuid.uuid4().hex[:16]}")

    codes = {line[0] for line in clients.BILLING_CHART}
    with psycopg.connect(services["DATABASE_URL"]) as conn:
        chart = {
            row[0]
            for row in conn.execute("SELECT code FROM accounts WHERE client_id = %s", (books,))
        }
    assert chart == codes and {"1300", "4100", "6200"} <= chart


def test_customer_links_to_a_client_of_the_same_firm_only(
    services: dict[str, str], firm: uuid.UUID, account: str, client_id: uuid.UUID
) -> None:
    books = books_of(services, account)
    stranger = clients.create_client(clients.create_firm("Another firm"), "Not theirs")
    customer = se.load("srm__customer.created.json")["data"]["object"]

    for index, named in enumerate((str(client_id), str(stranger), "not-a-uuid")):
        obj = {
            **customer,
            "id": f"cus_link{index}",
            "metadata": {billing.CLIENT_METADATA_KEY: named},
        }
        billing.apply_event(
            se.event("customer.created", obj, event_id=f"evt_l{index}", created=1, account=account)
        )

    with psycopg.connect(services["DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT stripe_id, client_id, link_problem FROM stripe_customers"
            " WHERE books_client_id = %s ORDER BY stripe_id",
            (books,),
        ).fetchall()
    assert rows == [
        ("cus_link0", client_id, None),
        (
            "cus_link1",
            None,
            f"metadata advisoros_client_id names client {stranger} of another firm",
        ),
        ("cus_link2", None, "metadata advisoros_client_id 'not-a-uuid' is not a client id"),
    ]


# -- A shuffled stream ------------------------------------------------------------------------

MIRRORS = (
    "stripe_invoices",
    "stripe_charges",
    "stripe_refunds",
    "stripe_disputes",
    "stripe_payouts",
    "stripe_customers",
    "stripe_balance_transactions",
)


def test_shuffled_stream_with_duplicates_gives_the_in_order_ledger(
    services: dict[str, str],
) -> None:
    in_order_account = f"acct_{uuid.uuid4().hex[:16]}"
    shuffled_account = f"acct_{uuid.uuid4().hex[:16]}"
    in_order_books = billing.link_stripe_account(clients.create_firm("In order"), in_order_account)
    shuffled_books = billing.link_stripe_account(clients.create_firm("Shuffled"), shuffled_account)
    in_order = se.generate(in_order_account)
    stream = se.generate(shuffled_account)
    assert len(stream) == 1000
    assert len({e["data"]["object"].get("customer") for e in stream} - {None}) == 50
    kinds = {e["type"] for e in stream}
    assert {
        "invoice.paid",
        "charge.refunded",
        "charge.dispute.closed",
        "payout.failed",
        "invoice.voided",
        "balance.available",
    } <= kinds

    _apply_all(in_order)
    rng = random.Random(11)
    shuffled = stream + [copy.deepcopy(e) for e in rng.sample(stream, 250)]
    rng.shuffle(shuffled)
    outcomes = [billing.apply_event(e) for e in shuffled]

    assert sum(o.status == "duplicate" for o in outcomes) == 250
    expected = balances(in_order_books)
    assert balances(shuffled_books) == expected
    posted_to = {line.code for line in ledger.trial_balance(shuffled_books)}
    assert posted_to == {"1000", "1100", "1200", "1300", "2100", "4000", "4100", "6100", "6200"}
    assert expected[("1100", "USD")] > 0  # invoices left open stay receivable
    for currency in {currency for _, currency in expected}:
        assert sum(v for (_, c), v in expected.items() if c == currency) == 0
    entries = "SELECT count(*) FROM journal_entries WHERE client_id = %s"
    assert count(services, entries, shuffled_books) == count(services, entries, in_order_books)
    for table in MIRRORS:
        assert mirror(services, table, shuffled_books) == mirror(services, table, in_order_books)


def test_concurrent_deliveries_of_one_event_apply_it_once(
    services: dict[str, str], account: str
) -> None:
    books = books_of(services, account)
    event = corpus("srm__invoice.paid.json", account)
    start = threading.Barrier(6)
    outcomes: list[str] = []

    def deliver() -> None:
        start.wait()
        outcomes.append(billing.apply_event(copy.deepcopy(event)).status)

    workers = [threading.Thread(target=deliver) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert sorted(outcomes) == ["applied"] + ["duplicate"] * 5
    assert balances(books) == {("1100", USD): 2000, ("4000", USD): -2000}
    assert count(services, "SELECT count(*) FROM journal_entries WHERE client_id = %s", books) == 1


def test_refund_failing_while_its_charge_event_applies_is_reversed(
    services: dict[str, str], account: str
) -> None:
    """A refund's own event and its charge's event, applied at the same moment, still see
    each other: the refund inside the charge posts, and the failure reverses it."""
    books = books_of(services, account)
    pairs = []
    for n in range(6):
        sent = se.refund(
            f"re_race{n}",
            charge_id=f"ch_race{n}",
            currency="usd",
            amount=300,
            created=1_700_000_000,
            status="succeeded",
        )
        refunded = se.charge(
            f"ch_race{n}",
            customer="cus_1",
            currency="usd",
            amount=300,
            created=1_699_999_000,
            invoice_id=None,
            refunds=[sent],
        )
        pairs.append(
            (
                se.event(
                    "charge.refunded", refunded, event_id=f"evt_c{n}", created=10, account=account
                ),
                se.event(
                    "charge.refund.updated",
                    {**sent, "status": "failed"},
                    event_id=f"evt_r{n}",
                    created=20,
                    account=account,
                ),
            )
        )

    def deliver(event: dict[str, Any], start: threading.Barrier) -> None:
        start.wait()
        billing.apply_event(event)

    for pair in pairs:
        start = threading.Barrier(2)
        workers = [threading.Thread(target=deliver, args=(e, start)) for e in pair]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    # Six sales of 300, every refund sent and returned.
    assert balances(books) == {("1200", USD): 1800, ("4000", USD): -1800}


# -- Runs of events in one transaction --------------------------------------------------------


def _books_pair(stream_options: dict[str, int]) -> tuple[tuple[str, uuid.UUID], ...]:
    """Two fresh accounts with their books: one for the run under test, one applied in order
    event by event, to compare with."""
    pair = []
    for name in ("Run", "In order"):
        stripe_account = f"acct_{uuid.uuid4().hex[:16]}"
        pair.append(
            (
                stripe_account,
                billing.link_stripe_account(clients.create_firm(name), stripe_account),
            )
        )
    _apply_all(se.generate(pair[1][0], **stream_options))
    return tuple(pair)


def _same_books(services: dict[str, str], books: uuid.UUID, reference: uuid.UUID) -> None:
    assert balances(books) == balances(reference)
    entries = "SELECT count(*) FROM journal_entries WHERE client_id = %s"
    assert count(services, entries, books) == count(services, entries, reference)
    for table in MIRRORS:
        assert mirror(services, table, books) == mirror(services, table, reference)


def test_shuffled_stream_with_duplicates_in_runs_gives_the_in_order_ledger(
    services: dict[str, str],
) -> None:
    (run_account, run_books), (_, reference) = _books_pair({"customers": 10, "events": 400})
    stream = se.generate(run_account, customers=10, events=400)
    rng = random.Random(5)
    shuffled = stream + [copy.deepcopy(e) for e in rng.sample(stream, 100)]
    rng.shuffle(shuffled)

    outcomes = []
    for start in range(0, len(shuffled), 32):
        run = billing.apply_events(shuffled[start : start + 32])
        assert run.error is None
        outcomes.extend(run.applied)

    assert len(outcomes) == 500
    assert sum(o.status == "duplicate" for o in outcomes) == 100
    _same_books(services, run_books, reference)
    # Each event's row counts the postings it made, and they are the ledger's entries.
    assert count(
        services,
        "SELECT coalesce(sum(postings), 0) FROM stripe_events WHERE books_client_id = %s",
        run_books,
    ) == count(services, "SELECT count(*) FROM journal_entries WHERE client_id = %s", run_books)


def test_a_poison_event_stops_its_run_and_the_events_before_it_are_applied_once(
    services: dict[str, str], account: str
) -> None:
    books = books_of(services, account)
    paid = {**corpus("srm__invoice.paid.json", account), "id": "evt_paid"}
    charge = {**corpus("srm__charge.succeeded.json", account), "id": "evt_charge"}
    poison = {**copy.deepcopy(charge), "id": "evt_poison"}
    poison["data"]["object"]["currency"] = "xyz"
    behind = {**corpus("srm__customer.created.json", account), "id": "evt_behind"}
    recorded = "SELECT count(*) FROM stripe_events WHERE books_client_id = %s"

    run = billing.apply_events([paid, charge, poison, behind])

    assert [(o.event_id, o.status) for o in run.applied] == [
        (paid["id"], "applied"),
        (charge["id"], "applied"),
    ]
    assert isinstance(run.error, billing.InvalidEvent)
    assert str(run.error) == (
        "event evt_poison: field data.object.currency must be an ISO 4217 currency code with"
        " minor units, got 'xyz'"
    )
    # The poison event and the one behind it left nothing; the two before it are in.
    assert count(services, recorded, books) == 2
    assert balances(books) == {("1100", USD): 2000, ("1200", USD): 2000, ("4000", USD): -4000}

    # Delivered again from the poison event: it fails alone, again; once it is gone (dead-
    # lettered), the one behind it applies; the two before it, delivered again, change nothing.
    again = billing.apply_events([poison, behind])
    assert (again.applied, type(again.error)) == ((), billing.InvalidEvent)
    assert billing.apply_events([behind]).applied[0].status == "applied"
    redelivered = billing.apply_events([paid, charge])
    assert [o.status for o in redelivered.applied] == ["duplicate", "duplicate"]
    assert count(services, recorded, books) == 3
    assert balances(books) == {("1100", USD): 2000, ("1200", USD): 2000, ("4000", USD): -4000}


def _assert_stopped_at_unstorable(
    services: dict[str, str],
    books: uuid.UUID,
    run: billing.BatchOutcome,
    before: dict[str, Any],
    bad: dict[str, Any],
) -> None:
    """The run kept only ``before``, and stopped at ``bad`` as data the database refused."""
    assert [o.event_id for o in run.applied] == [before["id"]]
    assert isinstance(run.error, billing.EventRejected)
    assert str(run.error).startswith(f"event {bad['id']} holds data the database cannot store: ")
    recorded = "SELECT count(*) FROM stripe_events WHERE books_client_id = %s"
    assert count(services, recorded, books) == 1


def test_text_the_database_cannot_store_stops_a_run_at_its_event(
    services: dict[str, str], account: str
) -> None:
    """The database refuses the statement, not Python: the run is applied again statement by
    statement to find which event it was."""
    books = books_of(services, account)
    before = {**corpus("srm__invoice.paid.json", account), "id": "evt_before"}
    bad = {**corpus("srm__customer.created.json", account), "id": "evt_nul"}
    bad["data"]["object"]["name"] = "Null\x00byte"
    behind = {**corpus("srm__charge.succeeded.json", account), "id": "evt_behind"}

    run = billing.apply_events([before, bad, behind])

    _assert_stopped_at_unstorable(services, books, run, before, bad)
    assert balances(books) == {("1100", USD): 2000, ("4000", USD): -2000}


def test_a_run_cut_by_a_crash_and_delivered_again_posts_each_effect_once(
    services: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (run_account, run_books), (_, reference) = _books_pair({"customers": 3, "events": 120})
    stream = se.generate(run_account, customers=3, events=120)
    assert billing.apply_events(stream[:40]).error is None

    # The next run's connection dies at its third charge, halfway through the run.
    charges = 0
    apply_charge = billing._HANDLERS["charge"]

    def crash(work: Any, obj: Any) -> None:
        nonlocal charges
        charges += 1
        if charges == 3:
            work.conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        apply_charge(work, obj)

    monkeypatch.setitem(billing._HANDLERS, "charge", crash)  # type: ignore[arg-type]
    with pytest.raises(UpstreamError, match="the database is unavailable"):
        billing.apply_events(stream[40:])
    monkeypatch.undo()
    recorded = "SELECT count(*) FROM stripe_events WHERE books_client_id = %s"
    assert count(services, recorded, run_books) == 40

    # Everything delivered again: what was committed is a duplicate, the rest applies once.
    again = billing.apply_events(stream)
    assert again.error is None
    assert [o.status for o in again.applied[:40]] == ["duplicate"] * 40
    assert {o.status for o in again.applied[40:]} <= {"applied", "ignored"}
    _same_books(services, run_books, reference)


def test_a_server_refusal_no_later_answer_shows_stops_the_run_at_its_event(
    services: dict[str, str], account: str
) -> None:
    """Events that post nothing leave no answer to read after their statements: the
    server's refusal then surfaces only at the commit, and still names its event."""
    books = books_of(services, account)
    before = {**corpus("srm__customer.created.json", account), "id": "evt_before"}
    bad = copy.deepcopy({**before, "id": "evt_nul_metadata"})
    bad["data"]["object"]["id"] = "cus_other"
    # Python may hold it; the jsonb column refuses it.
    bad["data"]["object"]["metadata"] = {"note": "x\x00y"}
    recorded = "SELECT count(*) FROM stripe_events WHERE books_client_id = %s"

    run = billing.apply_events([before, bad])

    _assert_stopped_at_unstorable(services, books, run, before, bad)
    with pytest.raises(billing.EventRejected, match=r"^event evt_nul_metadata holds data"):
        billing.apply_event(bad)
    assert count(services, recorded, books) == 1
    assert mirror(services, "stripe_customers", books) == {
        before["data"]["object"]["id"]: ("active", before["id"])
    }


@pytest.mark.parametrize("field", ["event", "object"])
def test_an_id_too_long_for_an_index_is_rejected_by_name_not_retried(
    services: dict[str, str], account: str, field: str
) -> None:
    """Postgres refuses an index entry over about 2.7 kB as a program limit: no retry helps,
    so the event is rejected like text it cannot hold, with the events before it kept."""
    books = books_of(services, account)
    before = {**corpus("srm__invoice.paid.json", account), "id": "evt_before"}
    bad = copy.deepcopy({**corpus("srm__customer.created.json", account), "id": "evt_long"})
    # Random letters, so that the server cannot compress the entry below its limit.
    long_id = "".join(random.Random(7).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=12000))
    if field == "event":
        bad["id"] = f"evt_{long_id}"
    else:
        bad["data"]["object"]["id"] = f"cus_{long_id}"
    behind = {**corpus("srm__customer.created.json", account), "id": "evt_behind"}

    run = billing.apply_events([before, bad, behind])

    _assert_stopped_at_unstorable(services, books, run, before, bad)
    with pytest.raises(billing.EventRejected):
        billing.apply_event(bad)
    assert billing.apply_events([behind]).applied[0].status == "applied"


def test_runs_of_two_sessions_that_deadlock_on_refunds_are_both_applied(
    services: dict[str, str], account: str
) -> None:
    """A run holds the locks of every object it claims until it commits, so a customer's run
    (a charge with two refunds inside) and the account's run (the two refunds' own events,
    in the other order) can each wait for the other. The server rolls one back; it is run
    again instead of failing its whole batch."""
    books = books_of(services, account)
    refunds = [
        se.refund(
            f"re_dl{n}",
            charge_id="ch_dl",
            currency="usd",
            amount=100,
            created=1_700_000_000,
            status="succeeded",
        )
        for n in (1, 2)
    ]
    charge = se.charge(
        "ch_dl",
        customer="cus_1",
        currency="usd",
        amount=300,
        created=1_699_999_000,
        invoice_id=None,
        refunds=refunds,
    )
    customer_run = [
        se.event("charge.refunded", charge, event_id="evt_dl_c", created=10, account=account)
    ]
    account_run = [
        se.event(
            "charge.refund.updated",
            {**refund, "status": "failed"},
            event_id=f"evt_dl_{refund['id']}",
            created=20,
            account=account,
        )
        for refund in reversed(refunds)
    ]
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    results: dict[str, object] = {}

    def deliver(name: str, run: list[dict[str, Any]]) -> None:
        try:
            results[name] = billing.apply_events(run)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            results[name] = exc

    with psycopg.connect(services["DATABASE_URL"]) as holder:
        # The first refund's lock is held, so that each run takes its locks in a known order:
        # the customer's run holds the charge and waits for it, the account's run holds the
        # second refund and waits behind.
        holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"stripe:{account}:re_dl1",)
        )
        threads = {
            "customer": threading.Thread(target=deliver, args=("customer", customer_run)),
            "account": threading.Thread(target=deliver, args=("account", account_run)),
        }
        for waiters, name in enumerate(("customer", "account"), start=1):
            threads[name].start()
            deadline = time.monotonic() + 30
            while count(services, waiting) < waiters:
                assert time.monotonic() < deadline, f"the {name} run never waited"
                time.sleep(0.05)
        # Both have waited past deadlock_timeout before the cycle closes, so the server finds
        # it when the customer's run waits for the second refund.
        timeout = holder.execute(
            "SELECT extract(epoch FROM current_setting('deadlock_timeout')::interval)"
        ).fetchone()
        assert timeout is not None
        time.sleep(float(timeout[0]) * 1.5)
        holder.commit()
        for thread in threads.values():
            thread.join(timeout=60)

    assert all(
        isinstance(r, billing.BatchOutcome) and r.error is None for r in results.values()
    ), results
    # A sale of 300, both refunds sent and returned.
    assert balances(books) == {("1200", USD): 300, ("4000", USD): -300}
