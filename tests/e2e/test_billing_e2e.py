"""The billing path as Stripe drives it: signed events over HTTP to ``python -m devhost run``,
through the local broker to the billing consumer, read back as the mirror and the trial
balance; then the same under duplicates, concurrency and a consumer killed mid-stream."""

from __future__ import annotations

import copy
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException
from typing import Any

import psycopg
import pytest

from shared.services import billing, ledger
from tests.conftest import CORPUS
from tests.e2e.conftest import MASTER_KEY, QUICKBOOKS_TOKEN, STRIPE_SECRET, App, Devhost
from tests.services import stripe_events as se
from tests.services.test_billing import CORPUS_EXPECTED, MIRRORS
from tests.webhook_support import intuit_signature, stripe_header

# The deployment's own account: events without an ``account`` field belong to it.
OWN_ACCOUNT = "acct_e2eplatform0001"
APPLY_TIMEOUT_S = 150
Balances = dict[tuple[str, str], int]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    """A devhost of its own, since one test kills it; the consumer looks at an empty queue
    every 50 ms and redelivers a failed message after 100 ms."""
    devhost = Devhost(
        tmp_path_factory.mktemp("billing-devhost"),
        STRIPE_ACCOUNT_ID=OWN_ACCOUNT,
        DEVHOST_BUS_POLL_INTERVAL_S="0.05",
        DEVHOST_BUS_RETRY_BACKOFF_S="0.1",
    )
    devhost.start()
    try:
        yield devhost
    finally:
        devhost.stop()


@pytest.fixture()
def app(host: Devhost) -> App:
    return host.app


# -- Helpers: as a person would do it, over HTTP; reads straight from the host's database ------


def link(app: App, stripe_account: str, firm_id: str | None = None) -> str:
    """Link ``stripe_account`` to a new firm (or ``firm_id``); return the books client id."""
    if firm_id is None:
        status, created = app.call(
            "POST", "/api/ops/clients", {"name": f"Firm of {stripe_account}"}, key=MASTER_KEY
        )
        assert status == 201, created
        firm_id = created["firm_id"]
    status, body = app.call(
        "POST",
        "/api/ops/stripe-accounts",
        {"firm_id": firm_id, "stripe_account_id": stripe_account},
        key=MASTER_KEY,
    )
    assert status == 201, body
    return str(body["books_client_id"])


def new_account() -> str:
    return f"acct_{uuid.uuid4().hex[:16]}"


def generated(account: str, **options: int) -> list[dict[str, Any]]:
    """A generated stream whose event ids are this stream's own: the inbox knows an event by
    its id alone, as Stripe's ids are unique, and every generated stream counts from one."""
    tag = uuid.uuid4().hex[:8]
    return [
        {**event, "id": event["id"].replace("evt_gen", f"evt_{tag}_")}
        for event in se.generate(account, **options)
    ]


def post_event(app: App, event: dict[str, Any]) -> dict[str, Any]:
    body = (json.dumps(event, indent=2) + "\n").encode()
    headers = {"Stripe-Signature": stripe_header(body, secret=STRIPE_SECRET)}
    status, answer = app.call("POST", "/api/webhooks/stripe", body, key=None, headers=headers)
    assert status == 200, answer
    return dict(answer)


def post_all(app: App, events: list[dict[str, Any]], threads: int = 8) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda e: post_event(app, e), events))


def query(app: App, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(app.database_url) as conn:
        return conn.execute(sql, params).fetchall()


def in_flight(app: App) -> list[str]:
    """Messages of ``stripe-events`` a consumer holds the lock of."""
    found = query(
        app,
        "SELECT message_id FROM local_broker.messages"
        " WHERE queue = 'stripe-events' AND locked_until > now()",
    )
    return [row[0] for row in found]


def applied_count(app: App, accounts: list[str]) -> int:
    [(found,)] = query(
        app, "SELECT count(*) FROM stripe_events WHERE stripe_account_id = ANY(%s)", accounts
    )
    return int(found)


def wait_until_applied(host: Devhost, accounts: list[str], expected: int) -> None:
    """Wait until the consumer has recorded ``expected`` events of ``accounts``."""
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    while (found := applied_count(host.app, accounts)) < expected:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{found} of {expected} events applied within {APPLY_TIMEOUT_S} s;"
                f" queue: {queue_state(host.app)}; devhost log:\n{host.log()}"
            )
        time.sleep(0.1)
    assert found == expected


