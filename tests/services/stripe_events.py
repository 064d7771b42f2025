"""Stripe events for the billing tests: the corpus files, and streams generated from their
shapes (the corpus objects copied and given new ids, amounts, statuses and times).
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import CORPUS

STRIPE = CORPUS / "stripe"


def load(name: str) -> dict[str, Any]:
    """A corpus file as Stripe sent it (``srm__invoice.paid.json``)."""
    data: dict[str, Any] = json.loads((STRIPE / name).read_text())
    return data


def event(
    event_type: str, obj: dict[str, Any], *, event_id: str, created: int, account: str
) -> dict[str, Any]:
    """An event envelope in the shape of the corpus events, around ``obj``."""
    envelope = copy.deepcopy(load("srm__invoice.paid.json"))
    envelope.update(id=event_id, type=event_type, created=created, account=account)
    envelope["data"] = {"object": obj}
    return envelope


def _object(name: str) -> dict[str, Any]:
    return copy.deepcopy(load(name)["data"]["object"])


def invoice(
    invoice_id: str,
    *,
    customer: str,
    currency: str,
    total: int,
    tax: int = 0,
    status: str,
    finalized_at: int | None,
    charge: str | None = None,
) -> dict[str, Any]:
    """An invoice shaped like the corpus ``invoice.paid`` one."""
    obj = _object("srm__invoice.paid.json")
    paid = status == "paid"
    obj.update(
        id=invoice_id,
        customer=customer,
        currency=currency,
        total=total,
        subtotal=total - tax,
        tax=tax or None,
        total_tax_amounts=[{"amount": tax, "inclusive": False, "tax_rate": "txr_1"}]
        if tax
        else [],
        amount_due=total,
        amount_paid=total if paid else 0,
        amount_remaining=0 if paid else total,
        paid=paid,
        status=status,
        charge=charge,
        number=f"N-{invoice_id[-6:]}",
        created=(finalized_at or 1_700_000_000) - 60,
    )
    obj["status_transitions"].update(
        finalized_at=finalized_at, paid_at=finalized_at if paid else None
    )
    line = obj["lines"]["data"][0]
    line.update(id=f"il_{invoice_id[3:]}", amount=total - tax, currency=currency)
    return obj


def charge(
    charge_id: str,
    *,
    customer: str,
    currency: str,
    amount: int,
    created: int,
    invoice_id: str | None,
    fee: int | None = None,
    refunds: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A succeeded charge shaped like the corpus ``charge.succeeded`` one; with ``fee`` its
    balance transaction is expanded, as a payload fetched with ``expand[]`` carries it."""
    obj = _object("srm__charge.succeeded.json")
    refunded = sum(refund["amount"] for refund in refunds or [])
    obj.update(
        id=charge_id,
        customer=customer,
        currency=currency,
        amount=amount,
        amount_captured=amount,
        amount_refunded=refunded,
        refunded=refunded == amount,
        created=created,
        invoice=invoice_id,
        payment_intent=f"pi_{charge_id[3:]}",
    )
    if fee is not None:
        obj["balance_transaction"] = balance_transaction(
            f"txn_{charge_id[3:]}",
            currency=currency,
            amount=amount,
            fee=fee,
            created=created,
            source=charge_id,
            kind="charge",
        )
    if refunds is not None:
        obj["refunds"] = {"object": "list", "data": refunds, "has_more": False}
    return obj


def balance_transaction(
    txn_id: str, *, currency: str, amount: int, fee: int, created: int, source: str, kind: str
) -> dict[str, Any]:
    """A balance transaction shaped like the one the corpus dispute carries."""
    obj = copy.deepcopy(
        load("srm__charge.dispute.funds_withdrawn.json")["data"]["object"]["balance_transactions"][
            0
        ]
    )
    obj.update(
        id=txn_id,
        currency=currency,
        amount=amount,
        fee=fee,
        net=amount - fee,
        created=created,
        source=source,
        type=kind,
        status="available",
    )
    obj["fee_details"] = (
        [
            {
                "amount": fee,
                "application": None,
                "currency": currency,
                "description": "Stripe fee",
                "type": "stripe_fee",
            }
        ]
        if fee
        else []
    )
    return obj


