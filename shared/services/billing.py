"""Billing: Stripe events applied to the billing mirror and to the firm's own ledger, each
effect once, whatever order and however often the events arrive.

Two rules make the order irrelevant. A mirror row keeps the snapshot with the highest
(status rank, event time, event id), so a late or repeated event never undoes a newer one.
Every posting is derived from the Stripe object in the event alone and keyed by the Stripe
ids it stands for (``stripe:invoice:in_1:finalized``), so whichever event carries it first
posts it and every later one finds the key taken. The few postings that depend on two
snapshots (a refund or payout that failed after it had moved money) are decided after the
mirror row is merged, under a lock on the object.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

import psycopg
from psycopg import sql

from shared.adapters import postgres
from shared.config import get_settings
from shared.domain.money import exponent, normalise_currency
from shared.errors import Conflict, NotFound, ValidationError
from shared.services import audit, clients, engagements

log = logging.getLogger(__name__)

CLIENT_METADATA_KEY = "advisoros_client_id"
"""Customer metadata key that names the AdvisorOS client a Stripe customer is."""

# The billing chart's accounts (``clients.BILLING_CHART``) that postings use.
BANK = "1000"
RECEIVABLE = "1100"
STRIPE_CLEARING = "1200"
DISPUTED_FUNDS = "1300"
SALES_TAX_PAYABLE = "2100"
REVENUE = "4000"
REFUNDS = "4100"
FEES = "6100"
DISPUTE_LOSSES = "6200"
_POSTING_ACCOUNTS = (
    BANK,
    RECEIVABLE,
    STRIPE_CLEARING,
    DISPUTED_FUNDS,
    SALES_TAX_PAYABLE,
    REVENUE,
    REFUNDS,
    FEES,
    DISPUTE_LOSSES,
)

# Stripe counts amounts in the currency's ISO 4217 minor unit (JPY and KRW in whole units,
# KWD and BHD in thousandths), except where it keeps more decimals than ISO for backward
# compatibility: ISK is two-decimal in the API (100 = 1 krona) while ISO gives it none.
STRIPE_EXTRA_DECIMALS: Mapping[str, int] = {"ISK": 2}

# Status ranks per object: a stored status is replaced only by one of the same or a higher
# rank, so a paid invoice stays paid when a late ``invoice.finalized`` arrives. Statuses
# Stripe adds later rank 0 until they are placed here.
STATUS_RANKS: Mapping[str, Mapping[str, int]] = {
    "customer": {"active": 0, "deleted": 1},
    "subscription": {
        "incomplete": 0,
        "trialing": 1,
        "active": 1,
        "past_due": 1,
        "unpaid": 1,
        "paused": 1,
        "canceled": 2,
        "incomplete_expired": 2,
    },
    "invoice": {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3, "deleted": 3},
    "payment_intent": {
        "requires_payment_method": 0,
        "requires_confirmation": 0,
        "requires_action": 0,
        "processing": 1,
        "requires_capture": 1,
        "canceled": 2,
        "succeeded": 2,
    },
    "charge": {"pending": 0, "failed": 1, "succeeded": 1},
    "refund": {"requires_action": 0, "pending": 1, "succeeded": 2, "failed": 3, "canceled": 3},
    "dispute": {
        "warning_needs_response": 0,
        "warning_under_review": 1,
        "warning_closed": 2,
        "needs_response": 3,
        "under_review": 4,
        "charge_refunded": 5,
        "prevented": 5,
        "won": 5,
        "lost": 5,
    },
    "payout": {"pending": 0, "in_transit": 1, "paid": 2, "failed": 3, "canceled": 3},
    "balance_transaction": {"pending": 0, "available": 1},
}

# Invoice statuses that mean the invoice was finalised (drafts are deleted, never voided).
_FINALISED = frozenset({"open", "paid", "uncollectible", "void"})
# Refund and payout statuses that hand the money back after it had moved.
_UNDONE = frozenset({"failed", "canceled"})
# Events with a ``data.object`` that is no Stripe object with an id of its own.
_PREVIEW_EVENTS = frozenset({"invoice.upcoming"})

# Amounts beyond this many units are refused as malformed: no invoice is that large, and it
# keeps every sum far inside a 64-bit integer.
MAX_ABS_AMOUNT = 10**15

_ACCOUNT_ID = re.compile(r"^acct_[A-Za-z0-9_]+$")


class EventRejected(ValidationError):
    """The event can never be applied as it is; retrying will not help, a person must act.

    Attributes:
        event_id: the Stripe event id, or the message id when the body has none.
    """

    def __init__(self, event_id: str, message: str) -> None:
        super().__init__(message)
        self.event_id = event_id


class InvalidEvent(EventRejected):
    """The event is malformed; ``field`` is the path of the offending field."""

    def __init__(self, event_id: str, path: str, problem: str) -> None:
        super().__init__(event_id, f"event {event_id}: field {path} {problem}")
        self.field = path


class UnlinkedAccount(EventRejected):
    """The event's Stripe account is linked to no firm, so it has no books to post to."""


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    """What applying one event did.

    ``status`` is ``applied`` (mirror and ledger updated), ``duplicate`` (the event was
    applied before; nothing changed) or ``ignored`` (a type billing does not use; recorded
    so that it is acknowledged once). ``postings`` lists the dedupe keys of the journal
    entries this call posted, empty when every effect was already in the ledger.
    """

    status: Literal["applied", "duplicate", "ignored"]
    event_id: str
    event_type: str
    books_client_id: uuid.UUID
    postings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StripeAccountLink:
    """A Stripe account's link to a firm: the books its events post to, and whether this
    call made the link (False when it was already there)."""

    books_client_id: uuid.UUID
    created: bool


def link_stripe_account(
    firm_id: uuid.UUID, stripe_account_id: str, *, base_currency: str = "USD"
) -> uuid.UUID:
    """Link a Stripe account to a firm and return the books client its events post to.

    The same as ``ensure_stripe_account_link``, for callers that need only the books.
    """
    link = ensure_stripe_account_link(firm_id, stripe_account_id, base_currency=base_currency)
    return link.books_client_id