def queue_state(app: App) -> dict[str, Any]:
    """What is left between intake and the consumer, for a failure message."""
    return {
        "messages": query(
            app,
            "SELECT state, delivery_count, locked_until > now(), count(*)"
            " FROM local_broker.messages WHERE queue = 'stripe-events' GROUP BY 1, 2, 3",
        ),
        "sessions": query(
            app,
            "SELECT session_id, locked_until > now() FROM local_broker.sessions"
            " WHERE queue = 'stripe-events'",
        ),
        "unsent": query(
            app,
            "SELECT message_id, attempts, last_error, next_attempt_at FROM outbox"
            " WHERE sent_at IS NULL LIMIT 5",
        ),
    }


def trial_balance(app: App, books: str) -> Balances:
    """The trial balance over HTTP as {(account code, currency): minor units}, zeros left out;
    each decimal string is checked against its minor units on the way."""
    status, body = app.call("GET", f"/api/clients/{books}/trial-balance")
    assert status == 200, body
    found: Balances = {}
    for line in body["lines"]:
        places = len(line["balance"].partition(".")[2])
        assert int(line["balance"].replace(".", "")) == line["balance_minor"], line
        assert places == {"JPY": 0, "KWD": 3}.get(line["currency"], 2), line
        if line["balance_minor"]:
            found[(line["code"], line["currency"])] = line["balance_minor"]
    return found


def assert_sums_to_zero(balances: Balances) -> None:
    for currency in {c for _, c in balances}:
        assert sum(v for (_, c), v in balances.items() if c == currency) == 0, currency


def mirror(app: App, table: str, books: str) -> dict[str, tuple[Any, ...]]:
    """{stripe id: (status, snapshot event)} of one mirror table."""
    found = query(
        app,
        f"SELECT stripe_id, status, snapshot_event FROM {table} WHERE books_client_id = %s",
        uuid.UUID(books),
    )
    return {row[0]: tuple(row[1:]) for row in found}


def entry_count(app: App, books: str) -> int:
    [(found,)] = query(
        app, "SELECT count(*) FROM journal_entries WHERE client_id = %s", uuid.UUID(books)
    )
    return int(found)


def assert_queue_drained(app: App) -> None:
    """Nothing left on ``stripe-events``: no message waiting, none dead-lettered."""
    status, body = app.call("GET", "/api/ops/queues/stripe-events/dead-letters", key=MASTER_KEY)
    assert (status, body) == (200, {"dead_letters": []})
    assert query(
        app, "SELECT count(*) FROM local_broker.messages WHERE queue = 'stripe-events'"
    ) == [(0,)]


class Reference:
    """A stream applied once, in order, straight through ``billing.apply_event`` into fresh
    books in the test run's own database: what the host's ledger must come to."""

    def __init__(self, firm: uuid.UUID, events: list[dict[str, Any]]) -> None:
        account = new_account()
        self.books = billing.link_stripe_account(firm, account)
        for event in events:
            billing.apply_event({**copy.deepcopy(event), "account": account})

    def balances(self) -> Balances:
        return {
            (line.code, line.currency): line.balance_minor
            for line in ledger.trial_balance(self.books)
            if line.balance_minor
        }

    def mirror(self, database_url: str, table: str) -> dict[str, tuple[Any, ...]]:
        with psycopg.connect(database_url) as conn:
            found = conn.execute(
                f"SELECT stripe_id, status, snapshot_event FROM {table}"
                " WHERE books_client_id = %s",
                (self.books,),
            ).fetchall()
        return {row[0]: tuple(row[1:]) for row in found}

    def entries(self, database_url: str) -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM journal_entries WHERE client_id = %s", (self.books,)
            ).fetchone()
        assert row is not None
        return int(row[0])


# -- The ops endpoints ---------------------------------------------------------------------------


def test_linking_a_stripe_account_over_http(app: App):
    account = new_account()
    status, firm = app.call("POST", "/api/ops/clients", {"name": "Linking firm"}, key=MASTER_KEY)
    assert status == 201
    body = {"firm_id": firm["firm_id"], "stripe_account_id": account}

    first = app.call("POST", "/api/ops/stripe-accounts", body, key=MASTER_KEY)
    again = app.call("POST", "/api/ops/stripe-accounts", body, key=MASTER_KEY)
    other = link(app, new_account())
    [(other_firm,)] = query(app, "SELECT firm_id FROM clients WHERE id = %s", uuid.UUID(other))
    taken = app.call(
        "POST",
        "/api/ops/stripe-accounts",
        {"firm_id": str(other_firm), "stripe_account_id": account},
        key=MASTER_KEY,
    )

    assert first[0] == 201 and first[1]["created"] is True
    assert again == (200, {**first[1], "created": False})
    assert taken[0] == 409
    assert taken[1]["detail"] == f"Stripe account {account} is linked to another firm"
    # The books start with the billing chart and nothing posted.
    assert trial_balance(app, first[1]["books_client_id"]) == {}


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"stripe_account_id": "acct_1"}, 400, "field 'firm_id' is required and must be text"),
        (
            {"firm_id": str(uuid.UUID(int=1))},
            400,
            "field 'stripe_account_id' is required and must be text",
        ),
        (
            {"firm_id": str(uuid.UUID(int=1)), "stripe_account_id": "cus_1"},
            400,
            "field 'stripe_account_id' must be acct_..., not 'cus_1'",
        ),
        (
            {"firm_id": str(uuid.UUID(int=1)), "stripe_account_id": "acct_1"},
            404,
            f"unknown firm {uuid.UUID(int=1)}",
        ),
        ({"firm_id": "firm-1", "stripe_account_id": "acct_1"}, 404, "firm_id 'firm-1' not found"),
    ],
)
def test_linking_refuses_bad_input_naming_the_field(
    app: App, body: dict[str, str], status: int, detail: str
):
    answer = app.call("POST", "/api/ops/stripe-accounts", body, key=MASTER_KEY)
    assert (answer[0], answer[1]["detail"]) == (status, detail)


