"""Game day on the local host: signed Stripe events flow in while the database stops,
storage stops and the consumer is killed, and at the end none is lost or applied twice.

It starts ``python -m devhost run`` of its own (its own Postgres, Azurite and free ports in
a temporary folder), links a Stripe account, and sends charge events one at a time from a
thread, retrying each until it is answered 2xx, as Stripe retries. Meanwhile it injects, in
turn: Postgres stopped (its postmaster killed), Azurite stopped, the host killed (the
consumer with it); after each it starts the host again, which brings the stopped service
back. Then it waits until the consumer has applied every event and checks, in the host's
database: every event in ``inbox`` once and in ``stripe_events`` once, one journal entry per
posting, no outbox row unsent, no dead letter.

    .venv/bin/python scripts/gameday.py --events 300

Exits 0 when nothing was lost, 1 otherwise. Runs on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[1]
STRIPE_SECRET = "whsec_gameday"
MASTER_KEY = "gameday-master-key"
START_TIMEOUT_S = 120
START_ATTEMPTS = 3
# A message the killed host held comes back when its 60 s lock expires.
APPLY_TIMEOUT_S = 300
FAULT_HOLD_S = 3.0
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Host:
    """The devhost process and the services it started, in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, pg_port, blob_port, queue_port = (free_port() for _ in range(4))
        self.database_url = f"postgresql://postgres@127.0.0.1:{pg_port}/advisoros"
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "AzureWebJobsStorage": (
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                f"AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{blob_port}/devstoreaccount1;"
                f"QueueEndpoint=http://127.0.0.1:{queue_port}/devstoreaccount1;"
            ),
            "DEVHOST_DATA_DIR": str(root / "data"),
            "DEVHOST_PG_PORT": str(pg_port),
            "DEVHOST_MASTER_KEY": MASTER_KEY,
            "DEVHOST_BUS_POLL_INTERVAL_S": "0.05",
            "DEVHOST_BUS_RETRY_BACKOFF_S": "0.1",
            "STRIPE_WEBHOOK_SECRETS": STRIPE_SECRET,
            "STRIPE_LIVEMODE": "false",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the host (and whatever of its services is down); wait for /api/ready.

        A host that exits while starting is started again, up to three times in all, as an
        operator would: on a loaded machine Azurite can miss the host's start-up deadline.
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            if self._start_once():
                return
            print(f"the devhost exited while starting (attempt {attempt})", flush=True)
        raise SystemExit(f"the devhost did not start; see {self.root / 'devhost.log'}")

    def _start_once(self) -> bool:
        with (self.root / "devhost.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devhost", "run", "--port", str(self.port)],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while call(self, "GET", "/api/ready")[0] != 200:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            if time.monotonic() > deadline:
                self.kill()
                return False
            time.sleep(0.3)
        return True

    def kill(self) -> None:
        """SIGKILL the host alone, as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        """Stop the host and its services, as Ctrl-C does."""
        if self.proc is None:
            self.start()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.proc = None

    def stop_postgres(self) -> None:
        """Kill the postmaster: the database is gone until the host starts it again."""
        pid_file = self.root / "data" / "pg" / "postmaster.pid"
        os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGKILL)

    def stop_azurite(self) -> None:
        """Kill Azurite's blob and queue services."""
        for pid_file in (self.root / "data" / "azurite").glob("azurite-*.pid"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)