def ensure_stripe_account_link(
    firm_id: uuid.UUID, stripe_account_id: str, *, base_currency: str = "USD"
) -> StripeAccountLink:
    """Link a Stripe account to a firm, once, and say which books its events post to.

    The firm's first account creates its books (a client with ``clients.BILLING_CHART``,
    in ``base_currency``); further accounts of the same firm share them. Linking again is a
    no-op answered with ``created=False``. See ``link_stripe_account`` for the books only.

    Raises:
        ValidationError: the id is no Stripe account id (``acct_...``).
        NotFound: no such firm.
        Conflict: the account is already linked to another firm.
    """
    if not _ACCOUNT_ID.match(stripe_account_id):
        raise ValidationError(f"{stripe_account_id!r} is not a Stripe account id (acct_...)")
    with postgres.transaction() as conn:
        _lock(conn, f"stripe_account:{stripe_account_id}")
        _lock(conn, f"firm_books:{firm_id}")
        row = conn.execute(
            "SELECT firm_id, books_client_id FROM stripe_accounts WHERE stripe_account_id = %s",
            (stripe_account_id,),
        ).fetchone()
        if row is not None:
            if row[0] != firm_id:
                raise Conflict(f"Stripe account {stripe_account_id} is linked to another firm")
            return StripeAccountLink(row[1], created=False)
        firm = conn.execute("SELECT name FROM firms WHERE id = %s", (firm_id,)).fetchone()
        if firm is None:
            raise NotFound(f"unknown firm {firm_id}")
        shared_books = conn.execute(
            "SELECT books_client_id FROM stripe_accounts WHERE firm_id = %s LIMIT 1", (firm_id,)
        ).fetchone()
        books: uuid.UUID = (
            shared_books[0]
            if shared_books is not None
            else clients.insert_client(
                conn,
                firm_id,
                f"{firm[0]} (own books)",
                base_currency=base_currency,
                accounts=clients.BILLING_CHART,
            )
        )
        conn.execute(
            "INSERT INTO stripe_accounts (stripe_account_id, firm_id, books_client_id)"
            " VALUES (%s, %s, %s)",
            (stripe_account_id, firm_id, books),
        )
        audit.record(
            conn,
            actor="billing",
            action="stripe_account.linked",
            client_id=books,
            subject=stripe_account_id,
            details={"firm_id": str(firm_id)},
        )
    return StripeAccountLink(books, created=True)


def apply_event(event: Mapping[str, Any]) -> ApplyOutcome:
    """Apply one Stripe event (the JSON Stripe sent, decoded) in one transaction.

    An event already applied is a no-op (``duplicate``). An event about an object not seen
    before is applied from its own payload. Types billing does not use are recorded and
    answered ``ignored``. See ``apply_events`` for a session's events in one transaction.

    Raises:
        InvalidEvent: a field is missing or wrong (named); the message must dead-letter.
        UnlinkedAccount: the event's Stripe account is linked to no firm.
        EventRejected: otherwise unusable (text the database cannot hold, books without
            the billing accounts); the message must dead-letter.
        UpstreamError: the database failed; retrying may succeed.
    """
    batch = apply_events([event])
    if batch.error is not None:
        raise batch.error
    return batch.applied[0]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What applying a run of events did.

    ``applied`` holds the outcomes of the first ``len(applied)`` events, all committed.
    When an event failed, ``error`` is its error (as ``apply_event`` raises it): that event
    and every one after it were not applied.
    """

    applied: tuple[ApplyOutcome, ...]
    error: Exception | None = None


# Runs of a run of events that the server rolls back (deadlock, serialization failure).
RUN_ATTEMPTS = 3


class _Stopped(Exception):
    """An event of a run failed; the run's transaction must roll back."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


class _Unattributed(Exception):
    """A statement failed while the run was pipelined, so which event it was is unknown."""


def apply_events(events: Sequence[Any]) -> BatchOutcome:
    """Apply a run of Stripe events in order, in one transaction, each as ``apply_event``
    would; the events before a failing one are still applied, once.

    One commit serves the whole run, the books and chart of each Stripe account are read
    once per run, and the statements are pipelined: they go to the server without waiting
    for each other's answers, except where an answer decides what comes next. When an
    event fails, the transaction is rolled back and the events before it are applied again
    in a new one, so nothing of the failing event stays; the events after it are left for
    the caller to deliver again.

    Args:
        events: decoded Stripe events, in the order their session delivered them.

    Returns:
        The outcomes of the events applied, and the error that stopped the run, if any.

    Raises:
        UpstreamError: the database failed (a run rolled back as a deadlock victim is first
            applied again, ``RUN_ATTEMPTS`` times in all); nothing of the run is known to be
            applied, and applying it again is safe (every effect is keyed).
        psycopg.Error: the run failed as it committed (an unbalanced entry); apply its events
            one at a time to find which.
    """
    run = list(events)
    error: Exception | None = None
    pipelined = True
    while True:
        try:
            return BatchOutcome(_apply_run(run, pipelined=pipelined), error)
        except _Stopped as stop:
            run, error = run[: stop.index], stop.error
        except _Unattributed:
            # Run it again statement by statement: a failing statement then names its event.
            pipelined = False


