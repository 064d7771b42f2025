"""Blob triggers: poll the watched containers, fire each blob version once, retry, then poison.

A receipt per (function, container, blob name, etag) in the PostgreSQL schema ``devhost``
makes a blob version fire once across pollers, processes and restarts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import aiohttp
import psycopg
from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
from azure.functions.blob import InputStream
from azure.storage.blob import BlobProperties
from azure.storage.blob.aio import BlobServiceClient, ExponentialRetry
from psycopg_pool import AsyncConnectionPool

from devhost.discovery import FunctionSpec
from devhost.errors import ConfigError
from devhost.invoke import Invoker, log_invocation, new_invocation_id
from devhost.settings import BLOB_RETRY_BACKOFF_MAX_S, HostSettings
from devhost.storage import QueueClient, StorageAccount

log = logging.getLogger(__name__)

POISON_QUEUE = "webjobs-blobtrigger-poison"
DEFAULT_CONNECTION = "AzureWebJobsStorage"
# Blobs up to this size stay in memory; larger ones spill to a temporary file.
SPOOL_MEMORY_BYTES = 16 * 1024 * 1024
DB_POOL_SIZE = 4
_SCHEMA_LOCK_KEY = 0x0DE7_B10B
_SETTING_REF = re.compile(r"%([^%]+)%")
# The pause after a scan is at least this many times the scan's own duration: listing a
# container of thousands of blobs is CPU work on the host's event loop (the SDK parses the
# XML there), and HTTP, queues and orchestrations share that loop.
SCAN_PAUSE_FACTOR = 3

PENDING, RUNNING, DONE, POISON, GONE = "pending", "running", "done", "poison", "gone"
SETTLED = frozenset({DONE, POISON, GONE})

# Limitation: the table is created when missing and never altered; after a change to its
# columns, drop the schema ``devhost`` (receipts are only local bookkeeping).
RECEIPTS_DDL = """
CREATE SCHEMA IF NOT EXISTS devhost;
CREATE TABLE IF NOT EXISTS devhost.blob_receipts (
    function_name   text NOT NULL,
    container       text NOT NULL,
    blob_name       text NOT NULL,
    etag            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'done', 'poison', 'gone')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner     text,
    lease_until     timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (function_name, container, blob_name, etag)
);
CREATE INDEX IF NOT EXISTS blob_receipts_open_idx
    ON devhost.blob_receipts (function_name, container)
    WHERE status IN ('pending', 'running');