def refund(
    refund_id: str, *, charge_id: str, currency: str, amount: int, created: int, status: str
) -> dict[str, Any]:
    """A refund shaped like the corpus ``charge.refund.updated`` one."""
    obj = _object("srm__charge.refund.updated.json")
    obj.update(
        id=refund_id,
        charge=charge_id,
        currency=currency,
        amount=amount,
        created=created,
        status=status,
        balance_transaction=f"txn_{refund_id[3:]}",
    )
    return obj


def dispute(
    dispute_id: str,
    *,
    charge_id: str,
    currency: str,
    amount: int,
    created: int,
    status: str,
    movements: list[dict[str, Any]],
) -> dict[str, Any]:
    """A dispute shaped like the corpus ``charge.dispute.funds_withdrawn`` one."""
    obj = _object("srm__charge.dispute.funds_withdrawn.json")
    obj.update(
        id=dispute_id,
        charge=charge_id,
        currency=currency,
        amount=amount,
        created=created,
        status=status,
        balance_transactions=movements,
        balance_transaction=movements[-1]["id"] if movements else None,
    )
    return obj


def payout(
    payout_id: str, *, currency: str, amount: int, created: int, status: str
) -> dict[str, Any]:
    """A payout shaped like the corpus ``payout.paid`` one."""
    obj = _object("srm__payout.paid.json")
    obj.update(
        id=payout_id,
        currency=currency,
        amount=amount,
        created=created,
        arrival_date=created + 86_400,
        status=status,
        balance_transaction=f"txn_{payout_id[3:]}",
    )
    return obj


@dataclass
class Stream:
    """Events of one Stripe account in the order Stripe created them."""

    account: str
    rng: random.Random
    events: list[dict[str, Any]] = field(default_factory=list)
    clock: int = 1_700_000_000
    serial: int = 0

    def tick(self) -> int:
        self.clock += self.rng.randint(1, 120)
        return self.clock

    def next_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}_gen{self.serial:07d}"

    def emit(self, event_type: str, obj: dict[str, Any]) -> None:
        self.events.append(
            event(
                event_type,
                copy.deepcopy(obj),
                event_id=self.next_id("evt"),
                created=self.tick(),
                account=self.account,
            )
        )


# Customer currencies: mostly USD, with zero-decimal JPY and three-decimal KWD among them.
CURRENCIES = ("usd",) * 6 + ("eur", "jpy", "kwd", "usd")
AMOUNTS = {
    "usd": (500, 250_000),
    "eur": (500, 90_000),
    "jpy": (100, 500_000),
    "kwd": (1_000, 900_000),
}


def generate(
    account: str, *, customers: int = 50, events: int = 1000, seed: int = 7
) -> list[dict[str, Any]]:
    """``events`` events over ``customers`` customers: invoices created, finalised and paid,
    charges with fees, refunds (some failing), disputes won and lost, voided invoices,
    payouts (some failing), and event types billing ignores."""
    stream = Stream(account, random.Random(seed))
    names = [f"cus_gen{i:04d}" for i in range(customers)]
    for name in names:
        customer = _object("srm__customer.created.json")
        customer.update(id=name, email=f"{name}@example.com")
        stream.emit("customer.created", customer)
    turn = 0
    while len(stream.events) < events:
        # Every customer in turn, so that each has invoices in the stream.
        name = names[turn % customers]
        currency = CURRENCIES[turn % customers % len(CURRENCIES)]
        turn += 1
        _story(stream, name, currency)
        if stream.rng.random() < 0.15:
            _payout_story(stream, currency)
        if stream.rng.random() < 0.05:
            stream.emit("balance.available", _object("srm__balance.available.json"))
    return stream.events[:events]


def _amount(stream: Stream, currency: str) -> int:
    low, high = AMOUNTS[currency]
    value = stream.rng.randint(low, high)
    # Stripe wants the last digit of three-decimal amounts to be 0.
    return value - value % 10 if currency == "kwd" else value