# A run holds its objects' locks until it commits, so two sessions' runs can wait for each
# other (a charge's refunds, and the refunds' own events); the server then rolls one back,
# and nothing of it was kept.
@postgres.again_when_rolled_back(RUN_ATTEMPTS)
def _apply_run(events: Sequence[Any], *, pipelined: bool) -> tuple[ApplyOutcome, ...]:
    if not events:
        return ()
    envelopes = []
    for index, event in enumerate(events):
        try:
            envelopes.append(_Envelope.parse(event))
        except InvalidEvent as exc:
            raise _Stopped(index, exc) from exc
    try:
        with postgres.transaction(pipelined=pipelined) as conn:
            try:
                outcomes = _apply_envelopes(conn, envelopes, pipelined)
                if pipelined:
                    # Every answer is in before the commit, so that a refused statement
                    # surfaces here, not as the transaction's end.
                    with conn.pipeline() as pipeline:
                        pipeline.sync()
            except psycopg.Error as exc:
                if pipelined and _refused(exc):
                    raise _Unattributed() from exc
                raise
            return outcomes
    except psycopg.Error as exc:
        # Refused as it committed (a deferred check).
        if pipelined and _refused(exc):
            raise _Unattributed() from exc
        raise


def _refused(exc: psycopg.Error) -> bool:
    """Whether the server refused a statement for what it holds, which running it again will
    not change (not a lost connection, a deadlock or a shutdown)."""
    program_limit = (exc.sqlstate or "").startswith("54")
    return program_limit or not isinstance(exc, psycopg.OperationalError)


def _apply_envelopes(
    conn: psycopg.Connection, envelopes: Sequence[_Envelope], pipelined: bool
) -> tuple[ApplyOutcome, ...]:
    # Every event is claimed first (with its object's lock): pipelined, that is one round
    # trip for the whole run, and the claims say which events are new.
    known: dict[str | None, _Books] = {}
    claims: list[tuple[_Books, psycopg.Cursor[Any]]] = []
    for index, envelope in enumerate(envelopes):
        with _event_errors(index, envelope, pipelined):
            books = known.get(envelope.account)
            if books is None:
                books = known[envelope.account] = _books_for(conn, envelope)
            claims.append((books, _claim(conn, books, envelope)))

    # Every claim's answer is read before any event's work is sent, so the reads wait for
    # the claims alone.
    new: list[bool] = []
    for index, (envelope, (_, claim)) in enumerate(zip(envelopes, claims, strict=True)):
        with _event_errors(index, envelope, pipelined):
            new.append(claim.fetchone() is not None)

    works: list[_Work | ApplyOutcome] = []
    for index, (envelope, (books, _)) in enumerate(zip(envelopes, claims, strict=True)):
        with _event_errors(index, envelope, pipelined):
            works.append(_apply(conn, books, envelope, new[index]))

    # The postings' answers are read once every event's statements are sent.
    outcomes: list[ApplyOutcome] = []
    counted: list[tuple[str, str, int]] = []
    for index, (envelope, work) in enumerate(zip(envelopes, works, strict=True)):
        if isinstance(work, ApplyOutcome):
            outcomes.append(work)
            continue
        with _event_errors(index, envelope, pipelined):
            postings = work.posted()
        outcomes.append(ApplyOutcome("applied", envelope.id, envelope.type, work.books, postings))
        if postings:
            counted.append((work.account, envelope.id, len(postings)))
    if counted:
        accounts, ids, counts = zip(*counted, strict=True)
        conn.execute(
            "UPDATE stripe_events e SET postings = u.n"
            " FROM unnest(%s::text[], %s::text[], %s::int[]) AS u (account, id, n)"
            " WHERE e.stripe_account_id = u.account AND e.event_id = u.id",
            (list(accounts), list(ids), list(counts)),
        )
    return tuple(outcomes)


@contextlib.contextmanager
def _event_errors(index: int, envelope: _Envelope, pipelined: bool) -> Iterator[None]:
    """Turn a failure while applying the run's event ``index`` into ``_Stopped``."""
    try:
        yield
    except psycopg.Error as exc:
        if pipelined or not _refused(exc):
            raise
        if isinstance(exc, (psycopg.errors.DataError, psycopg.OperationalError)):
            # Text Postgres cannot hold (a NUL character), or a value beyond its limits (an
            # id too long for an index entry), can never be stored: no retry helps.
            reason = exc.diag.message_primary or str(exc)
            rejected = EventRejected(
                envelope.id, f"event {envelope.id} holds data the database cannot store: {reason}"
            )
            raise _Stopped(index, rejected) from None
        raise _Stopped(index, exc) from exc
    except Exception as exc:
        raise _Stopped(index, exc) from exc


@dataclass(frozen=True, slots=True)
class _Books:
    """The books a Stripe account's events post to, and their chart, read once per run."""

    account: str
    firm_id: uuid.UUID
    client_id: uuid.UUID
    accounts: Mapping[str, int]


def _claim(conn: psycopg.Connection, books: _Books, envelope: _Envelope) -> psycopg.Cursor[Any]:
    """Record the event as seen unless it was; the cursor answers a row when it is new.

    Events about one object apply one at a time (the lock is taken before the claim), so
    that decisions taken on the merged mirror row see every earlier event's effect.
    """
    return conn.execute(
        "INSERT INTO stripe_events"
        " (stripe_account_id, event_id, books_client_id, type, created, outcome)"
        " SELECT %s, %s, %s, %s, %s, %s"
        " FROM (SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))) AS locked"
        " ON CONFLICT (stripe_account_id, event_id) DO NOTHING RETURNING 1",
        (
            books.account,
            envelope.id,
            books.client_id,
            envelope.type,
            envelope.created,
            "applied" if _handler_for(envelope) else "ignored",
            _object_lock(books.account, envelope.object_id or envelope.id),
        ),
    )


def _apply(
    conn: psycopg.Connection, books: _Books, envelope: _Envelope, claimed: bool
) -> _Work | ApplyOutcome:
    """Apply one claimed event; its outcome, or its work when postings are still unread."""
    handler = _handler_for(envelope)
    if not claimed:
        return ApplyOutcome("duplicate", envelope.id, envelope.type, books.client_id)
    if handler is None:
        return ApplyOutcome("ignored", envelope.id, envelope.type, books.client_id)
    if not books.accounts.keys() >= set(_POSTING_ACCOUNTS):
        missing = [code for code in _POSTING_ACCOUNTS if code not in books.accounts]
        raise EventRejected(
            envelope.id,
            f"event {envelope.id}: the books {books.client_id} lack the billing account(s) "
            f"{', '.join(missing)} (see clients.BILLING_CHART); add them and replay the message",
        )
    work = _Work(conn, envelope, books.account, books.firm_id, books.client_id, books.accounts)
    handler(work, _Fields(envelope.id, "data.object", envelope.obj))
    return work