"""


def resolve_setting_refs(text: str, environ: Mapping[str, str]) -> str:
    """Replace each ``%NAME%`` in a binding value by the setting ``NAME``.

    Raises:
        ConfigError: a referenced setting is not set.
    """

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ConfigError(f"setting {name} (referenced as %{name}%) is not set")
        return environ[name]

    return _SETTING_REF.sub(lookup, text)


@dataclass(frozen=True)
class BlobPath:
    """A blob trigger path such as ``ledger-imports/{client_id}/{name}``.

    Attributes:
        container: the container the trigger watches.
        prefix: the literal start of the blob names (listing filter).
        regex: matches the names that fire, capturing the ``{...}`` segments.
        names: the names of those segments, in order.
    """

    container: str
    prefix: str
    regex: re.Pattern[str]
    names: tuple[str, ...]

    @classmethod
    def parse(cls, path: str) -> BlobPath:
        """Parse a trigger path (``%SETTING%`` references resolved already).

        Raises:
            ConfigError: the container part is empty or holds a ``{...}`` expression.
        """
        container, _, rest = path.strip().strip("/").partition("/")
        if not container or "{" in container:
            raise ConfigError(f"blob trigger path {path!r} must start with a literal container")
        pieces = re.split(r"\{([^{}]+)\}", rest)
        names = tuple(pieces[1::2])
        pattern = ""
        for index, piece in enumerate(pieces):
            if index % 2 == 0:
                pattern += re.escape(piece)
            else:
                # The last expression takes the rest of the name, slashes included.
                last = index == len(pieces) - 2
                pattern += f"(?P<g{index // 2}>{'.+' if last else '.+?'})"
        if not rest:
            pattern = ".+"
        return cls(container, pieces[0], re.compile(f"^{pattern}$", re.DOTALL), names)

    def match(self, blob_name: str) -> dict[str, str] | None:
        """The ``{...}`` values of ``blob_name``, or None when the name does not fire."""
        found = self.regex.match(blob_name)
        if found is None:
            return None
        return {name: found.group(f"g{i}") for i, name in enumerate(self.names)}


class SpooledInputStream(InputStream):
    """``azure.functions.blob.InputStream`` over a spooled temporary file, not a bytes copy.

    Small blobs stay in memory; large ones are read from disk, so a 1 GB blob does not need
    1 GB of RAM. Everything else (name, uri, length, properties, metadata) is as usual.
    """

    def __init__(
        self,
        spool: IO[bytes],
        *,
        name: str,
        uri: str,
        length: int,
        blob_properties: dict[str, Any],
        metadata: dict[str, str],
    ) -> None:
        super().__init__(
            data=b"",
            name=name,
            uri=uri,
            length=length,
            blob_properties=blob_properties,
            metadata=metadata,
        )
        self._spool = spool

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (all that is left when -1 or None)."""
        return self._spool.read(-1 if size is None else size)

    read1 = read

    def close(self) -> None:
        """Release the spooled data."""
        self._spool.close()
        super().close()


@dataclass(frozen=True, slots=True)
class BlobKey:
    """One blob version as one function sees it: the receipt's primary key."""

    function: str
    container: str
    name: str
    etag: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """A receipt row as stored."""

    status: str
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class _State:
    name: str
    etag: str
    status: str
    claimable: bool


