"""Portal API benchmark: general-ledger pages, trial balances and P&L statements at 50
concurrent users through ``python -m devhost run``, against the same SQL sent straight to
Postgres (the baseline), on books of 100 clients and 1,000,000 journal lines.

Prints p50/p99 latency and requests per second per view, the ratio to the baseline, and
the targets: p99 under 100 ms for a GL page and at least half the baseline's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.webhooks_bench import percentile, start_devhost, stop_devhost

REPO = Path(__file__).resolve().parents[1]
GL_P99_TARGET_MS = 100.0
RATE_SHARE_TARGET = 0.5
FIRST_DAY = dt.date(2025, 1, 1)
DAYS = 700

# The views' SQL as the API sends it (shared/services/portal.py), run bare for the baseline.
GL_SQL = """
    SELECT l.id, e.id, e.booked_on, e.reference, e.memo, e.source, a.code, a.name,
           l.currency, l.amount_minor
    FROM journal_entries e
    JOIN journal_lines l ON l.entry_id = e.id
    JOIN accounts a ON a.id = l.account_id
    WHERE e.client_id = %s AND (e.booked_on, e.id) >= (%s, 0)
      AND (e.booked_on, e.id, l.id) > (%s, 0, 0)
    ORDER BY e.booked_on, e.id, l.id LIMIT 101
"""
BALANCES_SQL = """
    SELECT a.code, a.name, a.type, l.currency, sum(l.amount_minor)
    FROM accounts a
    JOIN journal_lines l ON l.account_id = a.id
    JOIN journal_entries e ON e.id = l.entry_id
    WHERE a.client_id = %s AND a.type = ANY(%s) AND e.booked_on >= %s AND e.booked_on <= %s
    GROUP BY a.code, a.name, a.type, l.currency
    HAVING sum(l.amount_minor) <> 0
    ORDER BY a.code, l.currency