def stripe_amount_to_minor(amount: int, currency: str) -> int:
    """Convert a Stripe amount to ISO 4217 minor units of ``currency`` (an ISO code).

    Raises:
        ValidationError: the amount has fractions the currency cannot hold (ISK not in
            whole krona).
    """
    extra = STRIPE_EXTRA_DECIMALS.get(currency, 0)
    scale: int = 10**extra
    whole, rest = divmod(amount, scale)
    if rest:
        raise ValidationError(
            f"{amount} is not a whole number of {currency} minor units "
            f"(Stripe counts {currency} with {exponent(currency) + extra} decimals)"
        )
    return whole


# -- The event and its fields ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Envelope:
    id: str
    type: str
    created: datetime
    account: str | None
    obj: Mapping[str, Any]
    kind: str
    object_id: str | None

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> _Envelope:
        if not isinstance(event, Mapping):
            raise InvalidEvent("(unknown)", "(body)", "must be a JSON object (a Stripe event)")
        event_id = event.get("id")
        if not isinstance(event_id, str) or not event_id.strip():
            raise InvalidEvent("(unknown)", "id", "is required and must be the event id text")
        top = _Fields(event_id, "", event)
        event_type = top.need("type")
        created = top.time("created")
        account = top.text("account", required=False)
        if account is not None and not _ACCOUNT_ID.match(account):
            raise InvalidEvent(
                event_id, "account", f"must be a Stripe account id, got {account!r}"
            )
        data = top.child("data")
        obj = data.child("object")
        kind = obj.text("object", required=False) or ""
        object_id = None if event_type in _PREVIEW_EVENTS else obj.text("id", required=False)
        assert created is not None
        return cls(event_id, event_type, created, account, obj.raw, kind, object_id)


