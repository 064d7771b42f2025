"""Webhook intake and billing benchmark: signed Stripe events sent to ``python -m devhost
run`` over HTTP, beside the same server answering its liveness probe (the ceiling), and the
billing consumer applying the same events from the local broker meanwhile, in one run.

    python -m bench.webhooks_bench [--events 20000] [--connections 50] [--rate 500]
        [--alone-events 10000]

The consumer is measured twice: while the intake runs (and in the drain after it), and
alone, on events queued while the host was stopped and applied after it starts again.

The load generator runs in its own process, so that it does not share the server's
interpreter. Figures are rates and ratios against the in-run ceiling: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SECRET = "whsec_bench_secret"
ACCOUNT = "acct_benchwebhooks01"
START_TIMEOUT_S = 90

# Targets from the webhook requirements, printed beside each figure.
TARGET_ACCEPTED_PER_S = 1_000.0
TARGET_CEILING_SHARE = 0.25
TARGET_P99_AT_RATE_MS = 50.0
TARGET_APPLIED_PER_S = 1_000.0
# The billing consumer's function, which --pause-consumer disables.
CONSUMER = "stripe_events_received"


# -- The load generator (its own process) -----------------------------------------------------


def signature(body: bytes, secret: str) -> str:
    """A ``Stripe-Signature`` header, made as Stripe documents it."""
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def percentile(sorted_values: list[float], share: float) -> float:
    """The nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(share * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def build_requests(options: argparse.Namespace) -> tuple[list[bytes], list[str | None]]:
    """Every request as the bytes sent on the wire, signed now (before the clock starts),
    and the event id each one carries (None for the ceiling's GET)."""
    url = urllib.parse.urlsplit(options.url)
    head = f"{options.method} {url.path}{'?' + url.query if url.query else ''} HTTP/1.1\r\n"
    head += f"Host: {url.netloc}\r\n"
    if not options.events_file:
        request = (head + "\r\n").encode()
        return [request] * options.count, [None] * options.count
    with open(options.events_file, encoding="utf-8") as lines:
        every = [json.loads(line).encode() for line in lines]
    bodies = every[options.start : options.start + options.count]
    requests, ids = [], []
    for body in bodies:
        headers = (
            f"Stripe-Signature: {signature(body, options.secret)}\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append((head + headers).encode() + body)
        ids.append(json.loads(body)["id"])
    return requests, ids


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends a request, reads its answer (status,
    Content-Length, body) and reports it; the lean client the benchmark measures with."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return await self._answer

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding" and self._answer is not None:
                self._answer.set_exception(RuntimeError("the client reads Content-Length only"))
                return
        if len(self._buffer) < end + 4 + length:
            return
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        if self._answer is not None:
            self._answer.set_result((int(head[0].split(" ", 2)[1]), body))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def load(options: argparse.Namespace) -> dict[str, Any]:
    """Send the requests; ``--rate`` paces them (open loop), otherwise as fast as answered.

    Requests are built and signed, and the connections opened, before the clock starts. A
    paced request's latency counts from the moment it was due, so waiting for a free
    connection is counted too.
    """
    requests, ids = build_requests(options)
    latencies: list[float] = [0.0] * len(requests)
    statuses: list[int] = [0] * len(requests)
    accepted: list[str] = []
    url = urllib.parse.urlsplit(options.url)
    loop = asyncio.get_running_loop()
    connections: list[_Connection] = []
    for _ in range(options.connections):
        _, protocol = await loop.create_connection(_Connection, url.hostname, url.port)
        await protocol.ready
        connections.append(protocol)
    free: asyncio.Queue[_Connection] = asyncio.Queue()
    for connection in connections:
        free.put_nowait(connection)

    async def send(n: int, due: float) -> None:
        connection = await free.get()
        try:
            status, answer = await connection.request(requests[n])
        finally:
            free.put_nowait(connection)
        latencies[n] = time.perf_counter() - due
        statuses[n] = status
        event_id = ids[n]
        if status == 200 and event_id is not None and b'"received": true' in answer:
            accepted.append(event_id)

    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(requests):
            n = next_index
            next_index += 1
            await send(n, time.perf_counter())

    first_send = time.time()
    started = time.perf_counter()
    if options.rate:
        interval = 1.0 / options.rate
        pending = []
        for n in range(len(requests)):
            due = started + n * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.ensure_future(send(n, due)))
        await asyncio.gather(*pending)
    else:
        await asyncio.gather(*(worker() for _ in range(options.connections)))
    seconds = time.perf_counter() - started
    for connection in connections:
        connection.close()
    ordered = sorted(latencies)
    counts: dict[str, int] = {}
    for status in statuses:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return {
        "requests": len(requests),
        "seconds": seconds,
        "first_send": first_send,
        "statuses": counts,
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "accepted": accepted,
    }


def run_load(args: list[str]) -> dict[str, Any]:
    """Run the load generator in a child process and return what it measured."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.webhooks_bench", "load", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"load generator {args} failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# -- The server under test --------------------------------------------------------------------


def start_devhost(work: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """``python -m devhost run`` on ``port``, logging to ``work/devhost.log``, once it is live."""
    log_path = work / "devhost.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devhost", "run", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise SystemExit("devhost exited at start:\n" + log_path.read_text()[-4000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/live", timeout=5):
                return proc
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            stop_devhost(proc)
            raise SystemExit("devhost did not come up:\n" + log_path.read_text()[-4000:])
        time.sleep(0.3)


def stop_devhost(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def scalar(database_url: str, sql: str, *params: Any) -> Any:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def applied_count(database_url: str, account: str = ACCOUNT) -> int:
    """Events of ``account`` the consumer has recorded (applied, ignored) so far."""
    return int(
        scalar(
            database_url,
            "SELECT count(*) FROM stripe_events WHERE stripe_account_id = %s",
            account,
        )
    )


def wait_applied(
    database_url: str, expected: int, until: float, account: str = ACCOUNT
) -> tuple[int, float]:
    """Wait until ``expected`` events of ``account`` are recorded, or the wall clock reaches
    ``until``; how many were recorded, and when."""
    while True:
        done = applied_count(database_url, account)
        if done >= expected or time.time() >= until:
            return done, time.time()
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a running process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- The run ----------------------------------------------------------------------------------


def write_events(path: Path, count: int, customers: int) -> float:
    """Generated Stripe events, each as the bytes Stripe would send; the mean body size."""
    sys.path.insert(0, str(REPO))
    from tests.services import stripe_events

    events = stripe_events.generate(ACCOUNT, customers=customers, events=count)
    size = 0
    with path.open("w", encoding="utf-8") as out:
        for event in events:
            body = json.dumps(event, indent=2) + "\n"
            size += len(body.encode())
            out.write(json.dumps(body) + "\n")
    return size / count


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        parser = argparse.ArgumentParser()
        parser.add_argument("--url", required=True)
        parser.add_argument("--method", default="POST")
        parser.add_argument("--events-file")
        parser.add_argument("--start", type=int, default=0)
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--connections", type=int, default=50)
        parser.add_argument("--rate", type=float, default=0.0)
        parser.add_argument("--secret", default=SECRET)
        print(json.dumps(asyncio.run(load(parser.parse_args(sys.argv[2:])))))
        return

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--rate-seconds", type=float, default=10.0)
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="devhost processes serving HTTP (FUNCTIONS_WORKER_PROCESS_COUNT)",
    )
    parser.add_argument(
        "--pause-consumer",
        action="store_true",
        help="leave the billing consumer off, to measure intake alone (no billing figures)",
    )
    parser.add_argument(
        "--apply-budget",
        type=float,
        default=600.0,
        help="seconds from the first event sent that the consumer gets to apply them all",
    )
    parser.add_argument(
        "--alone-events",
        type=int,
        default=10_000,
        help="events queued while the host is stopped, for the consumer's figure alone (0: none)",
    )
    options = parser.parse_args()

    from devhost import services as local

    work = Path(tempfile.mkdtemp(prefix="advisoros-bench-webhooks-"))
    try:
        # The devhost starts Azurite itself on the ports the connection string names.
        storage = local.azurite_connection_string(local.free_port(), local.free_port())
        with local.start_postgres(work / "pg", port=local.free_port()) as pg:
            local.apply_migrations(pg.url, REPO / "migrations")
            env = {
                **os.environ,
                "DATABASE_URL": pg.url,
                "AzureWebJobsStorage": storage,
                "DEVHOST_DATA_DIR": str(work / "devhost"),
                "STRIPE_WEBHOOK_SECRETS": SECRET,
                "STRIPE_LIVEMODE": "false",
                "FUNCTIONS_WORKER_PROCESS_COUNT": str(options.processes),
            }
            if options.pause_consumer:
                env[f"AzureWebJobs.{CONSUMER}.Disabled"] = "true"
            os.environ.update(env)
            run(options, work, env, pg.url)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(options: argparse.Namespace, work: Path, env: dict[str, str], database_url: str) -> None:
    from shared.services import billing, clients

    books = billing.link_stripe_account(clients.create_firm("Benchmark firm"), ACCOUNT)
    paced = int(options.rate * options.rate_seconds)
    events_file = work / "events.jsonl"
    mean_size = write_events(events_file, options.events + paced, options.customers)

    port = local_free_port()
    base = f"http://127.0.0.1:{port}/api"
    devhost = start_devhost(work, env, port)
    try:
        common = ["--connections", str(options.connections)]
        live = ["--url", f"{base}/health/live", "--method", "GET"]
        ceiling = run_load([*live, "--count", str(options.events), *common])
        stripe = ["--url", f"{base}/webhooks/stripe", "--events-file", str(events_file)]
        intake = run_load([*stripe, "--count", str(options.events), *common])
        during_intake = applied_count(database_url)
        window = ["--start", str(options.events), "--count", str(paced)]
        paced_run = run_load([*stripe, *window, "--rate", str(options.rate), *common])
        intake_done, intake_done_at = applied_count(database_url), time.time()
        budget = 0.0 if options.pause_consumer else options.apply_budget
        applied, applied_at = wait_applied(
            database_url, options.events + paced, intake["first_send"] + budget
        )
    except BaseException:
        print("devhost log, last lines:\n" + (work / "devhost.log").read_text()[-6000:])
        raise
    finally:
        stop_devhost(devhost)
    alone = (
        consumer_alone(options, work, env, database_url, port) if options.alone_events else None
    )

    accepted = intake["accepted"] + paced_run["accepted"]
    errors = [
        line for line in (work / "devhost.log").read_text().splitlines() if " ERROR " in line
    ]
    for line in errors[:5]:
        print(f"devhost error ({len(errors)} in all): {line[:300]}")
    print(f"{options.events + paced:,} generated Stripe events, {mean_size:,.0f} bytes on average")
    consumer = (
        "PAUSED: intake measured alone" if options.pause_consumer else "running beside intake"
    )
    print(f"devhost HTTP processes: {options.processes}; billing consumer {consumer}")
    print(
        f"{'case':<44} {'requests':>9} {'200':>7} {'seconds':>8} {'per s':>8}"
        f" {'p50 ms':>7} {'p99 ms':>7}"
    )
    for label, result in (
        ("GET /api/health/live (ceiling)", ceiling),
        ("POST /api/webhooks/stripe, saturating", intake),
        (f"POST /api/webhooks/stripe at {options.rate:,.0f}/s", paced_run),
    ):
        ok = result["statuses"].get("200", 0)
        print(
            f"{label:<44} {result['requests']:>9,} {ok:>7,} {result['seconds']:>8.2f}"
            f" {ok / result['seconds']:>8,.0f} {result['p50_ms']:>7.1f} {result['p99_ms']:>7.1f}"
        )
        others = {status: n for status, n in result["statuses"].items() if status != "200"}
        if others:
            print(f"{'':<44} other answers: {others}")
    applied_seconds = applied_at - intake["first_send"]
    drained = applied - intake_done
    drain_seconds = max(applied_at - intake_done_at, 1e-9)
    consumer_rows = [
        ("billing: during the saturating intake", during_intake, intake["seconds"]),
        ("billing: draining after the intake", drained, drain_seconds),
        ("billing: first enqueue to last applied", applied, applied_seconds),
    ]
    if alone is not None:
        consumer_rows.append(
            (
                f"billing alone: {alone['events']:,} queued, host restarted",
                alone["applied"],
                alone["seconds"],
            )
        )
    for label, count, seconds in consumer_rows:
        print(f"{label:<44} {count:>9,} {'':>7} {seconds:>8.2f} {count / seconds:>8,.0f}")

    # What the database says about the accepted events.
    ids = list(accepted)
    in_inbox = scalar(
        database_url,
        "SELECT count(*) FROM inbox WHERE source = 'stripe' AND event_id = ANY(%s)",
        ids,
    )
    handed = scalar(
        database_url,
        "SELECT count(*) FROM local_broker.sent_ids WHERE queue = 'stripe-events'"
        " AND message_id = ANY(%s)",
        ids,
    )
    unsent = scalar(database_url, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
    recorded = scalar(
        database_url, "SELECT count(*) FROM stripe_events WHERE stripe_account_id = %s", ACCOUNT
    )
    postings = scalar(
        database_url,
        "SELECT coalesce(sum(postings), 0) FROM stripe_events WHERE stripe_account_id = %s",
        ACCOUNT,
    )
    entries = scalar(
        database_url, "SELECT count(*) FROM journal_entries WHERE client_id = %s", books
    )
    dead = scalar(database_url, "SELECT count(*) FROM local_broker.messages WHERE state = 'dead'")

    share = (intake["statuses"].get("200", 0) / intake["seconds"]) / (
        ceiling["statuses"].get("200", 0) / ceiling["seconds"]
    )
    rate = intake["statuses"].get("200", 0) / intake["seconds"]
    print()
    target = TARGET_ACCEPTED_PER_S
    print(f"accepted events/s              {rate:8,.0f}   (target >= {target:,.0f})")
    print(f"intake rate / ceiling rate     {share:8.2f}   (target >= {TARGET_CEILING_SHARE})")
    print(
        f"p99 at {options.rate:,.0f} events/s            {paced_run['p99_ms']:8.1f}"
        f"   (target < {TARGET_P99_AT_RATE_MS:.0f} ms)"
    )
    print(
        f"accepted events in inbox       {in_inbox:,} of {len(ids):,}   (target: all, committed"
        " before the answer)"
    )
    print(f"handed to the broker           {handed:,} of {len(ids):,}; outbox unsent {unsent:,}")
    applied_rate = applied / applied_seconds
    everything = options.events + paced
    cut = "" if applied >= everything else f"; only {applied:,} of {everything:,} in the budget"
    print(
        f"billing events applied/s       {applied_rate:8,.0f}"
        f"   (target >= {TARGET_APPLIED_PER_S:,.0f}{cut})"
    )
    print(
        f"billing duplicates             stripe_events rows {recorded:,} for {len(ids):,} events;"
        f" journal entries {entries:,} for {postings:,} postings; dead letters {dead:,}"
        "   (target: equal, 0 dead)"
    )
    if alone is not None:
        alone_rate = alone["applied"] / alone["seconds"]
        print(
            f"billing applied/s alone        {alone_rate:8,.0f}   (target >= "
            f"{TARGET_APPLIED_PER_S:,.0f}; host CPU {alone['cpu_ms_per_event']:.2f} ms per event)"
        )
        print(
            f"billing alone, duplicates      stripe_events rows {alone['recorded']:,} for"
            f" {alone['events']:,} events; journal entries {alone['entries']:,} for"
            f" {alone['postings']:,} postings   (target: equal)"
        )


ALONE_ACCOUNT = "acct_benchconsumer01"


def consumer_alone(
    options: argparse.Namespace, work: Path, env: dict[str, str], database_url: str, port: int
) -> dict[str, Any]:
    """The consumer on its own: events queued as the intake queues them while the host is
    stopped, then the host started and timed from live until the last is applied."""
    from psycopg_pool import ConnectionPool

    from shared.adapters.local_broker import LocalBroker
    from shared.messaging import STRIPE_EVENTS_QUEUE
    from shared.services import billing, clients, webhooks
    from tests.services import stripe_events

    books = billing.link_stripe_account(clients.create_firm("Consumer firm"), ALONE_ACCOUNT)
    events = stripe_events.generate(
        ALONE_ACCOUNT, customers=options.customers, events=options.alone_events
    )
    traceparent = "00-" + "0" * 31 + "1-" + "0" * 15 + "1-01"
    messages = []
    for event in events:
        event["id"] = event["id"].replace("evt_gen", "evt_alone")
        body = (json.dumps(event, indent=2) + "\n").encode()
        messages.append(webhooks.stripe_message(event, body, traceparent))
    with ConnectionPool(database_url, min_size=1, max_size=1) as pool:
        broker = LocalBroker(pool)
        for start in range(0, len(messages), 1000):
            broker.send(STRIPE_EVENTS_QUEUE, messages[start : start + 1000])

    # The consumer runs here even when the intake was measured with it paused.
    env = {k: v for k, v in env.items() if k != f"AzureWebJobs.{CONSUMER}.Disabled"}
    devhost = start_devhost(work, env, port)
    try:
        live_at, cpu_at_live = time.time(), cpu_seconds(devhost.pid)
        at_live = applied_count(database_url, ALONE_ACCOUNT)
        done, done_at = wait_applied(
            database_url, len(events), live_at + options.apply_budget, ALONE_ACCOUNT
        )
        cpu = cpu_seconds(devhost.pid) - cpu_at_live
    finally:
        stop_devhost(devhost)
    applied = done - at_live
    return {
        "events": len(events),
        "applied": applied,
        "seconds": done_at - live_at,
        "cpu_ms_per_event": cpu / max(applied, 1) * 1000,
        "recorded": done,
        "postings": scalar(
            database_url,
            "SELECT coalesce(sum(postings), 0) FROM stripe_events WHERE stripe_account_id = %s",
            ALONE_ACCOUNT,
        ),
        "entries": scalar(
            database_url, "SELECT count(*) FROM journal_entries WHERE client_id = %s", books
        ),
    }


def local_free_port() -> int:
    from devhost.services import free_port

    return free_port()


if __name__ == "__main__":
    main()
