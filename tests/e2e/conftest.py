"""The app as a person runs it: ``python -m devhost run`` in its own process, with its own
Postgres and Azurite, driven only through HTTP, blob storage and SQL reads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from azure.storage.blob import BlobServiceClient

from tests.conftest import REPO, free_port

FUNCTION_KEY = "e2e-function-key"
MASTER_KEY = "e2e-master-key"
STRIPE_SECRET = "whsec_e2e_secret"
QUICKBOOKS_TOKEN = "e2e-verifier-token"
START_TIMEOUT_S = 90


@dataclass
class App:
    """A running devhost and the ways a test reaches it."""

    base_url: str
    database_url: str
    blobs: BlobServiceClient
    log_path: Path

    def call(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        *,
        key: str | None = FUNCTION_KEY,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send one HTTP request; return the status and the decoded JSON body."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(
            f"{self.base_url}{path}", data=data, method=method, headers=headers or {}
        )
        if key:
            request.add_header("x-functions-key", key)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read())

    def drop(self, container: str, name: str, data: bytes) -> None:
        self.blobs.get_blob_client(container, name).upload_blob(data, overwrite=True)

    def wait_for_import(self, blob_name: str, timeout_s: float = 120) -> dict[str, Any]:
        """Wait until the blob trigger has recorded the import of ``blob_name``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with psycopg.connect(self.database_url) as conn:
                row = conn.execute(
                    "SELECT id, status, reason, rows_read, imported, duplicates, error_count,"
                    " report FROM ledger_imports WHERE blob_name = %s ORDER BY id DESC LIMIT 1",
                    (blob_name,),
                ).fetchone()
            if row:
                keys = (
                    "id",
                    "status",
                    "reason",
                    "rows_read",
                    "imported",
                    "duplicates",
                    "error_count",
                    "report",
                )
                return dict(zip(keys, row, strict=True))
            time.sleep(0.2)
        raise AssertionError(
            f"{blob_name} was not imported within {timeout_s} s; devhost log:\n"
            + self.log_path.read_text()[-4000:]
        )

    def create_client(self, name: str, currency: str = "USD") -> str:
        status, body = self.call(
            "POST", "/api/ops/clients", {"name": name, "base_currency": currency}, key=MASTER_KEY
        )
        assert status == 201, body
        return str(body["client_id"])


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body.decode(errors="replace")


class Devhost:
    """``python -m devhost run`` as a subprocess on free ports, with its own Postgres and
    Azurite in ``root``; it can be killed and started again on the same data."""

    def __init__(self, root: Path, **settings: str) -> None:
        self.root = root
        http_port, pg_port, blob_port, queue_port = (free_port() for _ in range(4))
        self.http_port = http_port
        storage = (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
            f"KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:{blob_port}/devstoreaccount1;"
            f"QueueEndpoint=http://127.0.0.1:{queue_port}/devstoreaccount1;"
        )
        database_url = f"postgresql://postgres@127.0.0.1:{pg_port}/advisoros"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "AzureWebJobsStorage": storage,
            "DEVHOST_DATA_DIR": str(root / "data"),
            "DEVHOST_PG_PORT": str(pg_port),
            "DEVHOST_FUNCTION_KEY": FUNCTION_KEY,
            "DEVHOST_MASTER_KEY": MASTER_KEY,
            "DEVHOST_BLOB_POLL_INTERVAL_S": "0.2",
            "DEVHOST_BLOB_RETRY_BACKOFF_S": "0.2",
            "STRIPE_WEBHOOK_SECRETS": STRIPE_SECRET,
            "QUICKBOOKS_WEBHOOK_VERIFIER_TOKENS": QUICKBOOKS_TOKEN,
            "STRIPE_LIVEMODE": "false",
            **settings,
        }
        self.app = App(
            f"http://127.0.0.1:{http_port}",
            database_url,
            BlobServiceClient.from_connection_string(storage),
            root / "devhost.log",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed = False

    def start(self) -> App:
        """Start the host (again) and wait until it answers its health check."""
        with self.app.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devhost", "run", "--port", str(self.http_port)],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("devhost exited at start:\n" + self.log())
            try:
                status, _ = self.app.call("GET", "/api/ready", key=None)
                if status == 200:
                    self.killed = False
                    return self.app
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("devhost did not become healthy:\n" + self.log())
            time.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL the host process alone, as a crash would: its Postgres and Azurite live
        on, and the next ``start`` adopts them."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.killed = True

    def stop(self) -> None:
        """Stop the host and everything it started, as Ctrl-C does."""
        if self.proc is None and self.killed:
            # Only a host can stop the Postgres and Azurite a killed one left running.
            self.start()
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.app.log_path.read_text(errors="replace")[-6000:]


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    host = Devhost(tmp_path_factory.mktemp("devhost"))
    try:
        yield host.start()
    finally:
        host.stop()