class ReceiptStore:
    """Blob receipts in PostgreSQL (schema ``devhost``, created here, not by app migrations).

    Args:
        database_url: ``postgresql://`` URL; the app's database is fine.
    """

    def __init__(self, database_url: str) -> None:
        self._pool = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=DB_POOL_SIZE,
            open=False,
            kwargs={"autocommit": True},
        )

    async def open(self) -> None:
        """Connect and create the schema and table when missing."""
        await self._pool.open(wait=True)
        async with self._pool.connection() as conn, conn.transaction():
            # Two hosts starting at once would otherwise race on CREATE ... IF NOT EXISTS.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            await conn.execute(RECEIPTS_DDL)

    async def close(self) -> None:
        """Close the connections."""
        await self._pool.close()

    async def now(self) -> datetime:
        """The database's clock (the receipts' timestamps come from it)."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute("SELECT now()")).fetchone()
        assert row is not None
        value: datetime = row[0]
        return value

    async def register(
        self, function: str, container: str, blobs: list[tuple[str, str]]
    ) -> list[_State]:
        """Add receipts for blob versions not seen before and return the state of each."""
        names = [n for n, _ in blobs]
        etags = [e for _, e in blobs]
        params = {"fn": function, "c": container, "names": names, "etags": etags}
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                INSERT INTO devhost.blob_receipts (function_name, container, blob_name, etag)
                SELECT %(fn)s, %(c)s, n, e FROM unnest(%(names)s::text[], %(etags)s::text[])
                    AS t(n, e)
                ON CONFLICT DO NOTHING
                """,
                params,
            )
            cur = await conn.execute(
                """
                SELECT r.blob_name, r.etag, r.status,
                       (r.status = 'pending' AND r.next_attempt_at <= now())
                       OR (r.status = 'running' AND r.lease_until < now())
                FROM devhost.blob_receipts r
                JOIN unnest(%(names)s::text[], %(etags)s::text[]) AS t(n, e)
                    ON r.blob_name = t.n AND r.etag = t.e
                WHERE r.function_name = %(fn)s AND r.container = %(c)s
                """,
                params,
            )
            rows = await cur.fetchall()
        return [_State(str(n), str(e), str(s), bool(c)) for n, e, s, c in rows]

    async def claim(self, key: BlobKey, owner: str, lease_s: float, max_attempts: int) -> int:
        """Take the receipt for one attempt, atomically.

        Returns:
            The attempt number (1-based); 0 when another owner has it, it is not due, it is
            settled, or its attempts ran out while the owner died (it is then poison).
        """
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                UPDATE devhost.blob_receipts
                SET status = 'running', attempts = attempts + 1, lease_owner = %(owner)s,
                    lease_until = now() + make_interval(secs => %(lease)s), updated_at = now()
                WHERE function_name = %(fn)s AND container = %(c)s AND blob_name = %(n)s
                  AND etag = %(e)s AND attempts < %(max)s
                  AND ((status = 'pending' AND next_attempt_at <= now())
                       OR (status = 'running' AND lease_until < now()))
                RETURNING attempts
                """,
                {**_key_params(key), "owner": owner, "lease": lease_s, "max": max_attempts},
            )
            row = await cur.fetchone()
            if row is not None:
                return int(row[0])
            cur = await conn.execute(
                """
                UPDATE devhost.blob_receipts
                SET status = 'poison', lease_owner = NULL, lease_until = NULL, updated_at = now(),
                    last_error = coalesce(last_error, '') || ' (the last attempt never finished: '
                                 || 'its process stopped while it ran)'
                WHERE function_name = %(fn)s AND container = %(c)s AND blob_name = %(n)s
                  AND etag = %(e)s AND status = 'running' AND lease_until < now()
                  AND attempts >= %(max)s
                RETURNING attempts
                """,
                {**_key_params(key), "max": max_attempts},
            )
            if await cur.fetchone() is not None:
                log.error(
                    "blob is poison: its last attempt never finished",
                    extra={"function": key.function, "blob": f"{key.container}/{key.name}"},
                )
            return 0

    async def renew(self, key: BlobKey, owner: str, lease_s: float) -> bool:
        """Extend the claim of ``owner``; False when it no longer holds it."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                UPDATE devhost.blob_receipts
                SET lease_until = now() + make_interval(secs => %(lease)s)
                WHERE function_name = %(fn)s AND container = %(c)s AND blob_name = %(n)s
                  AND etag = %(e)s AND status = 'running' AND lease_owner = %(owner)s
                """,
                {**_key_params(key), "owner": owner, "lease": lease_s},
            )
            return cur.rowcount == 1

    async def finish(
        self, key: BlobKey, owner: str, status: str, error: str | None = None
    ) -> None:
        """Settle a claimed receipt as ``done`` or ``gone``."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                UPDATE devhost.blob_receipts
                SET status = %(status)s, lease_owner = NULL, lease_until = NULL,
                    last_error = %(error)s, updated_at = now()
                WHERE function_name = %(fn)s AND container = %(c)s AND blob_name = %(n)s
                  AND etag = %(e)s AND lease_owner = %(owner)s
                """,
                {**_key_params(key), "owner": owner, "status": status, "error": error},
            )

    async def release(self, key: BlobKey, owner: str, delay_s: float) -> None:
        """Give a claim back without counting the attempt (the function did not fail)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                UPDATE devhost.blob_receipts
                SET status = 'pending', attempts = attempts - 1, lease_owner = NULL,
                    lease_until = NULL, next_attempt_at = now() + make_interval(secs => %(d)s),
                    updated_at = now()
                WHERE function_name = %(fn)s AND container = %(c)s AND blob_name = %(n)s
                  AND etag = %(e)s AND status = 'running' AND lease_owner = %(owner)s
                """,
                {**_key_params(key), "owner": owner, "d": delay_s},
            )

    async def fail(
        self, key: BlobKey, owner: str, error: str, max_attempts: int, backoff_s: float
    ) -> str:
        """Record a failed attempt: back to ``pending`` after ``backoff_s``, or ``poison``.

        Returns:
            The new status, or ``""`` when ``owner`` no longer held the claim.
        """
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                UPDATE devhost.blob_receipts
                SET status = CASE WHEN attempts >= %(max)s THEN 'poison' ELSE 'pending' END,
                    next_attempt_at = now() + make_interval(secs => %(backoff)s),
                    lease_owner = NULL, lease_until = NULL, last_error = %(error)s,
                    updated_at = now()
                WHERE function_name = %(fn)s AND container = %(c)s AND blob_name = %(n)s
                  AND etag = %(e)s AND lease_owner = %(owner)s
                RETURNING status
                """,
                {
                    **_key_params(key),
                    "owner": owner,
                    "max": max_attempts,
                    "backoff": backoff_s,
                    "error": error,
                },
            )
            row = await cur.fetchone()
        return str(row[0]) if row else ""

    async def close_out_missing(
        self, function: str, container: str, present: list[tuple[str, str]], listed_at: datetime
    ) -> int:
        """Close (``gone``) open receipts whose blob version was absent from a listing.

        Only receipts last touched before ``listed_at`` (the database time taken before the
        listing began) are closed, so a blob another poller saw later is left alone.

        Returns:
            How many receipts were closed.
        """
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                UPDATE devhost.blob_receipts r
                SET status = 'gone', lease_owner = NULL, lease_until = NULL, updated_at = now()
                WHERE r.function_name = %(fn)s AND r.container = %(c)s
                  AND (r.status = 'pending' OR (r.status = 'running' AND r.lease_until < now()))
                  AND r.updated_at < %(listed_at)s
                  AND NOT EXISTS (
                      SELECT 1 FROM unnest(%(names)s::text[], %(etags)s::text[]) AS t(n, e)
                      WHERE t.n = r.blob_name AND t.e = r.etag)
                """,
                {
                    "fn": function,
                    "c": container,
                    "names": [n for n, _ in present],
                    "etags": [e for _, e in present],
                    "listed_at": listed_at,
                },
            )
            return cur.rowcount

    async def get(self, key: BlobKey) -> Receipt | None:
        """The receipt of one blob version, or None."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT status, attempts, last_error FROM devhost.blob_receipts
                WHERE function_name = %(fn)s AND container = %(c)s AND blob_name = %(n)s
                  AND etag = %(e)s
                """,
                _key_params(key),
            )
            row = await cur.fetchone()
        return Receipt(str(row[0]), int(row[1]), row[2]) if row else None


def _key_params(key: BlobKey) -> dict[str, str]:
    return {"fn": key.function, "c": key.container, "n": key.name, "e": key.etag}


@dataclass(frozen=True)
class BlobWatch:
    """A blob-triggered function, its path and the storage account it watches."""

    spec: FunctionSpec
    path: BlobPath
    connection_string: str


def blob_watches(specs: list[FunctionSpec], environ: Mapping[str, str]) -> list[BlobWatch]:
    """Resolve the path and connection of each blob-triggered function.

    Raises:
        ConfigError: a path references a missing setting, or the connection setting is unset.
    """
    watches = []
    for spec in specs:
        path = BlobPath.parse(resolve_setting_refs(str(spec.trigger["path"]), environ))
        setting = str(spec.trigger.get("connection") or DEFAULT_CONNECTION)
        value = environ.get(setting)
        if not value:
            # Limitation: identity-based connections (<setting>__serviceUri) are not served.
            raise ConfigError(f"blob trigger {spec.name}: connection setting {setting} is not set")
        watches.append(BlobWatch(spec, path, value))
    return watches


class _BlobGone(Exception):
    """The blob version was deleted or replaced before it could be read."""


class BlobPoller:
    """Lists the watched containers every interval and invokes each new blob version once.

    Args:
        watches: the blob-triggered functions (see ``blob_watches``).
        store: the receipts, opened.
        invoker: runs the functions.
        settings: interval, attempts, backoff, lease and parallelism.
        owner: a name for this poller in receipts (default host name, pid and a random part).
    """

    def __init__(
        self,
        watches: list[BlobWatch],
        store: ReceiptStore,
        invoker: Invoker,
        settings: HostSettings,
        *,
        owner: str | None = None,
    ) -> None:
        self._watches = watches
        self._store = store
        self._invoker = invoker
        self._settings = settings
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._clients: dict[str, BlobServiceClient] = {}
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(settings.blob_concurrency)
        self._settled: set[BlobKey] = set()
        self._inflight: dict[BlobKey, asyncio.Task[None]] = {}
        self._list_errors: dict[tuple[str, str], str] = {}

    @property
    def containers(self) -> list[str]:
        """The watched containers, each once."""
        return sorted({w.path.container for w in self._watches})

    async def open(self) -> None:
        """Create the storage clients."""
        for watch in self._watches:
            conn = watch.connection_string
            if conn not in self._clients:
                self._clients[conn] = BlobServiceClient.from_connection_string(
                    conn,
                    retry_policy=ExponentialRetry(
                        initial_backoff=1, increment_base=2, retry_total=2
                    ),
                )
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        """Cancel invocations still running on the event loop and close the clients."""
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ensure_containers(self) -> list[str]:
        """Create every watched container that does not exist; returns those created."""
        created = []
        for conn, container in sorted(
            {(w.connection_string, w.path.container) for w in self._watches}
        ):
            client = self._clients[conn].get_container_client(container)
            if not await client.exists():
                with contextlib.suppress(AzureError):
                    await client.create_container()
                    created.append(container)
        return created

    async def run(self, stop: asyncio.Event) -> None:
        """Scan every interval until ``stop`` is set; a failing scan is logged once per cause."""
        last_error = ""
        while not stop.is_set():
            began = time.monotonic()
            try:
                await self.scan_once()
            except Exception as exc:
                if str(exc) != last_error:
                    log.exception(
                        "blob scan failed; retrying every %s s",
                        self._settings.blob_poll_interval_s,
                    )
                last_error = str(exc)
            else:
                if last_error:
                    log.info("blob scanning works again")
                last_error = ""
            pause_s = max(
                self._settings.blob_poll_interval_s,
                SCAN_PAUSE_FACTOR * (time.monotonic() - began),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause_s)

    async def drain(self) -> None:
        """Wait until every invocation this poller started has finished."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)

    # Limitation: every scan lists the whole watched container (from the literal prefix of
    # the paths); with tens of thousands of blobs a scan takes seconds and the pause between
    # scans stretches with it (SCAN_PAUSE_FACTOR). The real host reads storage logs or Event
    # Grid instead, and a ``source="EventGrid"`` trigger is polled here like any other.
    async def scan_once(self) -> int:
        """List each watched container once and start an invocation per due blob version.

        Returns:
            How many invocations were started (they run on; see ``drain``).
        """
        started = 0
        groups: dict[tuple[str, str], list[BlobWatch]] = {}
        for watch in self._watches:
            groups.setdefault((watch.connection_string, watch.path.container), []).append(watch)
        for (conn, container), watches in groups.items():
            listed_at = await self._store.now()
            blobs = await self._list(
                conn, container, _common_prefix([w.path.prefix for w in watches])
            )
            if blobs is None:
                continue
            for watch in watches:
                started += await self._dispatch(watch, blobs, listed_at)
        return started

    async def _list(self, conn: str, container: str, prefix: str) -> list[BlobProperties] | None:
        client = self._clients[conn].get_container_client(container)
        group = (conn, container)
        try:
            blobs = [b async for b in client.list_blobs(name_starts_with=prefix or None)]
        except (AzureError, aiohttp.ClientError, OSError) as exc:
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if self._list_errors.get(group) != message:
                log.warning(
                    "cannot list container %s: %s",
                    container,
                    message,
                    extra={"container": container},
                )
                self._list_errors[group] = message
            return None
        if self._list_errors.pop(group, None) is not None:
            log.info("listing container %s works again", container)
        return blobs

    async def _dispatch(
        self, watch: BlobWatch, blobs: list[BlobProperties], listed_at: datetime
    ) -> int:
        container, fn = watch.path.container, watch.spec.name
        matched = [(b.name, _etag(b)) for b in blobs if watch.path.match(b.name) is not None]
        fresh = [
            k
            for k in matched
            if (key := BlobKey(fn, container, *k)) not in self._settled
            and key not in self._inflight
        ]
        started = 0
        if fresh:
            for state in await self._store.register(fn, container, fresh):
                key = BlobKey(fn, container, state.name, state.etag)
                if state.status in SETTLED:
                    self._settled.add(key)
                elif state.claimable:
                    self._spawn(watch, key)
                    started += 1
        closed = await self._store.close_out_missing(fn, container, matched, listed_at)
        if closed:
            log.info(
                "closed %s receipts of blobs deleted or replaced before their retry",
                closed,
                extra={"function": fn, "container": container},
            )
        return started

    def _spawn(self, watch: BlobWatch, key: BlobKey) -> None:
        task = asyncio.create_task(self._process(watch, key))
        self._inflight[key] = task
        task.add_done_callback(lambda _t, k=key: self._inflight.pop(k, None))  # type: ignore[misc]

    async def _process(self, watch: BlobWatch, key: BlobKey) -> None:
        settings = self._settings
        async with self._slots:
            token = f"{self._owner}:{uuid.uuid4().hex[:8]}"
            attempt = await self._store.claim(
                key, token, settings.blob_lease_s, settings.blob_max_attempts
            )
            if attempt == 0:
                return
            keeper = asyncio.create_task(self._keep_lease(key, token))
            try:
                await self._attempt(watch, key, token, attempt)
            except asyncio.CancelledError:
                # The host is stopping: hand the blob back for the next start, uncounted.
                await asyncio.shield(self._store.release(key, token, 0.0))
                raise
            finally:
                keeper.cancel()

    async def _attempt(self, watch: BlobWatch, key: BlobKey, token: str, attempt: int) -> None:
        settings = self._settings
        blob = f"{key.container}/{key.name}"
        fields: dict[str, Any] = {"blob": blob, "attempt": attempt}
        invocation_id = new_invocation_id()
        started = time.monotonic()
        try:
            stream = await self._download(watch, key)
        except _BlobGone:
            await self._store.finish(key, token, GONE)
            self._settled.add(key)
            log.info("blob deleted or replaced before it was read", extra={"blob": blob})
            return
        except (AzureError, aiohttp.ClientError, OSError) as exc:
            # Storage trouble is not the function's failure: try again later, uncounted.
            delay = max(settings.blob_poll_interval_s, settings.blob_retry_backoff_s)
            await self._store.release(key, token, delay)
            log.warning("could not read blob %s, will try again: %s", blob, exc)
            return
        try:
            await self._invoker.call(
                watch.spec,
                stream,
                invocation_id=invocation_id,
                retry_count=attempt - 1,
                max_retry_count=settings.blob_max_attempts - 1,
            )
        except Exception as exc:  # noqa: BLE001 - the app's failure is recorded, not raised
            log_invocation(watch.spec, invocation_id, started, "failed", failed=True, **fields)
            await self._failed(watch, key, token, attempt, exc)
        else:
            await self._store.finish(key, token, DONE)
            self._settled.add(key)
            log_invocation(watch.spec, invocation_id, started, "ok", **fields)
        finally:
            stream.close()

    async def _failed(
        self, watch: BlobWatch, key: BlobKey, token: str, attempt: int, exc: Exception
    ) -> None:
        settings = self._settings
        blob = f"{key.container}/{key.name}"
        error = f"{type(exc).__name__}: {exc}"
        backoff = min(settings.blob_retry_backoff_s * 2 ** (attempt - 1), BLOB_RETRY_BACKOFF_MAX_S)
        status = await self._store.fail(key, token, error, settings.blob_max_attempts, backoff)
        extra = {"function": key.function, "blob": blob, "attempt": attempt}
        if status == POISON:
            self._settled.add(key)
            log.error(
                "blob is poison after %s attempts; it will not be retried",
                attempt,
                exc_info=exc,
                extra=extra,
            )
            await self._send_poison(watch, key)
        else:
            log.warning(
                "function failed on a blob; retry in %.1f s", backoff, exc_info=exc, extra=extra
            )

    async def _keep_lease(self, key: BlobKey, token: str) -> None:
        interval = self._settings.blob_lease_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self._store.renew(key, token, self._settings.blob_lease_s):
                    log.warning("lost the claim on blob %s/%s", key.container, key.name)
                    return
            except psycopg.Error as exc:
                log.warning("renewing the claim on %s/%s failed: %s", key.container, key.name, exc)

    async def _download(self, watch: BlobWatch, key: BlobKey) -> SpooledInputStream:
        client = self._clients[watch.connection_string].get_blob_client(key.container, key.name)
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
        try:
            downloader = await client.download_blob(
                etag=key.etag, match_condition=MatchConditions.IfNotModified
            )
            await downloader.readinto(spool)
        except (ResourceNotFoundError, ResourceModifiedError):
            spool.close()
            raise _BlobGone from None
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        props = downloader.properties
        return SpooledInputStream(
            spool,
            name=f"{key.container}/{key.name}",
            uri=client.url,
            length=props.size,
            blob_properties=_blob_properties(props, key.etag),
            metadata=dict(props.metadata or {}),
        )

    async def _send_poison(self, watch: BlobWatch, key: BlobKey) -> None:
        account = StorageAccount.from_connection_string(watch.connection_string)
        if account.queue_endpoint is None or self._session is None:
            log.info("no queue service configured; no poison-queue message for %s", key.name)
            return
        message = {
            "Type": "BlobTrigger",
            "FunctionId": f"Host.Functions.{key.function}",
            "BlobType": "BlockBlob",
            "ContainerName": key.container,
            "BlobName": key.name,
            "ETag": key.etag,
        }
        # Queue triggers decode base64 by default, so the host sends base64 too.
        text = base64.b64encode(json.dumps(message).encode()).decode()
        try:
            await QueueClient(account, self._session).put_message(POISON_QUEUE, text)
        except Exception as exc:  # noqa: BLE001 - a queue error must not stop the poller
            log.warning("could not put the poison message on %s: %s", POISON_QUEUE, exc)


def _common_prefix(prefixes: list[str]) -> str:
    """The longest string every prefix starts with."""
    shortest = min(prefixes, key=len, default="")
    for index, char in enumerate(shortest):
        if any(p[index] != char for p in prefixes):
            return shortest[:index]
    return shortest


def _blob_properties(props: BlobProperties, etag: str) -> dict[str, Any]:
    """The ``blob_properties`` the Python worker passes, from the downloaded blob."""
    content = props.content_settings
    md5 = content.content_md5
    return {
        "BlobType": str(getattr(props.blob_type, "value", props.blob_type)),
        "ContentType": content.content_type,
        "ContentEncoding": content.content_encoding,
        "ContentMD5": base64.b64encode(md5).decode() if md5 else None,
        "ETag": etag,
        "LastModified": props.last_modified.isoformat() if props.last_modified else None,
        "Length": props.size,
    }


def _etag(blob: BlobProperties) -> str:
    return str(blob.etag).strip('"')