class _Fields:
    """Typed reads from one JSON object of an event; errors name the field's full path."""

    def __init__(self, event_id: str, path: str, raw: Mapping[str, Any]) -> None:
        self.event_id = event_id
        self.path = path
        self.raw = raw

    def _where(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def _bad(self, name: str, problem: str) -> InvalidEvent:
        return InvalidEvent(self.event_id, self._where(name), problem)

    def child(self, name: str) -> _Fields:
        value = self.raw.get(name)
        if not isinstance(value, Mapping):
            raise self._bad(name, "is required and must be an object")
        return _Fields(self.event_id, self._where(name), value)

    def text(self, name: str, *, required: bool = True) -> str | None:
        value = self.raw.get(name)
        if isinstance(value, str) and value:
            return value
        if value is None or value == "":
            if required:
                raise self._bad(name, "is required")
            return None
        raise self._bad(name, f"must be text, got {json.dumps(value)[:40]}")

    def need(self, name: str) -> str:
        """A text field that must be there."""
        value = self.text(name)
        assert value is not None
        return value

    def ref(self, name: str) -> str | None:
        """An id that Stripe may send expanded (an object) or not (its id)."""
        value = self.raw.get(name)
        if isinstance(value, Mapping):
            return _Fields(self.event_id, self._where(name), value).need("id")
        return self.text(name, required=False)

    def expanded(self, name: str) -> _Fields | None:
        value = self.raw.get(name)
        if isinstance(value, Mapping):
            return _Fields(self.event_id, self._where(name), value)
        return None

    def integer(self, name: str, *, default: int | None = None) -> int:
        value = self.raw.get(name)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(
                name,
                "must be an integer amount in the currency's smallest unit, "
                f"got {json.dumps(value)[:40]}",
            )
        if abs(value) > MAX_ABS_AMOUNT:
            raise self._bad(name, f"is out of range: {value} is beyond ±{MAX_ABS_AMOUNT}")
        return value

    def amount(self, name: str, currency: str, *, default: int | None = None) -> int:
        try:
            return stripe_amount_to_minor(self.integer(name, default=default), currency)
        except InvalidEvent:
            raise
        except ValidationError as exc:
            raise self._bad(name, f"is not a valid amount: {exc}") from None

    def currency(self, name: str = "currency") -> str:
        code = self.need(name)
        try:
            return normalise_currency(code)
        except ValidationError:
            raise self._bad(
                name, f"must be an ISO 4217 currency code with minor units, got {code!r}"
            ) from None

    def time(self, name: str, *, required: bool = True) -> datetime | None:
        value = self.raw.get(name)
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(name, f"must be a Unix time in seconds, got {json.dumps(value)[:40]}")
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise self._bad(name, f"is out of range: {value} is no Unix time") from None

    def day(self, *names: str) -> date:
        """The date of the first of ``names`` that is set (the last one is required)."""
        for name in names[:-1]:
            found = self.time(name, required=False)
            if found is not None:
                return found.date()
        last = self.time(names[-1])
        assert last is not None
        return last.date()

    def flag(self, name: str) -> bool:
        return self.raw.get(name) is True

    def items(self, name: str) -> Iterator[_Fields]:
        """The objects of a list field, sent bare or as a Stripe list (``{"data": [...]}``)."""
        value = self.raw.get(name)
        path = self._where(name)
        if isinstance(value, Mapping):
            value, path = value.get("data"), f"{path}.data"
        if value is None:
            return
        if not isinstance(value, list):
            raise InvalidEvent(self.event_id, path, "must be a list")
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise InvalidEvent(self.event_id, f"{path}[{index}]", "must be an object")
            yield _Fields(self.event_id, f"{path}[{index}]", item)

    def status(self, kind: str) -> tuple[str, int]:
        status = self.need("status")
        return status, STATUS_RANKS[kind].get(status, 0)


# -- Applying ------------------------------------------------------------------------------


Line = tuple[str, int, str]
"""One journal line: account code, amount in minor units (debit positive), currency."""


@dataclass(slots=True)
class _Work:
    """One event's application: its transaction, books, and the postings it made."""

    conn: psycopg.Connection
    event: _Envelope
    account: str
    firm_id: uuid.UUID
    books: uuid.UUID
    accounts: Mapping[str, int]
    # The postings tried, in order: each key with the cursor that answers whether the entry
    # was new (read once the run's statements are sent), or True when already known.
    postings: list[tuple[str, psycopg.Cursor[Any] | bool]] = field(default_factory=list)

    def posted(self) -> tuple[str, ...]:
        """The keys of the entries this event posted (the others were in the ledger)."""
        return tuple(
            key
            for key, answer in self.postings
            if (answer if isinstance(answer, bool) else answer.fetchone() is not None)
        )

    def upsert(
        self, table: str, stripe_id: str, status: tuple[str, int], fields: _Fields, **columns: Any
    ) -> None:
        """Store this snapshot unless the stored one ranks higher (``snapshot_event`` then
        names this event)."""
        values = {
            "books_client_id": self.books,
            "stripe_id": stripe_id,
            "status": status[0],
            "status_rank": status[1],
            "snapshot_at": self.event.created,
            "snapshot_event": self.event.id,
            "data": json.dumps(fields.raw),
            **columns,
        }
        self.conn.execute(_upsert_query(table, tuple(values)), list(values.values()))

    def lock(self, stripe_id: str) -> None:
        """Hold the object's lock (as its own events take it) until the transaction ends."""
        _lock(self.conn, _object_lock(self.account, stripe_id))

    def stored_status(self, table: str, stripe_id: str) -> str | None:
        row = self.conn.execute(
            sql.SQL("SELECT status FROM {} WHERE books_client_id = %s AND stripe_id = %s").format(
                sql.Identifier(table)
            ),
            (self.books, stripe_id),
        ).fetchone()
        return None if row is None else str(row[0])

    def entry_id(self, key: str) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM journal_entries WHERE client_id = %s AND dedupe_key = %s",
            (self.books, key),
        ).fetchone()
        return None if row is None else int(row[0])

    def post(
        self, key: str, booked_on: date, reference: str, memo: str, lines: Sequence[Line]
    ) -> None:
        """Post a balanced entry under ``key`` unless an entry with that key exists."""
        kept = [line for line in lines if line[1] != 0]
        if not kept:
            return
        # The entry and its lines go in one statement; a key already taken writes neither.
        answer = self.conn.execute(
            "WITH entry AS ("
            " INSERT INTO journal_entries"
            " (client_id, booked_on, reference, memo, source, dedupe_key)"
            " VALUES (%(books)s, %(on)s, %(ref)s, %(memo)s, 'stripe', %(key)s)"
            " ON CONFLICT (client_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING"
            " RETURNING id), lines AS ("
            " INSERT INTO journal_lines (entry_id, client_id, account_id, amount_minor, currency)"
            " SELECT entry.id, %(books)s, a, m, c FROM entry,"
            " unnest(%(accounts)s::bigint[], %(amounts)s::bigint[], %(currencies)s::text[])"
            " AS u (a, m, c))"
            " SELECT id FROM entry",
            {
                "books": self.books,
                "on": booked_on,
                "ref": reference,
                "memo": memo,
                "key": key,
                # Array literals written here: integers and ISO codes (letters only, checked
                # when read) need no quoting, and psycopg need not inspect three lists.
                "accounts": _array_text(self.accounts[code] for code, _, _ in kept),
                "amounts": _array_text(amount for _, amount, _ in kept),
                "currencies": _array_text(currency for _, _, currency in kept),
            },
        )
        self.postings.append((key, answer))

    def reverse(self, key: str, original_key: str, booked_on: date, memo: str) -> None:
        """Post the reversal of the entry ``original_key`` under ``key``, once."""
        original = self.entry_id(original_key)
        if original is None:
            return
        entry = self._insert_entry(key, booked_on, original_key, memo, original)
        if entry is None:
            return
        self.conn.execute(
            "INSERT INTO journal_lines (entry_id, client_id, account_id, amount_minor, currency,"
            " memo) SELECT %s, client_id, account_id, -amount_minor, currency, memo"
            " FROM journal_lines WHERE entry_id = %s ORDER BY id",
            (entry, original),
        )

    def _insert_entry(
        self, key: str, booked_on: date, reference: str, memo: str, reverses: int | None
    ) -> int | None:
        row = self.conn.execute(
            "INSERT INTO journal_entries"
            " (client_id, booked_on, reference, memo, source, dedupe_key, reverses_id)"
            " VALUES (%s, %s, %s, %s, 'stripe', %s, %s)"
            " ON CONFLICT (client_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING"
            " RETURNING id",
            (self.books, booked_on, reference, memo, key, reverses),
        ).fetchone()
        if row is None:
            return None
        self.postings.append((key, True))
        return int(row[0])


_UPSERT_QUERIES: dict[tuple[str, tuple[str, ...]], str] = {}


def _upsert_query(table: str, names: tuple[str, ...]) -> str:
    """The mirror upsert of ``table`` for these columns, composed once per process."""
    query = _UPSERT_QUERIES.get((table, names))
    if query is None:
        composed = sql.SQL(
            "INSERT INTO {table} AS t ({cols}) VALUES ({vals})"
            " ON CONFLICT (books_client_id, stripe_id) DO UPDATE SET {sets}, updated_at = now()"
            " WHERE (EXCLUDED.status_rank, EXCLUDED.snapshot_at, EXCLUDED.snapshot_event)"
            " > (t.status_rank, t.snapshot_at, t.snapshot_event)"
        ).format(
            table=sql.Identifier(table),
            cols=sql.SQL(", ").join(map(sql.Identifier, names)),
            vals=sql.SQL(", ").join(sql.Placeholder() * len(names)),
            sets=sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name)) for name in names[2:]
            ),
        )
        # Identifiers are quoted without a connection's help: they are plain ASCII names.
        query = _UPSERT_QUERIES[(table, names)] = composed.as_string(None)
    return query


