"""Portal API benchmark: general-ledger pages, trial balances and P&L statements at 50
concurrent users through ``python -m devhost run``, against the same SQL sent straight to
Postgres (the baseline), on books of 100 clients and 1,000,000 journal lines.

The baseline is the API's own statements (imported from shared/services/portal.py, with the
parameters the API binds), run as the API's role in a transaction that first makes the same
row-level security settings, from a pool as large as the API's, at the same concurrency.
What it leaves out is the API itself: HTTP, the bearer token, the user's sign-in and rate
limit, the client check and the JSON.

Prints p50/p99 latency and requests per second per view, the ratio to the baseline, the cost
of the shared rate limit (the sign-in statement with and without taking a token), and the
targets: p99 under 100 ms for a GL page and at least half the baseline's rate.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.webhooks_bench import percentile, start_devhost, stop_devhost
from shared.services import portal as views_sql

REPO = Path(__file__).resolve().parents[1]
GL_P99_TARGET_MS = 100.0
RATE_SHARE_TARGET = 0.5
RATE_PER_MIN = 1_000_000
FIRST_DAY = dt.date(2025, 1, 1)
DAYS = 700

ALL_TYPES = list(views_sql.ALL_TYPES)
SCOPE_SQL = (
    "SELECT set_config('app.firm_id', %s, true), set_config('app.client_id', %s, true),"
    " set_config('app.user_id', %s, true)"
)
SIGN_IN_SQL = "SELECT id, retry_after_s FROM portal_sign_in(%s, %s)"


@dataclass(frozen=True)
class Books:
    firm: uuid.UUID
    clients: list[uuid.UUID]
    users: list[tuple[uuid.UUID, str]]


def seed(database_url: str, clients_n: int, lines: int, users_n: int) -> Books:
    """``clients_n`` clients with the starter chart, ``lines`` journal lines spread evenly
    (two a day-spread entry, by INSERT ... SELECT), and ``users_n`` advisors of the firm."""
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
        users = conn.execute(
            "INSERT INTO users (firm_id, user_name, role)"
            " SELECT %s, 'bench-' || n || '@example.test', 'advisor'"
            " FROM generate_series(1, %s) AS n RETURNING id, user_name",
            (firm, users_n),
        ).fetchall()
        conn.commit()
        conn.execute("ANALYZE")
    return Books(firm, ids, [(row[0], row[1]) for row in users])


Request = Callable[[int, int], Awaitable[None]]


async def measure(requests: int, concurrency: int, send: Request) -> dict[str, float]:
    """``requests`` sends from ``concurrency`` users at once (user w sends as itself), after
    one warm-up send per user; latency percentiles and the rate."""
    latencies: list[float] = []
    next_index = 0

    async def worker(user: int) -> None:
        nonlocal next_index
        while next_index < requests:
            n = next_index
            next_index += 1
            started = time.perf_counter()
            await send(n, user)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(send(user, user) for user in range(concurrency)))
    started = time.perf_counter()
    await asyncio.gather(*(worker(user) for user in range(concurrency)))
    seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "rps": len(ordered) / seconds,
    }


View = Callable[[int], tuple[str, dict[str, str], uuid.UUID, str, Any]]


def views(clients: list[uuid.UUID]) -> dict[str, View]:
    """Per view: the n-th request as (API path, query, client, SQL, the parameters the API
    binds to that SQL for that query)."""
    rng = random.Random(7)
    days = [FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS)) for _ in range(997)]

    def gl(n: int) -> tuple[str, dict[str, str], uuid.UUID, str, Any]:
        client, day = clients[n % len(clients)], days[n % len(days)]
        query = {"limit": "100", "from": day.isoformat()}
        params = {
            "client": client,
            "day": dt.date.min,
            "entry": 0,
            "line": 0,
            "lo": day,
            "hi": dt.date.max,
            "limit": 101,
        }
        path = f"v1/clients/{client}/general-ledger"
        return path, query, client, views_sql.GENERAL_LEDGER_SQL, params

    def trial(n: int) -> tuple[str, dict[str, str], uuid.UUID, str, Any]:
        client = clients[n % len(clients)]
        end = dt.date(2026, 12, 31)
        params = (client, ALL_TYPES, dt.date.min, end)
        path = f"v1/clients/{client}/trial-balance"
        return path, {"as_of": end.isoformat()}, client, views_sql.BALANCES_SQL, params

    def pnl(n: int) -> tuple[str, dict[str, str], uuid.UUID, str, Any]:
        client = clients[n % len(clients)]
        lo, hi = dt.date(2025, 1, 1), dt.date(2025, 12, 31)
        query = {"from": lo.isoformat(), "to": hi.isoformat()}
        params = (client, ["income", "expense"], lo, hi)
        path = f"v1/clients/{client}/profit-and-loss"
        return path, query, client, views_sql.BALANCES_SQL, params

    return {"GL page": gl, "trial balance": trial, "P&L": pnl}


async def _configure(conn: Any) -> None:
    # As shared/adapters/postgres.py configures the API's connections.
    await conn.execute("SET statement_timeout = 30000")
    await conn.execute("SET TIME ZONE 'UTC'")


async def run_views(
    bases: list[str],
    tokens: list[str],
    api_url: str,
    books: Books,
    options: argparse.Namespace,
) -> dict[str, dict[str, dict[str, float]]]:
    import aiohttp
    from psycopg_pool import AsyncConnectionPool

    results: dict[str, dict[str, dict[str, float]]] = {}
    connector = aiohttp.TCPConnector(limit=options.users)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        AsyncConnectionPool(
            api_url,
            min_size=0,
            max_size=options.users,
            kwargs={"autocommit": True},
            configure=_configure,
        ) as pool,
    ):
        for name, make in views(books.clients).items():

            async def api(n: int, user: int, make: View = make) -> None:
                path, query, _, _, _ = make(n)
                headers = {"Authorization": f"Bearer {tokens[user]}"}
                url = f"{bases[user % len(bases)]}/{path}"
                async with session.get(url, params=query, headers=headers) as got:
                    await got.read()
                    if got.status != 200:
                        raise SystemExit(f"{path} answered {got.status}")

            async def bare(n: int, user: int, make: View = make) -> None:
                _, _, client, sql, params = make(n)
                scope = (str(books.firm), str(client), str(books.users[user][0]))
                async with pool.connection() as conn, conn.transaction():
                    await conn.execute(SCOPE_SQL, scope)
                    await (await conn.execute(sql, params)).fetchall()

            results[name] = {
                "baseline": await measure(options.requests, options.users, bare),
                "api": await measure(options.requests, options.users, api),
            }

        # The host's own share: its cheapest route, through the same client and connections.
        async def live(n: int, user: int) -> None:
            async with session.get(f"{bases[user % len(bases)]}/health/live") as got:
                await got.read()

        ceiling = await measure(options.requests, options.users, live)
        results["host ceiling"] = {"baseline": ceiling, "api": ceiling}

        # The shared rate limit's cost: the sign-in statement with and without the bucket.
        async def sign_in(per_minute: int | None, user: int) -> None:
            async with pool.connection() as conn:
                row = await (
                    await conn.execute(SIGN_IN_SQL, (books.users[user][1], per_minute))
                ).fetchone()
                assert row is not None and row[1] == 0

        results["sign-in"] = {
            "baseline": await measure(
                options.requests, options.users, lambda n, user: sign_in(None, user)
            ),
            "api": await measure(
                options.requests, options.users, lambda n, user: sign_in(RATE_PER_MIN, user)
            ),
        }
    return results


def report(results: dict[str, dict[str, dict[str, float]]], options: argparse.Namespace) -> None:
    print(
        f"portal benchmark: {options.clients} clients, {options.lines:,} journal lines,"
        f" {options.users} concurrent users, {options.requests} requests per run,"
        f" {options.instances} app instance(s)"
    )
    print(f"{'view':<15}{'run':<10}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}{'vs bare SQL':>13}")
    for name, runs in results.items():
        base_rps = runs["baseline"]["rps"]
        for run, found in runs.items():
            if name == "host ceiling" and run == "api":
                continue
            labels = {"sign-in": {"baseline": "no limit", "api": "limit"}}
            labels["host ceiling"] = {"baseline": "live"}
            label = labels.get(name, {}).get(run, run)
            ratio = found["rps"] / base_rps if base_rps else float("nan")
            print(
                f"{name:<15}{label:<10}{found['p50_ms']:>10.1f}{found['p99_ms']:>10.1f}"
                f"{found['rps']:>10.1f}{ratio:>12.2f}x"
            )
    sign_in = results["sign-in"]
    extra_ms = 1000 / sign_in["api"]["rps"] - 1000 / sign_in["baseline"]["rps"]
    print(
        f"shared rate limit: the sign-in statement at {options.users} at once costs"
        f" {extra_ms:+.3f} ms of throughput time a request with the bucket than without"
    )
    gl = results["GL page"]["api"]
    print(f"target: GL page p99 < {GL_P99_TARGET_MS:.0f} ms: {gl['p99_ms']:.1f} ms")
    for name in ("GL page", "trial balance", "P&L"):
        runs = results[name]
        share = runs["api"]["rps"] / runs["baseline"]["rps"]
        print(f"target: {name} rate >= {RATE_SHARE_TARGET:.0%} of bare SQL: {share:.0%}")
    print("load average (1, 5, 15 min) at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="devhost processes on the one database, as app instances (user n uses n %% N)",
    )
    options = parser.parse_args()

    from devhost import services as local

    work = Path(tempfile.mkdtemp(prefix="advisoros-bench-portal-"))
    try:
        with local.start_postgres(work / "pg", port=local.free_port()) as pg:
            local.apply_migrations(pg.url, REPO / "migrations")
            env = {
                **os.environ,
                "DATABASE_URL": pg.url,
                # Each instance gets an Azurite of its own below; this one is never started.
                "AzureWebJobsStorage": local.azurite_connection_string(
                    local.free_port(), local.free_port()
                ),
                "APP_ENVIRONMENT": "test",
                "PORTAL_LOCAL_ISSUER": "true",
                "PORTAL_LOCAL_KEY_DIR": str(work / "issuer"),
                # Never reached, but taken on every request as in production.
                "PORTAL_RATE_LIMIT_PER_MIN": str(RATE_PER_MIN),
                # All instances together hold as many connections as the baseline's pool.
                "DB_POOL_MAX_SIZE": str(max(1, options.users // options.instances)),
            }
            os.environ.update(env)
            started = time.perf_counter()
            books = seed(pg.url, options.clients, options.lines, options.users)
            print(f"seeded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            from shared.adapters import postgres
            from shared.services import identity

            tokens = [identity.issue_local_token(name) for _, name in books.users]
            hosts = []
            try:
                for n in range(options.instances):
                    (work / f"devhost-{n}").mkdir()
                    own = {
                        **env,
                        "AzureWebJobsStorage": local.azurite_connection_string(
                            local.free_port(), local.free_port()
                        ),
                        "DEVHOST_DATA_DIR": str(work / f"devhost-{n}"),
                    }
                    port = local.free_port()
                    hosts.append((start_devhost(work / f"devhost-{n}", own, port), port))
                bases = [f"http://127.0.0.1:{port}/api" for _, port in hosts]
                api_url = postgres.api_database_url()
                results = asyncio.run(run_views(bases, tokens, api_url, books, options))
            finally:
                for proc, _ in hosts:
                    stop_devhost(proc)
            report(results, options)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