"""
ALL_TYPES = ["asset", "liability", "equity", "income", "expense"]


def seed(database_url: str, clients_n: int, lines: int) -> list[uuid.UUID]:
    """100 clients with the starter chart, and ``lines`` journal lines spread evenly."""
    import psycopg

    from shared.services import clients

    firm = clients.create_firm("Benchmark firm")
    ids = [clients.create_client(firm, f"Client {n:03}") for n in range(clients_n)]
    per_client = lines // 2 // clients_n
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO journal_entries (client_id, booked_on, memo, source)"
            " SELECT c.id, %s::date + (g %% %s), 'bench', 'manual'"
            " FROM unnest(%s::uuid[]) AS c(id), generate_series(1, %s) AS g",
            (FIRST_DAY, DAYS, ids, per_client),
        )
        # Cash against revenue, or an expense against cash, two lines an entry.
        conn.execute(
            """
            INSERT INTO journal_lines (entry_id, client_id, account_id, amount_minor, currency)
            SELECT e.id, e.client_id, a.id,
                   CASE WHEN a.code = '1000' THEN s.amount ELSE -s.amount END, 'USD'
            FROM journal_entries e
            CROSS JOIN LATERAL (
                SELECT CASE WHEN e.id % 3 = 0 THEN -(e.id % 9000 + 100)
                            ELSE e.id % 20000 + 500 END AS amount,
                       CASE WHEN e.id % 3 = 0 THEN '6000' ELSE '4000' END AS other
            ) s
            JOIN accounts a ON a.client_id = e.client_id AND a.code IN ('1000', s.other)
            WHERE e.memo = 'bench'
            """
        )
        conn.execute(
            "INSERT INTO users (firm_id, user_name, role)"
            " VALUES (%s, 'bench@example.test', 'advisor')",
            (firm,),
        )
        conn.commit()
        conn.execute("ANALYZE")
    return ids


Request = Callable[[int], Awaitable[None]]


async def measure(requests: int, concurrency: int, send: Request) -> dict[str, float]:
    latencies: list[float] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < requests:
            n = next_index
            next_index += 1
            started = time.perf_counter()
            await send(n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "rps": len(ordered) / seconds,
    }


def views(
    clients: list[uuid.UUID],
) -> dict[str, Callable[[int], tuple[str, dict[str, str], str, tuple[Any, ...]]]]:
    """Per view: the n-th request as (API path, query, SQL, SQL parameters)."""
    rng = random.Random(7)
    days = [FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS)) for _ in range(997)]

    def gl(n: int) -> tuple[str, dict[str, str], str, tuple[Any, ...]]:
        client, day = clients[n % len(clients)], days[n % len(days)]
        query = {"limit": "100", "from": day.isoformat()}
        return f"v1/clients/{client}/general-ledger", query, GL_SQL, (client, day, day)

    def trial(n: int) -> tuple[str, dict[str, str], str, tuple[Any, ...]]:
        client = clients[n % len(clients)]
        end = dt.date(2026, 12, 31)
        params = (client, ALL_TYPES, dt.date.min, end)
        return (
            f"v1/clients/{client}/trial-balance",
            {"as_of": end.isoformat()},
            BALANCES_SQL,
            params,
        )

    def pnl(n: int) -> tuple[str, dict[str, str], str, tuple[Any, ...]]:
        client = clients[n % len(clients)]
        lo, hi = dt.date(2025, 1, 1), dt.date(2025, 12, 31)
        query = {"from": lo.isoformat(), "to": hi.isoformat()}
        params = (client, ["income", "expense"], lo, hi)
        return f"v1/clients/{client}/profit-and-loss", query, BALANCES_SQL, params

    return {"GL page": gl, "trial balance": trial, "P&L": pnl}


async def run_views(
    base: str, token: str, database_url: str, clients: list[uuid.UUID], options: argparse.Namespace
) -> dict[str, dict[str, dict[str, float]]]:
    import aiohttp
    from psycopg_pool import AsyncConnectionPool

    results: dict[str, dict[str, dict[str, float]]] = {}
    connector = aiohttp.TCPConnector(limit=options.users)
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(connector=connector, headers=headers) as session,
        AsyncConnectionPool(database_url, min_size=options.users, max_size=options.users) as pool,
    ):
        for name, make in views(clients).items():

            async def api(n: int, make: Any = make) -> None:
                path, query, _, _ = make(n)
                async with session.get(f"{base}/{path}", params=query) as answer:
                    await answer.read()
                    if answer.status != 200:
                        raise SystemExit(f"{path} answered {answer.status}")

            async def bare(n: int, make: Any = make) -> None:
                _, _, sql, params = make(n)
                async with pool.connection() as conn:
                    await (await conn.execute(sql, params)).fetchall()

            results[name] = {
                "baseline": await measure(options.requests, options.users, bare),
                "api": await measure(options.requests, options.users, api),
            }
    return results


def report(results: dict[str, dict[str, dict[str, float]]], options: argparse.Namespace) -> None:
    print(
        f"portal benchmark: {options.clients} clients, {options.lines:,} journal lines,"
        f" {options.users} concurrent users, {options.requests} requests per run"
    )
    print(f"{'view':<15}{'run':<10}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}{'vs bare SQL':>13}")
    for name, runs in results.items():
        base_rps = runs["baseline"]["rps"]
        for run, found in runs.items():
            ratio = found["rps"] / base_rps if base_rps else float("nan")
            print(
                f"{name:<15}{run:<10}{found['p50_ms']:>10.1f}{found['p99_ms']:>10.1f}"
                f"{found['rps']:>10.1f}{ratio:>12.2f}x"
            )
    gl = results["GL page"]["api"]
    print(f"target: GL page p99 < {GL_P99_TARGET_MS:.0f} ms: {gl['p99_ms']:.1f} ms")
    for name, runs in results.items():
        share = runs["api"]["rps"] / runs["baseline"]["rps"]
        print(f"target: {name} rate >= {RATE_SHARE_TARGET:.0%} of bare SQL: {share:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2_000)
    options = parser.parse_args()

    from devhost import services as local

    work = Path(tempfile.mkdtemp(prefix="advisoros-bench-portal-"))
    try:
        storage = local.azurite_connection_string(local.free_port(), local.free_port())
        with local.start_postgres(work / "pg", port=local.free_port()) as pg:
            local.apply_migrations(pg.url, REPO / "migrations")
            env = {
                **os.environ,
                "DATABASE_URL": pg.url,
                "AzureWebJobsStorage": storage,
                "DEVHOST_DATA_DIR": str(work / "devhost"),
                "APP_ENVIRONMENT": "test",
                "PORTAL_LOCAL_ISSUER": "true",
                "PORTAL_LOCAL_KEY_DIR": str(work / "issuer"),
                "PORTAL_RATE_LIMIT_PER_MIN": "1000000",
                "DB_POOL_MAX_SIZE": str(options.users),
            }
            os.environ.update(env)
            started = time.perf_counter()
            clients = seed(pg.url, options.clients, options.lines)
            print(f"seeded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            from shared.services import identity

            token = identity.issue_local_token("bench@example.test")
            port = local.free_port()
            devhost = start_devhost(work, env, port)
            try:
                base = f"http://127.0.0.1:{port}/api"
                results = asyncio.run(run_views(base, token, pg.url, clients, options))
            finally:
                stop_devhost(devhost)
            report(results, options)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