def call(
    host: Host, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{host.port}{path}", data=body, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None
    except OSError:
        return 0, None


def charge_event(account: str, number: int) -> bytes:
    """A charge.succeeded event of ``account``, of 10.00 + ``number`` cents USD."""
    charge = {
        "id": f"ch_gameday{number:06d}",
        "object": "charge",
        "amount": 1000 + number,
        "amount_captured": 1000 + number,
        "currency": "usd",
        "customer": f"cus_gameday{number % 7}",
        "paid": True,
        "captured": True,
        "status": "succeeded",
        "created": 1764806400 + number,
    }
    event = {
        "id": f"evt_gameday_{account[-8:]}_{number:06d}",
        "object": "event",
        "account": account,
        "api_version": "2025-03-31.basil",
        "created": 1764806400 + number,
        "livemode": False,
        "type": "charge.succeeded",
        "data": {"object": charge},
    }
    return (json.dumps(event, indent=2) + "\n").encode()


def send_until_accepted(host: Host, body: bytes, stop: threading.Event) -> int:
    """POST one signed event until it is answered 2xx, as Stripe retries; return the tries."""
    tries = 0
    while not stop.is_set():
        tries += 1
        stamp = int(time.time())
        mac = hmac.new(STRIPE_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        status, _ = call(
            host,
            "POST",
            "/api/webhooks/stripe",
            body,
            **{"Stripe-Signature": f"t={stamp},v1={mac.hexdigest()}"},
        )
        if 200 <= status < 300:
            return tries
        time.sleep(0.2)
    return tries


def query(host: Host, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(host.database_url, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def link_account(host: Host) -> str:
    account = f"acct_gameday{uuid.uuid4().hex[:10]}"
    status, client = call(
        host,
        "POST",
        "/api/ops/clients",
        json.dumps({"name": "Game day firm"}).encode(),
        **{"x-functions-key": MASTER_KEY},
    )
    assert status == 201, status
    body = json.dumps({"firm_id": client["firm_id"], "stripe_account_id": account}).encode()
    status, _ = call(
        host, "POST", "/api/ops/stripe-accounts", body, **{"x-functions-key": MASTER_KEY}
    )
    assert status == 201, status
    return account


def tally(host: Host, account: str) -> dict[str, int]:
    """What the database holds for ``account``'s events."""
    [row] = query(
        host,
        "SELECT"
        " (SELECT count(*) FROM inbox WHERE source = 'stripe' AND event_id LIKE %s),"
        " (SELECT count(DISTINCT event_id) FROM inbox"
        "   WHERE source = 'stripe' AND event_id LIKE %s),"
        " (SELECT count(*) FROM stripe_events WHERE stripe_account_id = %s),"
        " (SELECT coalesce(sum(postings), 0) FROM stripe_events WHERE stripe_account_id = %s),"
        " (SELECT count(*) FROM journal_entries WHERE client_id ="
        "   (SELECT books_client_id FROM stripe_accounts WHERE stripe_account_id = %s)),"
        " (SELECT count(*) FROM outbox WHERE sent_at IS NULL)",
        f"evt_gameday_{account[-8:]}_%",
        f"evt_gameday_{account[-8:]}_%",
        account,
        account,
        account,
    )
    keys = ("inbox", "inbox_distinct", "applied", "postings", "entries", "outbox_unsent")
    counts = dict(zip(keys, (int(v) for v in row), strict=True))
    [(dead,)] = query(
        host,
        "SELECT count(*) FROM local_broker.messages WHERE dead_lettered_at IS NOT NULL",
    )
    counts["dead_letters"] = int(dead)
    return counts


def run(events: int, root: Path) -> bool:
    host = Host(root)
    host.start()
    try:
        account = link_account(host)
        bodies = [charge_event(account, n) for n in range(events)]
        stop = threading.Event()
        tries: list[int] = []

        def feed() -> None:
            for body in bodies:
                tries.append(send_until_accepted(host, body, stop))

        feeder = threading.Thread(target=feed, name="stripe")
        feeder.start()

        # Each fault once, a third of the way apart, while events flow.
        faults = (
            ("Postgres stopped", host.stop_postgres),
            ("Azurite stopped", host.stop_azurite),
            ("consumer killed", lambda: None),
        )
        for number, (name, inject) in enumerate(faults, start=1):
            while len(tries) < events * number // (len(faults) + 1) and feeder.is_alive():
                time.sleep(0.05)
            print(f"{name} after {len(tries)} events", flush=True)
            inject()
            time.sleep(FAULT_HOLD_S)
            host.kill()
            host.start()
        feeder.join()

        deadline = time.monotonic() + APPLY_TIMEOUT_S
        while (counts := tally(host, account))["applied"] < events:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        retried = sum(1 for t in tries if t > 1)
        print(f"events sent {events}, answered {len(tries)}, retried by the sender {retried}")
        print("database: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        ok = (
            len(tries) == events
            and counts["inbox"] == counts["inbox_distinct"] == events
            and counts["applied"] == events
            and counts["postings"] == counts["entries"]
            and counts["outbox_unsent"] == 0
            and counts["dead_letters"] == 0
        )
        print("nothing lost, nothing applied twice" if ok else "LOST OR DUPLICATED EVENTS")
        return ok
    finally:
        host.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300, help="events to send (default 300)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the data folder even when nothing was lost"
    )
    args = parser.parse_args()
    if args.events < 4:
        parser.error("--events must be at least 4: one stretch before each fault and after")
    root = Path(tempfile.mkdtemp(prefix="advisoros-gameday-"))
    print(f"devhost data and log in {root}", flush=True)
    ok = run(args.events, root)
    if ok and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