def _array_text(items: Iterable[int | str]) -> str:
    """A Postgres array literal of integers or ISO currency codes (nothing to quote)."""
    return "{" + ",".join(map(str, items)) + "}"


def _object_lock(account: str, stripe_id: str) -> str:
    return f"stripe:{account}:{stripe_id}"


def _lock(conn: psycopg.Connection, name: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))


def _books_for(conn: psycopg.Connection, envelope: _Envelope) -> _Books:
    account = envelope.account or get_settings().stripe_account_id
    if account is None:
        raise UnlinkedAccount(
            envelope.id,
            f"event {envelope.id} names no Stripe account and STRIPE_ACCOUNT_ID is not set; "
            "set it to the deployment's own account, link that account to its firm, "
            "and replay the message",
        )
    rows = conn.execute(
        "SELECT s.firm_id, s.books_client_id, a.code, a.id FROM stripe_accounts s"
        " LEFT JOIN accounts a ON a.client_id = s.books_client_id AND a.code = ANY(%s)"
        " WHERE s.stripe_account_id = %s",
        (list(_POSTING_ACCOUNTS), account),
    ).fetchall()
    if not rows:
        raise UnlinkedAccount(
            envelope.id,
            f"event {envelope.id}: Stripe account {account} is not linked to a firm; "
            f"link it (billing.link_stripe_account(firm_id, {account!r})) and replay the message",
        )
    chart = {str(code): int(found) for _, _, code, found in rows if code is not None}
    return _Books(account, rows[0][0], rows[0][1], chart)


def _handler_for(envelope: _Envelope) -> Callable[[_Work, _Fields], None] | None:
    if envelope.type in _PREVIEW_EVENTS:
        return None
    handler = _HANDLERS.get(envelope.kind)
    if handler is not None and envelope.object_id is None:
        raise InvalidEvent(envelope.id, "data.object.id", "is required")
    return handler


# -- One handler per Stripe object -----------------------------------------------------------


def _customer(work: _Work, obj: _Fields) -> None:
    customer_id = _id(obj)
    deleted = obj.flag("deleted") or work.event.type == "customer.deleted"
    status = "deleted" if deleted else "active"
    metadata = obj.raw.get("metadata")
    named = metadata.get(CLIENT_METADATA_KEY) if isinstance(metadata, Mapping) else None
    client_id, problem = _linked_client(work, named)
    if problem:
        log.warning(
            "customer %s not linked: %s",
            customer_id,
            problem,
            extra={"event_id": work.event.id, "client_id": str(work.books)},
        )
    work.upsert(
        "stripe_customers",
        customer_id,
        (status, STATUS_RANKS["customer"][status]),
        obj,
        client_id=client_id,
        link_problem=problem,
        email=obj.text("email", required=False),
        name=obj.text("name", required=False),
    )


def _linked_client(work: _Work, named: object) -> tuple[uuid.UUID | None, str | None]:
    """The client a customer's metadata names, if it is a client of the books' firm."""
    if named is None or named == "":
        return None, None
    try:
        client_id = uuid.UUID(str(named))
    except ValueError:
        return None, f"metadata {CLIENT_METADATA_KEY} {str(named)[:60]!r} is not a client id"
    row = work.conn.execute("SELECT firm_id FROM clients WHERE id = %s", (client_id,)).fetchone()
    if row is None:
        return (
            None,
            f"metadata {CLIENT_METADATA_KEY} names client {client_id}, which does not exist",
        )
    if row[0] != work.firm_id:
        return None, f"metadata {CLIENT_METADATA_KEY} names client {client_id} of another firm"
    return client_id, None


def _subscription(work: _Work, obj: _Fields) -> None:
    work.upsert(
        "stripe_subscriptions",
        _id(obj),
        obj.status("subscription"),
        obj,
        customer=obj.ref("customer"),
        current_period_start=obj.time("current_period_start", required=False),
        current_period_end=obj.time("current_period_end", required=False),
    )


def _invoice(work: _Work, obj: _Fields) -> None:
    invoice_id = _id(obj)
    deleted = obj.flag("deleted") or work.event.type == "invoice.deleted"
    status = "deleted" if deleted else obj.need("status")
    currency = obj.currency()
    total = obj.amount("total", currency)
    tax = _invoice_tax(obj, currency)
    lines = [_invoice_line(line, currency) for line in obj.items("lines")]
    work.upsert(
        "stripe_invoices",
        invoice_id,
        (status, STATUS_RANKS["invoice"].get(status, 0)),
        obj,
        customer=obj.ref("customer"),
        subscription=obj.ref("subscription"),
        number=obj.text("number", required=False),
        currency=currency,
        total_minor=total,
        tax_minor=tax,
        amount_due_minor=obj.amount("amount_due", currency, default=total),
        amount_paid_minor=obj.amount("amount_paid", currency, default=0),
    )
    _replace_invoice_lines(work, invoice_id, currency, lines)
    if status == "paid":
        # An engagement waiting for this invoice is told in this same transaction.
        engagements.queue_invoice_paid(invoice_id, work.conn)

    # A paid, voided or uncollectible invoice was finalised: its receivable posts from
    # whichever of these events comes first.
    # Limitation: customer credit applied to an invoice (amount_due below total), invoices
    # paid out of band and invoices marked uncollectible leave their receivable open; they
    # need a manual entry.
    if status not in _FINALISED:
        return
    finalised = f"stripe:invoice:{invoice_id}:finalized"
    transitions = obj.expanded("status_transitions")
    finalized_at = transitions.time("finalized_at", required=False) if transitions else None
    booked_on = finalized_at.date() if finalized_at else obj.day("created")
    number = obj.text("number", required=False) or invoice_id
    work.post(
        finalised,
        booked_on,
        invoice_id,
        f"Stripe invoice {number} finalised",
        [
            (RECEIVABLE, total, currency),
            (REVENUE, -(total - tax), currency),
            (SALES_TAX_PAYABLE, -tax, currency),
        ],
    )
    if status == "void":
        voided_at = transitions.time("voided_at", required=False) if transitions else None
        work.reverse(
            f"stripe:invoice:{invoice_id}:voided",
            finalised,
            voided_at.date() if voided_at else booked_on,
            f"Stripe invoice {number} voided",
        )


