"""Blob triggers against a real Azurite and PostgreSQL: once per version, retries, poison."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from azure.storage.blob import BlobServiceClient

from devhost import blobs
from devhost.blobs import (
    POISON_QUEUE,
    BlobKey,
    BlobPath,
    BlobPoller,
    ReceiptStore,
    blob_watches,
    resolve_setting_refs,
)
from devhost.discovery import BLOB_TRIGGER, LoadedApp
from devhost.errors import ConfigError
from devhost.invoke import Invoker
from devhost.services import AzuriteHandle, PostgresHandle
from devhost.settings import HostSettings
from devhost.storage import QueueClient, StorageAccount
from tests.devhost.conftest import (
    FIXTURE_MODULE,
    STORAGE_SETTING,
    LoopThread,
    fast_settings,
    unique,
    wait_for,
)

SCAN_TIMEOUT_S = 20.0


class Host:
    """Pollers over the fixture app, driven scan by scan from the test thread."""

    def __init__(
        self, app: LoadedApp, pg: PostgresHandle, loop_thread: LoopThread, settings: HostSettings
    ) -> None:
        self._app = app
        self._pg = pg
        self._loop = loop_thread
        self.settings = settings
        self.invoker = Invoker(settings.thread_count, str(app.script_path.parent))
        self._parts: list[tuple[ReceiptStore, BlobPoller]] = []

    def new_poller(self, owner: str | None = None) -> BlobPoller:
        """A poller with its own database pool, as a second devhost process would have."""

        async def make() -> BlobPoller:
            store = ReceiptStore(self._pg.url)
            await store.open()
            watches = blob_watches(self._app.by_trigger(BLOB_TRIGGER), os.environ)
            poller = BlobPoller(watches, store, self.invoker, self.settings, owner=owner)
            await poller.open()
            await poller.ensure_containers()
            self._parts.append((store, poller))
            return poller

        return self._loop.run(make())

    def scan(self, *pollers: BlobPoller) -> None:
        """One scan of every poller at once, then wait for the invocations they started."""

        async def once() -> None:
            await asyncio.gather(*(p.scan_once() for p in pollers))
            await asyncio.gather(*(p.drain() for p in pollers))

        self._loop.run(once())

    def scan_until(self, pollers: list[BlobPoller], done: Callable[[], Any], what: str) -> None:
        deadline = time.monotonic() + SCAN_TIMEOUT_S
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self.scan(*pollers)

    def receipt(self, key: BlobKey) -> blobs.Receipt | None:
        store = self._parts[0][0]
        return self._loop.run(store.get(key))

    def close(self) -> None:
        async def close_all() -> None:
            for store, poller in self._parts:
                await poller.close()
                await store.close()

        self._loop.run(close_all())
        self.invoker.shutdown(wait=False)


@pytest.fixture
def host(fixture_app, pg, azurite, loop_thread, monkeypatch) -> Iterator[Host]:
    # The fixture app's blob triggers (and one of its functions) read the connection here.
    monkeypatch.setenv(STORAGE_SETTING, azurite.connection_string)
    h = Host(fixture_app, pg, loop_thread, fast_settings())
    yield h
    h.close()


@pytest.fixture(scope="module")
def storage(azurite: AzuriteHandle) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def upload(storage: BlobServiceClient, container: str, name: str, data: bytes) -> str:
    client = storage.get_blob_client(container, name)
    client.upload_blob(data, overwrite=True)
    return str(client.get_blob_properties().etag).strip('"')


def calls_for(calls: Any, function: str, blob: str) -> list[dict[str, Any]]:
    return [c for c in calls[function] if c["name"] == blob]


def test_blob_fires_exactly_once_even_with_two_pollers_racing(host, storage, calls, monkeypatch):
    claims: list[tuple[str, int]] = []
    real_claim = ReceiptStore.claim

    async def counting_claim(self, key, owner, lease_s, max_attempts):
        attempt = await real_claim(self, key, owner, lease_s, max_attempts)
        if key.name == name:
            claims.append((owner.split(":")[0], attempt))
        return attempt

    monkeypatch.setattr(ReceiptStore, "claim", counting_claim)
    first, second = host.new_poller("first"), host.new_poller("second")
    name = unique("once")
    etag = upload(storage, "fx-once", name, b"hello blob")

    host.scan_until(
        [first, second], lambda: calls_for(calls, "blob_once", f"fx-once/{name}"), "run"
    )
    for _ in range(5):
        host.scan(first, second)

    (seen,) = calls_for(calls, "blob_once", f"fx-once/{name}")
    assert seen["content"] == b"hello blob"
    assert seen["length"] == len(b"hello blob")
    assert seen["etag"] == etag
    assert seen["is_input_stream"]
    assert seen["uri"].endswith(f"/fx-once/{name}")
    receipt = host.receipt(BlobKey("blob_once", "fx-once", name, etag))
    assert receipt is not None
    assert (receipt.status, receipt.attempts) == ("done", 1)
    # Whichever poller got there, exactly one claim succeeded.
    assert [attempt for _, attempt in claims if attempt] == [1]


def test_concurrent_claims_from_two_processes_have_one_winner(pg, loop_thread):
    key = BlobKey("blob_once", "fx-once", unique("claim"), "0x1")

    async def race() -> list[int]:
        stores = [ReceiptStore(pg.url), ReceiptStore(pg.url)]
        for store in stores:
            await store.open()
        try:
            await stores[0].register(key.function, key.container, [(key.name, key.etag)])
            claims = [
                store.claim(key, f"owner-{i}-{j}", lease_s=30, max_attempts=5)
                for j in range(10)
                for i, store in enumerate(stores)
            ]
            return await asyncio.gather(*claims)
        finally:
            for store in stores:
                await store.close()

    assert sorted(loop_thread.run(race())) == [0] * 19 + [1]


def test_many_blobs_race_between_pollers_and_each_fires_once(host, storage, calls):
    pollers = [host.new_poller(f"racer-{i}") for i in range(3)]
    names = [unique("many") for _ in range(12)]
    for name in names:
        upload(storage, "fx-once", name, name.encode())

    def all_ran() -> bool:
        return all(calls_for(calls, "blob_once", f"fx-once/{n}") for n in names)

    host.scan_until(pollers, all_ran, "every blob to run")
    host.scan(*pollers)
    assert all(len(calls_for(calls, "blob_once", f"fx-once/{n}")) == 1 for n in names)


def test_new_content_under_the_same_name_fires_again_once(host, storage, calls):
    poller = host.new_poller()
    name = unique("again")
    blob = f"fx-once/{name}"
    upload(storage, "fx-once", name, b"version one")
    host.scan_until([poller], lambda: calls_for(calls, "blob_once", blob), "first version")

    upload(storage, "fx-once", name, b"version two")
    host.scan_until([poller], lambda: len(calls_for(calls, "blob_once", blob)) == 2, "second")
    for _ in range(3):
        host.scan(poller)

    assert [c["content"] for c in calls_for(calls, "blob_once", blob)] == [
        b"version one",
        b"version two",
    ]


def test_function_failing_twice_then_succeeding_runs_three_times(host, storage, calls):
    poller = host.new_poller()
    name = unique("flaky")
    etag = upload(storage, "fx-flaky", name, b"flaky")
    key = BlobKey("blob_flaky", "fx-flaky", name, etag)

    host.scan_until([poller], lambda: (r := host.receipt(key)) and r.status == "done", "success")
    for _ in range(3):
        host.scan(poller)

    seen = calls_for(calls, "blob_flaky", f"fx-flaky/{name}")
    assert [c["retry"] for c in seen] == [0, 1, 2]
    receipt = host.receipt(key)
    assert receipt is not None
    assert (receipt.status, receipt.attempts) == ("done", 3)


def test_always_failing_blob_runs_five_times_then_is_poison_for_good(
    host, storage, calls, azurite, loop_thread, fixture_app, pg
):
    poller = host.new_poller()
    name = unique("poison")
    etag = upload(storage, "fx-poison", name, b"never works")
    key = BlobKey("blob_poison", "fx-poison", name, etag)

    host.scan_until([poller], lambda: (r := host.receipt(key)) and r.status == "poison", "poison")
    for _ in range(3):
        host.scan(poller)
    assert len(calls_for(calls, "blob_poison", f"fx-poison/{name}")) == 5
    receipt = host.receipt(key)
    assert receipt is not None
    assert receipt.attempts == 5
    assert "ValueError: this blob can never be processed" in (receipt.last_error or "")

    # The poison queue holds the message the real host would send.
    async def peek() -> list[str]:
        account = StorageAccount.from_connection_string(azurite.connection_string)
        async with aiohttp.ClientSession() as session:
            return await QueueClient(account, session).peek_messages(POISON_QUEUE)

    messages = [json.loads(base64.b64decode(m)) for m in loop_thread.run(peek())]
    (message,) = [m for m in messages if m["BlobName"] == name]
    assert message == {
        "Type": "BlobTrigger",
        "FunctionId": "Host.Functions.blob_poison",
        "BlobType": "BlockBlob",
        "ContainerName": "fx-poison",
        "BlobName": name,
        "ETag": etag,
    }

    # A restarted devhost (new process: new pool, nothing cached) leaves it alone too.
    restarted = Host(fixture_app, pg, loop_thread, fast_settings())
    try:
        fresh = restarted.new_poller("after-restart")
        for _ in range(3):
            restarted.scan(fresh)
    finally:
        restarted.close()
    assert len(calls_for(calls, "blob_poison", f"fx-poison/{name}")) == 5


def test_blob_deleted_by_the_function_before_its_retry_is_closed_out(host, storage, calls):
    poller = host.new_poller()
    name = unique("vanish")
    etag = upload(storage, "fx-vanish", name, b"here, then gone")
    key = BlobKey("blob_vanish", "fx-vanish", name, etag)

    host.scan_until([poller], lambda: (r := host.receipt(key)) and r.status == "gone", "close-out")
    for _ in range(3):
        host.scan(poller)
    assert len(calls_for(calls, "blob_vanish", f"fx-vanish/{name}")) == 1


def test_claim_of_a_dead_process_expires_and_the_blob_runs_again(
    host, storage, calls, loop_thread, pg
):
    name = unique("orphan")
    etag = upload(storage, "fx-once", name, b"claimed by a process that died")
    key = BlobKey("blob_once", "fx-once", name, etag)

    async def claim_and_die() -> int:
        store = ReceiptStore(pg.url)
        await store.open()
        try:
            await store.register(key.function, key.container, [(key.name, key.etag)])
            return await store.claim(key, "dead-process", lease_s=0.2, max_attempts=5)
        finally:
            await store.close()

    assert loop_thread.run(claim_and_die()) == 1
    poller = host.new_poller()
    host.scan_until([poller], lambda: calls_for(calls, "blob_once", f"fx-once/{name}"), "rerun")
    receipt = host.receipt(key)
    assert receipt is not None
    assert (receipt.status, receipt.attempts) == ("done", 2)


def test_path_pattern_filters_names_and_nested_names_fire(host, storage, calls):
    poller = host.new_poller()
    client = unique("client")
    upload(storage, "fx-params", f"{client}/2026/jan.csv", b"a,b")
    upload(storage, "fx-params", f"{client}.csv", b"no client folder")

    blob = f"fx-params/{client}/2026/jan.csv"
    host.scan_until([poller], lambda: calls_for(calls, "blob_params", blob), "the nested blob")
    host.scan(poller)
    assert not calls_for(calls, "blob_params", f"fx-params/{client}.csv")


def test_large_blob_is_spooled_and_read_whole(host, storage, calls, monkeypatch):
    monkeypatch.setattr(blobs, "SPOOL_MEMORY_BYTES", 64 * 1024)
    poller = host.new_poller()
    name = unique("large")
    data = os.urandom(1024 * 1024)
    upload(storage, "fx-once", name, data)

    host.scan_until([poller], lambda: calls_for(calls, "blob_once", f"fx-once/{name}"), "large")
    (seen,) = calls_for(calls, "blob_once", f"fx-once/{name}")
    assert seen["sha256"] == hashlib.sha256(data).hexdigest()
    assert seen["length"] == len(data)


class TestBlobPath:
    def test_container_and_named_segments(self):
        path = BlobPath.parse("ledger-imports/{client_id}/{name}")
        assert path.container == "ledger-imports"
        assert path.match("acme/2026/q1.csv") == {"client_id": "acme", "name": "2026/q1.csv"}
        assert path.match("loose.csv") is None

    def test_container_only_matches_every_blob(self):
        assert BlobPath.parse("documents").match("a/b.pdf") == {}

    def test_literal_prefix_and_extension(self):
        path = BlobPath.parse("in/reports/{name}.csv")
        assert path.prefix == "reports/"
        assert path.match("reports/june.csv") == {"name": "june"}
        assert path.match("reports/june.pdf") is None

    def test_setting_reference_is_resolved(self):
        assert resolve_setting_refs("%BOX%/{name}", {"BOX": "inbox"}) == "inbox/{name}"
        with pytest.raises(ConfigError, match="setting NOPE"):
            resolve_setting_refs("%NOPE%/{name}", {})


def test_stopping_mid_invocation_hands_the_blob_back_uncounted(host, storage, calls, loop_thread):
    poller = host.new_poller()
    name = unique("hang")
    etag = upload(storage, "fx-hang", name, b"takes forever")
    key = BlobKey("blob_hang", "fx-hang", name, etag)
    try:
        loop_thread.run(poller.scan_once())
        wait_for(lambda: calls_for(calls, "blob_hang", f"fx-hang/{name}"), 10, "the invocation")
        loop_thread.run(poller.close())
        receipt = host.receipt(key)
        assert receipt is not None
        assert (receipt.status, receipt.attempts) == ("pending", 0)
    finally:
        sys.modules[FIXTURE_MODULE].HANG_RELEASE.set()
        storage.get_blob_client("fx-hang", name).delete_blob()