def test_linking_needs_the_admin_key(app: App):
    body = {"firm_id": str(uuid.UUID(int=1)), "stripe_account_id": "acct_1"}
    assert app.call("POST", "/api/ops/stripe-accounts", body)[0] == 401


def test_trial_balance_of_an_unknown_client_is_404(app: App):
    client = uuid.UUID(int=7)
    status, body = app.call("GET", f"/api/clients/{client}/trial-balance")
    assert (status, body["detail"]) == (404, f"unknown client {client}")


# -- The corpus, end to end ----------------------------------------------------------------------


def test_every_corpus_event_over_http_gives_the_service_level_books(host: Devhost):
    app = host.app
    # Each file in books of its own, as the service-level test applies each to fresh books.
    sent: dict[str, tuple[str, str, str]] = {}
    for name in sorted(CORPUS_EXPECTED):
        account = new_account()
        books = link(app, account)
        event_id = f"evt_{uuid.uuid4().hex}"
        post_event(app, {**se.load(name), "id": event_id, "account": account})
        sent[name] = (account, books, event_id)

    wait_until_applied(host, [a for a, _, _ in sent.values()], len(sent))

    for name, (outcome, row, expected) in CORPUS_EXPECTED.items():
        account, books, event_id = sent[name]
        assert query(
            app,
            "SELECT outcome FROM stripe_events WHERE stripe_account_id = %s AND event_id = %s",
            account,
            event_id,
        ) == [(outcome,)], name
        if row is not None:
            table, stripe_id, status = row
            assert mirror(app, table, books)[stripe_id] == (status, event_id), name
        balances = trial_balance(app, books)
        assert balances == expected, name
        assert_sums_to_zero(balances)
    assert_queue_drained(app)


def test_the_same_event_five_times_is_one_inbox_row_one_event_one_posting(host: Devhost):
    app = host.app
    books = link(app, OWN_ACCOUNT)
    # No ``account`` field: the event belongs to STRIPE_ACCOUNT_ID.
    event = {**se.load("srm__charge.succeeded.json"), "id": f"evt_{uuid.uuid4().hex}"}
    event.pop("account", None)

    answers = [post_event(app, event) for _ in range(5)]
    wait_until_applied(host, [OWN_ACCOUNT], 1)

    assert [a["duplicate"] for a in answers] == [False, True, True, True, True]
    assert query(app, "SELECT count(*) FROM inbox WHERE event_id = %s", event["id"]) == [(1,)]
    assert query(app, "SELECT postings FROM stripe_events WHERE event_id = %s", event["id"]) == [
        (1,)
    ]
    assert entry_count(app, books) == 1
    assert trial_balance(app, books) == {("1200", "USD"): 2000, ("4000", "USD"): -2000}
    assert_queue_drained(app)


# -- Streams -------------------------------------------------------------------------------------


def test_shuffled_stream_with_duplicates_sent_concurrently_gives_the_in_order_books(
    host: Devhost, services: dict[str, str], firm: uuid.UUID
):
    app = host.app
    account = new_account()
    books = link(app, account)
    stream = generated(account)
    assert len(stream) == 1000
    assert len({e["data"]["object"].get("customer") for e in stream} - {None}) == 50
    reference = Reference(firm, stream)
    rng = random.Random(23)
    deliveries = stream + rng.sample(stream, 200)
    rng.shuffle(deliveries)

    answers = post_all(app, deliveries)
    wait_until_applied(host, [account], 1000)

    assert sum(a["duplicate"] for a in answers) == 200
    [(inbox,)] = query(
        app,
        "SELECT count(*) FROM inbox WHERE source = 'stripe' AND event_id = ANY(%s)",
        [e["id"] for e in stream],
    )
    assert inbox == 1000
    expected = reference.balances()
    assert trial_balance(app, books) == expected
    assert_sums_to_zero(expected)
    assert entry_count(app, books) == reference.entries(services["DATABASE_URL"])
    for table in MIRRORS:
        assert mirror(app, table, books) == reference.mirror(services["DATABASE_URL"], table)
    assert_queue_drained(app)