def _invoice_tax(obj: _Fields, currency: str) -> int:
    """Tax on an invoice, from whichever field the event's API version has."""
    for name in ("total_taxes", "total_tax_amounts"):
        if obj.raw.get(name):
            return sum(item.amount("amount", currency) for item in obj.items(name))
    return obj.amount("tax", currency, default=0)


def _invoice_line(line: _Fields, currency: str) -> dict[str, Any]:
    period = line.expanded("period")
    return {
        "line_id": _id(line),
        "kind": line.text("type", required=False),
        "description": line.text("description", required=False),
        "amount_minor": line.amount("amount", currency),
        "subscription": line.ref("subscription"),
        "price": line.ref("price"),
        "period_start": period.time("start", required=False) if period else None,
        "period_end": period.time("end", required=False) if period else None,
    }


def _replace_invoice_lines(
    work: _Work, invoice_id: str, currency: str, lines: list[dict[str, Any]]
) -> None:
    """Replace the mirror's lines of an invoice when this event's snapshot was stored."""
    # Limitation: an event carries an invoice's first lines only (``has_more``); the
    # mirror holds those. Postings use the invoice totals and are not affected.
    stored = (
        "EXISTS (SELECT 1 FROM stripe_invoices WHERE books_client_id = %(books)s"
        " AND stripe_id = %(invoice)s AND snapshot_event = %(event)s)"
    )
    columns = ("line_id", "kind", "description", "amount_minor", "subscription", "price")
    values = {name: [line[name] for line in lines] for name in columns}
    work.conn.execute(
        "DELETE FROM stripe_invoice_lines"
        f" WHERE books_client_id = %(books)s AND invoice_id = %(invoice)s AND {stored}",
        {"books": work.books, "invoice": invoice_id, "event": work.event.id},
    )
    if not lines:
        return
    work.conn.execute(
        "INSERT INTO stripe_invoice_lines (books_client_id, invoice_id, currency, position,"
        " line_id, kind, description, amount_minor, subscription, price, period_start,"
        " period_end) SELECT %(books)s, %(invoice)s, %(currency)s, u.*"
        " FROM unnest(%(position)s::int[], %(line_id)s::text[], %(kind)s::text[],"
        " %(description)s::text[], %(amount_minor)s::bigint[], %(subscription)s::text[],"
        " %(price)s::text[], %(period_start)s::timestamptz[], %(period_end)s::timestamptz[])"
        f" AS u WHERE {stored} ON CONFLICT DO NOTHING",
        {
            "books": work.books,
            "invoice": invoice_id,
            "event": work.event.id,
            "currency": currency,
            "position": list(range(len(lines))),
            **values,
            "period_start": [line["period_start"] for line in lines],
            "period_end": [line["period_end"] for line in lines],
        },
    )


def _payment_intent(work: _Work, obj: _Fields) -> None:
    currency = obj.currency()
    work.upsert(
        "stripe_payment_intents",
        _id(obj),
        obj.status("payment_intent"),
        obj,
        customer=obj.ref("customer"),
        invoice=obj.ref("invoice"),
        currency=currency,
        amount_minor=obj.amount("amount", currency),
        amount_received_minor=obj.amount("amount_received", currency, default=0),
    )
    # Older API versions embed the intent's charges; they post as the charge events would.
    for charge in obj.items("charges"):
        _charge(work, charge)


def _charge(work: _Work, obj: _Fields) -> None:
    charge_id = _id(obj)
    status = obj.status("charge")
    currency = obj.currency()
    amount = obj.amount("amount", currency)
    captured = obj.raw.get("captured", True) is True
    amount_captured = obj.amount("amount_captured", currency, default=amount if captured else 0)
    invoice = obj.ref("invoice")
    work.upsert(
        "stripe_charges",
        charge_id,
        status,
        obj,
        customer=obj.ref("customer"),
        invoice=invoice,
        payment_intent=obj.ref("payment_intent"),
        balance_transaction=obj.ref("balance_transaction"),
        currency=currency,
        amount_minor=amount,
        amount_captured_minor=amount_captured,
        amount_refunded_minor=obj.amount("amount_refunded", currency, default=0),
    )

    # The charge is the one source of truth for money received: invoice.paid and
    # payment_intent.succeeded post nothing of their own. A charge for an invoice settles
    # its receivable; any other charge is a sale recognised when paid.
    # Limitation: API versions from 2025-03-31 no longer name the invoice on a charge, so
    # under them an invoice's charge would post as a sale beside the invoice's receivable;
    # keep the webhook endpoint on an earlier API version until invoice payments are read.
    # Limitation: a charge settled in another currency clears in its own currency; the
    # conversion to the payout currency is not booked, so clearing keeps a balance in each.
    if status[0] == "succeeded" and captured:
        work.post(
            f"stripe:charge:{charge_id}:paid",
            obj.day("created"),
            charge_id,
            f"Stripe payment {charge_id}" + (f" for invoice {invoice}" if invoice else ""),
            [
                (STRIPE_CLEARING, amount_captured, currency),
                (RECEIVABLE if invoice else REVENUE, -amount_captured, currency),
            ],
        )
    fee_source = obj.expanded("balance_transaction")
    if fee_source is not None:
        _balance_transaction(work, fee_source)
    # Limitation: API versions that leave a charge's refunds out of its payload post
    # refunds only from the refund events themselves.
    for refund in obj.items("refunds"):
        _refund(work, refund)