def _story(stream: Stream, customer: str, currency: str) -> None:
    rng = stream.rng
    invoice_id = stream.next_id("in")
    charge_id = stream.next_id("ch")
    total = _amount(stream, currency)
    tax = total // 10 if rng.random() < 0.3 else 0
    draft = invoice(
        invoice_id,
        customer=customer,
        currency=currency,
        total=total,
        tax=tax,
        status="draft",
        finalized_at=None,
    )
    stream.emit("invoice.created", draft)
    finalized_at = stream.tick()
    opened = invoice(
        invoice_id,
        customer=customer,
        currency=currency,
        total=total,
        tax=tax,
        status="open",
        finalized_at=finalized_at,
    )
    stream.emit("invoice.finalized", opened)
    if rng.random() < 0.08:
        # Payment failed; the invoice stays open and receivable.
        stream.emit("invoice.payment_failed", {**opened, "attempt_count": 1, "attempted": True})
        return
    if rng.random() < 0.1:
        voided = copy.deepcopy(opened)
        voided["status"] = "void"
        voided["status_transitions"]["voided_at"] = stream.tick()
        stream.emit("invoice.voided", voided)
        return

    created = stream.tick()
    fee = max(1, total * 29 // 1000 + (30 if currency in ("usd", "eur") else 0))
    paid_charge = charge(
        charge_id,
        customer=customer,
        currency=currency,
        amount=total,
        created=created,
        invoice_id=invoice_id,
        fee=fee,
    )
    stream.emit("charge.succeeded", paid_charge)
    stream.emit(
        "invoice.paid",
        invoice(
            invoice_id,
            customer=customer,
            currency=currency,
            total=total,
            tax=tax,
            status="paid",
            finalized_at=finalized_at,
            charge=charge_id,
        ),
    )
    roll = rng.random()
    if roll < 0.2:
        _refund_story(stream, paid_charge, currency, total)
    elif roll < 0.3:
        _dispute_story(stream, charge_id, currency, total)


def _refund_story(stream: Stream, paid_charge: dict[str, Any], currency: str, total: int) -> None:
    rng = stream.rng
    refund_id = stream.next_id("re")
    amount = total if rng.random() < 0.5 else max(10, (total // 2) - (total // 2) % 10)
    created = stream.tick()
    pending = refund(
        refund_id,
        charge_id=paid_charge["id"],
        currency=currency,
        amount=amount,
        created=created,
        status="pending",
    )
    stream.emit("charge.refund.updated", pending)
    final = "failed" if rng.random() < 0.2 else "succeeded"
    stream.emit("charge.refund.updated", {**pending, "status": final})
    if final == "succeeded":
        refunded = copy.deepcopy(paid_charge)
        refunded.update(amount_refunded=amount, refunded=amount == total)
        refunded["refunds"] = {
            "object": "list",
            "data": [{**pending, "status": final}],
            "has_more": False,
        }
        stream.emit("charge.refunded", refunded)


def _dispute_story(stream: Stream, charge_id: str, currency: str, total: int) -> None:
    dispute_id = stream.next_id("dp")
    created = stream.tick()
    fee = 1500 if currency in ("usd", "eur") else 0
    withdrawal = balance_transaction(
        stream.next_id("txn"),
        currency=currency,
        amount=-total,
        fee=fee,
        created=created,
        source=dispute_id,
        kind="adjustment",
    )
    opened = dispute(
        dispute_id,
        charge_id=charge_id,
        currency=currency,
        amount=total,
        created=created,
        status="needs_response",
        movements=[withdrawal],
    )
    stream.emit("charge.dispute.created", opened)
    stream.emit("charge.dispute.funds_withdrawn", opened)
    if stream.rng.random() < 0.5:
        reinstated = balance_transaction(
            stream.next_id("txn"),
            currency=currency,
            amount=total,
            fee=-fee,
            created=stream.tick(),
            source=dispute_id,
            kind="adjustment",
        )
        won = dispute(
            dispute_id,
            charge_id=charge_id,
            currency=currency,
            amount=total,
            created=created,
            status="won",
            movements=[withdrawal, reinstated],
        )
        stream.emit("charge.dispute.funds_reinstated", won)
        stream.emit("charge.dispute.closed", won)
    else:
        lost = dispute(
            dispute_id,
            charge_id=charge_id,
            currency=currency,
            amount=total,
            created=created,
            status="lost",
            movements=[withdrawal],
        )
        stream.emit("charge.dispute.closed", lost)


def _payout_story(stream: Stream, currency: str) -> None:
    payout_id = stream.next_id("po")
    amount = _amount(stream, currency)
    created = stream.tick()
    stream.emit(
        "payout.created",
        payout(payout_id, currency=currency, amount=amount, created=created, status="pending"),
    )
    stream.emit(
        "payout.paid",
        payout(payout_id, currency=currency, amount=amount, created=created, status="paid"),
    )
    if stream.rng.random() < 0.2:
        stream.emit(
            "payout.failed",
            payout(payout_id, currency=currency, amount=amount, created=created, status="failed"),
        )
