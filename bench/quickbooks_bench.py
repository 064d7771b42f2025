"""QuickBooks push benchmark: journal entries and invoices sent to the fake QuickBooks API,
which enforces Intuit's limits (500 requests a minute and 10 at once per realm, its clock run
fast), by the batched push, beside the same records sent one request each (the baseline),
in one run.

    python -m bench.quickbooks_bench [--entries 10000] [--invoices 2000] [--clock-speed 60]

Figures are counts and ratios against the in-run baseline: the machine is shared, so only
the ratios and the counts (requests, 429s, duplicates, missing) mean anything elsewhere.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_REQUEST_RATIO = 10.0
BASELINE_THREADS = 10
CUSTOMERS = 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--invoices", type=int, default=2_000)
    parser.add_argument("--clock-speed", type=float, default=60.0)
    options = parser.parse_args()

    from devhost import services as local

    with (
        tempfile.TemporaryDirectory(prefix="qbo-bench-") as root,
        local.start_postgres(Path(root) / "pg", port=free_port(), fsync=False) as pg,
    ):
        local.apply_migrations(pg.url, REPO / "migrations")
        os.environ.update(
            {"DATABASE_URL": pg.url, "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
        )
        run(options, Path(root))


def run(options: argparse.Namespace, root: Path) -> None:
    from shared.services import clients
    from tests.quickbooks_fake import FakeQuickBooks
    from tests.quickbooks_support import (
        add_customers_and_invoices,
        configured,
        connect,
        post_entries,
        settings_for,
    )

    fake = FakeQuickBooks(requests_per_min=500, max_concurrent=10, clock_speed=options.clock_speed)
    with fake:
        env = settings_for(fake, root)
        env.update(
            QUICKBOOKS_RATE_WINDOW_S=str(60.0 / options.clock_speed),
            QUICKBOOKS_TIMEOUT_S="30",
            QUICKBOOKS_BACKOFF_FIRST_S="0.05",
            QUICKBOOKS_MAX_ATTEMPTS="20",
        )
        with configured(env):
            firm = clients.create_firm("Bench firm")
            results = {}
            for label, realm in (
                ("batched", "4620000000000001"),
                ("baseline", "4620000000000002"),
            ):
                client_id = clients.create_client(firm, f"Bench {label}", base_currency="USD")
                connect(fake, client_id, realm)
                print(
                    f"{label}: preparing {options.entries} entries, {options.invoices} invoices",
                    flush=True,
                )
                entries = [
                    [("6000", 100 + n % 9000), ("1000", -(100 + n % 9000))]
                    for n in range(options.entries)
                ]
                post_entries(client_id, entries)
                add_customers_and_invoices(client_id, CUSTOMERS, options.invoices)
                before_429 = fake.throttled_by_limit + fake.throttled_injected
                started = time.perf_counter()
                push = push_batched if label == "batched" else push_one_each
                sent = push(client_id)
                elapsed = time.perf_counter() - started
                results[label] = {
                    "records": sent,
                    "requests": fake.api_requests(realm),
                    "throttled": fake.throttled_by_limit + fake.throttled_injected - before_429,
                    "elapsed_s": elapsed,
                    "check": check(fake, realm, options, client_id),
                }
            report(results, options)


def push_batched(client_id: uuid.UUID) -> int:
    from shared.services import quickbooks_sync

    outcome = quickbooks_sync.push_client(client_id)
    return outcome.synced


def push_one_each(client_id: uuid.UUID) -> int:
    """The baseline: every record its own create request, ten at a time, through the same
    per-realm budget (so it, too, is paced to QuickBooks' limits)."""
    from shared.adapters.postgres import transaction
    from shared.services import quickbooks_connections as connections
    from shared.services import quickbooks_sync as sync

    sync.enqueue(client_id)
    connection = connections.connection_for_client(client_id)
    outcome = sync.PushOutcome()
    sync.auto_map_accounts(
        client_id,
        sync.ApiSession(connection, connections.api_for(connection), outcome, time.sleep),
    )
    sent = Counter[str]()
    lock = threading.Lock()
    for entity in sync.ENTITY_ORDER:
        with transaction() as conn:
            rows = [
                sync._Row(*r)
                for r in conn.execute(
                    "SELECT entity, local_key, request_id, qbo_id, sync_token, batch_id "
                    "FROM quickbooks_sync WHERE client_id = %s AND entity = %s "
                    "AND status = 'pending' ORDER BY local_key",
                    (client_id, entity),
                ).fetchall()
            ]
        queue = list(rows)
        threads = [
            threading.Thread(target=_send_each, args=(client_id, queue, lock, sent, outcome))
            for _ in range(BASELINE_THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return sum(sent.values())


def _send_each(
    client_id: uuid.UUID,
    queue: list[Any],
    lock: threading.Lock,
    sent: Counter[str],
    outcome: Any,
) -> None:
    from shared.adapters.postgres import transaction
    from shared.services import quickbooks_connections as connections
    from shared.services import quickbooks_sync as sync

    connection = connections.connection_for_client(client_id)
    session = sync.ApiSession(connection, connections.api_for(connection), outcome, time.sleep)
    while True:
        with lock:
            if not queue:
                return
            row = queue.pop()
        with transaction() as conn:
            body = sync._payload(conn, client_id, row)
        request_id = str(row.request_id)
        created = sync.call(session, lambda api: api.create(row.entity, body, request_id))  # noqa: B023 - called at once
        with transaction() as conn:
            sync._synced(conn, client_id, row, created)
        with lock:
            sent[row.entity] += 1


def check(
    fake: Any, realm: str, options: argparse.Namespace, client_id: uuid.UUID
) -> dict[str, int]:
    """Duplicates and missing records in the fake, against what was asked for."""
    notes = Counter(e["PrivateNote"].split(".")[0] for e in fake.all(realm, "JournalEntry"))
    invoices = Counter(i["PrivateNote"] for i in fake.all(realm, "Invoice"))
    customers = Counter(c["DisplayName"] for c in fake.all(realm, "Customer"))
    return {
        "duplicated": sum(
            n - 1 for c in (notes, invoices, customers) for n in c.values() if n > 1
        ),
        "missing": (options.entries - len(notes))
        + (options.invoices - len(invoices))
        + (CUSTOMERS - len(customers)),
    }


def report(results: dict[str, dict[str, Any]], options: argparse.Namespace) -> None:
    speed = options.clock_speed
    print(
        f"\nQuickBooks push: {options.entries} journal entries + {options.invoices} invoices "
        f"+ {CUSTOMERS} customers; fake limits 500 req/min, 10 concurrent; clock x{speed:g}"
    )
    header = f"{'run':<9} {'records':>8} {'requests':>9} {'req/record':>11} {'429s':>5} "
    print(
        header + f"{'records/min':>12} {'req per QBO min':>16} {'duplicated':>11} {'missing':>8}"
    )
    for label, r in results.items():
        per_min = r["records"] / (r["elapsed_s"] / 60.0)
        qbo_minutes = r["elapsed_s"] * speed / 60.0
        print(
            f"{label:<9} {r['records']:>8} {r['requests']:>9} "
            f"{r['requests'] / max(1, r['records']):>11.4f} {r['throttled']:>5} "
            f"{per_min:>12.0f} {r['requests'] / qbo_minutes:>16.0f} "
            f"{r['check']['duplicated']:>11} {r['check']['missing']:>8}"
        )
    print(
        "(records/min on the wall clock; requests per minute of the fake's fast clock, "
        "against its limit of 500)"
    )
    floor = {label: r["requests"] / 500.0 for label, r in results.items()}
    print(
        f"at QuickBooks' real 500 requests/min the requests alone need: batched "
        f"{floor['batched']:.1f} min, baseline {floor['baseline']:.1f} min"
    )
    ratio = results["baseline"]["requests"] / max(1, results["batched"]["requests"])
    faster = results["baseline"]["elapsed_s"] / max(1e-9, results["batched"]["elapsed_s"])
    ok = (
        ratio >= TARGET_REQUEST_RATIO
        and results["batched"]["throttled"] == 0
        and results["batched"]["check"] == {"duplicated": 0, "missing": 0}
    )
    print(f"\nrequests, baseline / batched: {ratio:.1f}x (target >= {TARGET_REQUEST_RATIO:g}x)")
    print(f"time, baseline / batched: {faster:.1f}x")
    print(f"429s caused by our own pacing (batched): {results['batched']['throttled']} (target 0)")
    print("targets met" if ok else "TARGETS MISSED")


if __name__ == "__main__":
    main()