def _refund(work: _Work, obj: _Fields) -> None:
    refund_id = _id(obj)
    # A refund arrives in its own events and inside its charge's: one at a time.
    work.lock(refund_id)
    status = obj.status("refund")
    currency = obj.currency()
    amount = obj.amount("amount", currency)
    work.upsert(
        "stripe_refunds",
        refund_id,
        status,
        obj,
        charge=obj.ref("charge"),
        balance_transaction=obj.ref("balance_transaction"),
        currency=currency,
        amount_minor=amount,
    )
    fee_source = obj.expanded("balance_transaction")
    if fee_source is not None:
        _balance_transaction(work, fee_source)

    # Limitation: a refund is booked against revenue (through the Refunds account) in
    # full; the sales tax of a refunded invoice is not given back in the books.
    posted = f"stripe:refund:{refund_id}"
    booked_on = obj.day("created")
    if status[0] in ("pending", "succeeded"):
        work.post(
            posted,
            booked_on,
            refund_id,
            f"Stripe refund {refund_id}",
            [(REFUNDS, amount, currency), (STRIPE_CLEARING, -amount, currency)],
        )
    # Money that left and came back (a refund that failed after it was sent) is reversed;
    # the merged mirror row, not this event, says whether it failed.
    if work.stored_status("stripe_refunds", refund_id) in _UNDONE:
        work.reverse(f"{posted}:failed", posted, booked_on, f"Stripe refund {refund_id} failed")


def _dispute(work: _Work, obj: _Fields) -> None:
    dispute_id = _id(obj)
    status = obj.status("dispute")
    currency = obj.currency()
    work.upsert(
        "stripe_disputes",
        dispute_id,
        status,
        obj,
        charge=obj.ref("charge"),
        reason=obj.text("reason", required=False),
        currency=currency,
        amount_minor=obj.amount("amount", currency),
    )

    # Every dispute snapshot lists the balance transactions so far: the withdrawal when it
    # opened and the reinstatement when it was won. Each posts once, with its fee.
    held: dict[str, int] = {}
    for movement in obj.items("balance_transactions"):
        txn = _balance_transaction(work, movement)
        moved_currency = movement.currency()
        moved = movement.amount("amount", moved_currency)
        held[moved_currency] = held.get(moved_currency, 0) - moved
        work.post(
            f"stripe:balance_transaction:{txn}:dispute",
            movement.day("created"),
            dispute_id,
            f"Stripe dispute {dispute_id}: funds " + ("withdrawn" if moved < 0 else "reinstated"),
            [(DISPUTED_FUNDS, -moved, moved_currency), (STRIPE_CLEARING, moved, moved_currency)],
        )
    # Limitation: Stripe's dispute carries no closing date, so a loss is booked on the
    # date the dispute opened.
    if status[0] == "lost":
        work.post(
            f"stripe:dispute:{dispute_id}:lost",
            obj.day("created"),
            dispute_id,
            f"Stripe dispute {dispute_id} lost",
            [
                line
                for held_currency, amount in held.items()
                for line in (
                    (DISPUTE_LOSSES, amount, held_currency),
                    (DISPUTED_FUNDS, -amount, held_currency),
                )
            ],
        )


def _payout(work: _Work, obj: _Fields) -> None:
    payout_id = _id(obj)
    status = obj.status("payout")
    currency = obj.currency()
    amount = obj.amount("amount", currency)
    arrival = obj.time("arrival_date", required=False)
    work.upsert(
        "stripe_payouts",
        payout_id,
        status,
        obj,
        balance_transaction=obj.ref("balance_transaction"),
        currency=currency,
        amount_minor=amount,
        arrival_date=arrival.date() if arrival else None,
    )
    fee_source = obj.expanded("balance_transaction")
    if fee_source is not None:
        _balance_transaction(work, fee_source)

    posted = f"stripe:payout:{payout_id}:paid"
    booked_on = obj.day("arrival_date", "created")
    if status[0] == "paid":
        work.post(
            posted,
            booked_on,
            payout_id,
            f"Stripe payout {payout_id}",
            [(BANK, amount, currency), (STRIPE_CLEARING, -amount, currency)],
        )
    # A payout can fail after it was reported paid (the bank returned it).
    if work.stored_status("stripe_payouts", payout_id) in _UNDONE:
        work.reverse(
            f"stripe:payout:{payout_id}:failed",
            posted,
            booked_on,
            f"Stripe payout {payout_id} failed",
        )


def _balance_transaction(work: _Work, obj: _Fields) -> str:
    """Mirror an expanded balance transaction and post its Stripe fee; return its id.

    Limitation: webhook events carry a charge's balance transaction as an id, not
    expanded, so card fees post only from payloads that carry it expanded (disputes always
    do); the fees of the rest appear as a clearing balance left after payouts.
    """
    txn = _id(obj)
    currency = obj.currency()
    fee = obj.amount("fee", currency, default=0)
    amount = obj.amount("amount", currency)
    work.upsert(
        "stripe_balance_transactions",
        txn,
        obj.status("balance_transaction"),
        obj,
        type=obj.text("type", required=False),
        source=obj.ref("source"),
        currency=currency,
        amount_minor=amount,
        fee_minor=fee,
        net_minor=obj.amount("net", currency, default=amount - fee),
    )
    work.post(
        f"stripe:balance_transaction:{txn}:fee",
        obj.day("created"),
        txn,
        f"Stripe fees on {obj.ref('source') or txn}",
        [(FEES, fee, currency), (STRIPE_CLEARING, -fee, currency)],
    )
    return txn


def _id(obj: _Fields) -> str:
    return obj.need("id")


_HANDLERS: Mapping[str, Callable[[_Work, _Fields], None]] = {
    "customer": _customer,
    "subscription": _subscription,
    "invoice": _invoice,
    "payment_intent": _payment_intent,
    "charge": _charge,
    "refund": _refund,
    "dispute": _dispute,
    "payout": _payout,
}