def test_consumer_killed_mid_stream_ends_with_every_event_applied_once(
    host: Devhost, services: dict[str, str], firm: uuid.UUID
):
    app = host.app
    account = new_account()
    books = link(app, account)
    stream = generated(account, customers=20, events=400, seed=41)
    reference = Reference(firm, stream)

    # Events go in one at a time (so that each request hands its own message on; a
    # concurrent request holding an older message of the same session would leave it to the
    # outbox relay), from a thread, while this one waits for the consumer to hold a message
    # with some events applied, and kills the host then: mid-stream, whatever the speeds.
    answered: list[str] = []

    def feed() -> None:
        for event in stream:
            try:
                post_event(app, event)
            except (OSError, HTTPException, AssertionError):  # the host is gone
                return
            answered.append(event["id"])

    feeder = threading.Thread(target=feed)
    feeder.start()
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    while not (in_flight(app) and applied_count(app, [account]) >= 20):
        assert len(answered) < len(stream), "every event was sent before the consumer started"
        assert time.monotonic() < deadline, host.log()
        time.sleep(0.01)
    host.kill()
    feeder.join()
    applied_before_kill = applied_count(app, [account])
    assert 0 < applied_before_kill < len(stream)

    # The new host takes over the same Postgres and queue; messages the dead one held come
    # back when their 60 s locks expire, and are applied as duplicates if they were applied.
    host.start()
    # What the dead host did not answer is sent again, as Stripe would retry it.
    post_all(app, [event for event in stream if event["id"] not in set(answered)], threads=1)
    wait_until_applied(host, [account], len(stream))

    assert trial_balance(app, books) == reference.balances()
    assert entry_count(app, books) == reference.entries(services["DATABASE_URL"])
    for table in MIRRORS:
        assert mirror(app, table, books) == reference.mirror(services["DATABASE_URL"], table)
    [(postings, posted_keys)] = query(
        app,
        "SELECT (SELECT coalesce(sum(postings), 0) FROM stripe_events"
        "        WHERE stripe_account_id = %s),"
        " (SELECT count(*) FROM journal_entries WHERE client_id = %s)",
        account,
        uuid.UUID(books),
    )
    assert postings == posted_keys
    assert_queue_drained(app)


# -- QuickBooks intake ---------------------------------------------------------------------------

QBO_FILES = {
    "qbodotnet__webhook_legacy_vendor_customer.json": [
        "1269959970:Vendor:40:Update:2016-10-05T03:09:04.000Z",
        "1269959970:Customer:43:Create:2016-10-05T03:07:04.000Z",
    ],
    "qbojava__webhook_legacy_customer_create.json": [
        "1185883450:Customer:1:Create:2015-10-05T14:42:19-0700",
    ],
    "qbodotnet__webhook_cloudevents_class_created.json": [
        "310687:Class:1234:Create:2025-10-07T19:59:07.034359333Z",
    ],
}


@pytest.mark.parametrize("name", sorted(QBO_FILES))
def test_quickbooks_notifications_reach_their_queue(app: App, name: str):
    body = (CORPUS / "qbo" / name).read_bytes()
    headers = {"intuit-signature": intuit_signature(body, QUICKBOOKS_TOKEN)}

    status, answer = app.call("POST", "/api/webhooks/quickbooks", body, key=None, headers=headers)

    assert (status, answer) == (200, {"received": True, "duplicate": False})
    expected = QBO_FILES[name]
    # The QuickBooks change consumer takes them off the queue at once (these realms are not
    # connected, so it skips them): what shows they reached the queue is the outbox.
    found = query(
        app,
        "SELECT message_id, session_id, sent_at IS NOT NULL, body FROM outbox"
        " WHERE queue = 'quickbooks-events' AND message_id = ANY(%s) ORDER BY id",
        expected,
    )
    assert [(m, s, sent) for m, s, sent, _ in found] == [
        (m, m.partition(":")[0], True) for m in expected
    ]
    dead = query(
        app,
        "SELECT message_id FROM local_broker.messages"
        " WHERE queue = 'quickbooks-events' AND message_id = ANY(%s) AND state = 'dead'",
        expected,
    )
    assert dead == []
    for message_id, _, _, raw in found:
        assert json.loads(bytes(raw))["entity"] == message_id.split(":")[1]
