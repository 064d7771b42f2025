"""The host: serves an app's HTTP, blob, timer and Service Bus triggers; ``run`` also brings up
its services.

``run`` is the body of ``make run``: settings, PostgreSQL, Azurite, migrations, containers,
the app, then serving until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from types import FrameType
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from devhost.blobs import DEFAULT_CONNECTION, BlobPoller, ReceiptStore, blob_watches
from devhost.discovery import (
    BLOB_TRIGGER,
    HTTP_TRIGGER,
    SERVICE_BUS_TRIGGER,
    TIMER_TRIGGER,
    LoadedApp,
    load_app,
)
from devhost.durable import DurableEngine, TaskHub
from devhost.durable_api import DurableApi, client_binding, close_client_session
from devhost.errors import ConfigError, ServiceError
from devhost.http_server import HttpServer
from devhost.invoke import Invoker
from devhost.logs import setup_console_logging
from devhost.servicebus import BusDispatcher, bus_watches
from devhost.services import (
    apply_migrations,
    start_azurite,
    start_postgres,
)
from devhost.settings import (
    DEFAULT_FUNCTION_KEY,
    DEFAULT_MASTER_KEY,
    HostSettings,
    ServiceSettings,
    load_local_settings,
    read_host_json,
)
from devhost.storage import development_storage_ports, is_development_storage
from devhost.timers import TimerRunner, time_zone, timer_jobs
from devhost.workers import HttpWorkers

log = logging.getLogger(__name__)

# How long stopping waits for functions still running before it leaves them.
STOP_GRACE_S = 10.0
# How often the first process checks that its HTTP worker processes are still running.
WORKER_CHECK_S = 1.0
DATA_DIR_LOCK_FILE = "devhost.lock"


class _Service(Protocol):
    def stop(self) -> None: ...


# A started service (None when an outside one is used) and the database URL it gives.
_Started = tuple[_Service | None, str | None]
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class DevHost:
    """Serves one loaded app until ``stop()``.

    Args:
        app: the app (``load_app``).
        settings: how to serve it.
        database_url: where blob receipts and the local broker live; needed only when the
            app has blob triggers or Service Bus triggers without a namespace.
        environ: settings for ``%NAME%`` references and storage connections; default
            ``os.environ``.
    """

    def __init__(
        self,
        app: LoadedApp,
        settings: HostSettings,
        *,
        database_url: str | None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self._environ = os.environ if environ is None else environ
        self._database_url = database_url
        self.invoker = Invoker(settings.thread_count, str(app.script_path.parent))
        self.http = HttpServer(app, self.invoker, settings)
        self.poller: BlobPoller | None = None
        self.bus: BusDispatcher | None = None
        self._store: ReceiptStore | None = None
        self.task_hub: TaskHub | None = None
        self.durable: DurableEngine | None = None
        self.workers: HttpWorkers | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start serving: containers created, HTTP, then blob polling, Service Bus and timers.

        Raises:
            ConfigError: a blob path, queue, connection or timer schedule is invalid, or blob
                or local Service Bus triggers exist but there is no database for them.
        """
        watches = blob_watches(self.app.by_trigger(BLOB_TRIGGER), self._environ)
        queues = bus_watches(self.app.by_trigger(SERVICE_BUS_TRIGGER), self._environ)
        jobs = timer_jobs(
            self.app.by_trigger(TIMER_TRIGGER), self._environ, time_zone(self.settings.time_zone)
        )
        if self.app.uses_durable:
            await self._start_durable()
        # Containers exist before the first request is answered: a client told the host is
        # up may drop a file at once.
        if watches:
            if not self._database_url:
                raise ConfigError("blob triggers need DATABASE_URL for their receipts")
            self._store = ReceiptStore(self._database_url)
            await self._store.open()
            self.poller = BlobPoller(watches, self._store, self.invoker, self.settings)
            await self.poller.open()
            created = await self.poller.ensure_containers()
            if created:
                log.info("created containers: %s", ", ".join(created))
        if self.settings.http_processes > 1:
            # Worker processes answer HTTP; this one keeps the triggers, so that their work
            # never delays an answer.
            self.workers = HttpWorkers(
                self.app.script_path.parent, self.settings.http_port, self.settings.http_processes
            )
            await asyncio.get_running_loop().run_in_executor(None, self.workers.start)
            self.http.port = self.workers.port
            self._tasks.append(asyncio.create_task(self._keep_workers(self.workers)))
        else:
            await self.http.start()
        if self.task_hub is not None:
            self.invoker.durable_client = client_binding(
                f"http://127.0.0.1:{self.http.port}", self.task_hub.hub, self.settings.function_key
            )
        if self.poller is not None:
            self._tasks.append(asyncio.create_task(self.poller.run(self._stop)))
        if queues:
            self.bus = BusDispatcher(
                queues, self.invoker, self.settings, database_url=self._database_url
            )
            await self.bus.open()
            self._tasks.append(asyncio.create_task(self.bus.run(self._stop)))
        if jobs:
            self._tasks.append(
                asyncio.create_task(TimerRunner(jobs, self.invoker).run(self._stop))
            )

    async def _keep_workers(self, workers: HttpWorkers) -> None:
        """Start a new HTTP worker process in place of one that died, until stopped."""
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), WORKER_CHECK_S)
            if self._stop.is_set():
                return
            try:
                await loop.run_in_executor(None, workers.replace_exited)
            except ServiceError as exc:
                if not self._stop.is_set():
                    log.error("%s; trying again", exc)

    async def _start_durable(self) -> None:
        """Open the task hub, serve its management API, and run orchestrations."""
        if not self._database_url:
            raise ConfigError("Durable Functions need DATABASE_URL for the task hub")
        self.task_hub = TaskHub(self._database_url, self.settings.durable_hub)
        await self.task_hub.open()
        self.durable = DurableEngine(
            self.app,
            self.task_hub,
            self.invoker,
            workers=self.settings.durable_workers,
            lease_s=self.settings.durable_lease_s,
            poll_interval_s=self.settings.durable_poll_interval_s,
        )
        self.http.add_routes(DurableApi(self.task_hub, self.durable).routes())
        self._tasks.append(asyncio.create_task(self.durable.run(self._stop)))

    async def stop(
        self, *, grace_s: float = STOP_GRACE_S, force: asyncio.Event | None = None
    ) -> None:
        """Stop serving; functions still running get ``grace_s`` seconds (less if ``force``)."""
        self._stop.set()
        if self.workers is not None:
            stop_workers = functools.partial(self.workers.stop, grace_s=grace_s)
            await asyncio.get_running_loop().run_in_executor(None, stop_workers)
        await self.http.stop()
        pending = asyncio.ensure_future(self._wind_down())
        stoppers = [pending] + ([asyncio.ensure_future(force.wait())] if force else [])
        await asyncio.wait(stoppers, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
        if not pending.done():
            # Limitation: a sync function still running here cannot be interrupted; the
            # process exits only when it returns (services are stopped before that).
            log.warning("functions still running are left to end on their own")
        for task in [*self._tasks, *stoppers]:
            task.cancel()
        if self.poller is not None:
            await self.poller.close()
        if self.bus is not None:
            await self.bus.close()
        if self._store is not None:
            await self._store.close()
        if self.task_hub is not None:
            await self.task_hub.close()
        await close_client_session()
        self.invoker.shutdown(wait=False)

    async def _wind_down(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.poller is not None:
            await self.poller.drain()
        if self.bus is not None:
            await self.bus.drain()

    def describe(self) -> Iterator[str]:
        """Lines for the start-up listing: one per function, with trigger and route."""
        routes = {r.function.name: r for r in self.http.routes}
        width = max((len(f.name) for f in self.app.functions), default=0)
        for spec in self.app.functions:
            kind = spec.trigger_type.removesuffix("Trigger")
            if spec.trigger_type == HTTP_TRIGGER:
                route = routes[spec.name]
                methods = ",".join(sorted(route.methods)) if route.methods else "ANY"
                detail = f"{methods} {self.http.url_of(route)} [{route.auth_level}]"
            elif spec.trigger_type == BLOB_TRIGGER:
                detail = str(spec.trigger.get("path"))
            elif spec.trigger_type == SERVICE_BUS_TRIGGER:
                detail = str(
                    spec.trigger.get("queueName")
                    or f"{spec.trigger.get('topicName')}/{spec.trigger.get('subscriptionName')}"
                )
                if spec.trigger.get("isSessionsEnabled"):
                    detail += " (sessions)"
            elif spec.trigger_type == TIMER_TRIGGER:
                detail = str(spec.trigger.get("schedule"))
                if spec.trigger.get("runOnStartup"):
                    detail += " (and on start-up)"
            else:
                detail = ""
            if not spec.served:
                detail = f"{detail} NOT SERVED: {spec.unserved}".strip()
            yield f"  {spec.name:<{width}}  {kind:<13} {detail}"


def redact_url(url: str) -> str:
    """A database URL with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _embedded_postgres_wanted(url: str | None, pg_port: int) -> bool:
    if not url:
        return True
    parts = urlsplit(url)
    return parts.hostname in _LOCAL_HOSTS and (parts.port or 5432) == pg_port


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(app_dir: Path, *, http_port: int | None = None, migrations_dir: Path | None = None) -> int:
    """Bring up everything ``make run`` needs and serve until SIGINT or SIGTERM.

    Args:
        app_dir: directory of ``function_app.py``, ``host.json`` and ``local.settings.json``.
        http_port: port for HTTP triggers; default ``Host.LocalHttpPort`` or 7071.
        migrations_dir: default ``<app_dir>/migrations`` (skipped when it does not exist).

    Returns:
        The process exit code (0 after a clean stop).
    """
    started = time.monotonic()
    setup_console_logging(os.environ.get("DEVHOST_LOG_LEVEL", "INFO"))
    app_dir = app_dir.resolve()
    local = load_local_settings(app_dir)
    setup_console_logging(os.environ.get("DEVHOST_LOG_LEVEL", "INFO"))
    settings = HostSettings.from_env(
        host_json=read_host_json(app_dir), http_port=http_port or local.http_port
    )
    services = ServiceSettings.from_env(app_dir)
    # Until the event loop takes over, SIGTERM unwinds like Ctrl-C so services are stopped.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    previous_hup = signal.signal(signal.SIGHUP, _raise_interrupt)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_data_dir_lock(services.data_dir))
            admin_url = _start_services(stack, services)
            if migrations_dir is not None and not migrations_dir.is_dir():
                raise ConfigError(f"migrations directory {migrations_dir} does not exist")
            migrations = migrations_dir or app_dir / "migrations"
            if admin_url and migrations.is_dir():
                applied = apply_migrations(admin_url, migrations)
                log.info("migrations up to date (%s applied now)", len(applied))
            loading = time.monotonic()
            app = load_app(app_dir)
            # What the import made lives as long as the process: kept out of the collector's
            # full passes, which then stay short (no pauses in the answers' tail).
            gc.freeze()
            log.info(
                "app imported",
                extra={
                    "functions": len(app.functions),
                    "duration_ms": int((time.monotonic() - loading) * 1000),
                },
            )
            asyncio.run(_serve(app, settings, admin_url, started))
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)
    return 0


@contextlib.contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold ``<data_dir>/devhost.lock`` so that a second ``run`` on it stops at once.

    The lock goes with the process, so a killed run leaves nothing to clean up.

    Raises:
        ServiceError: another running devhost holds the lock.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / DATA_DIR_LOCK_FILE).open("a+") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "unknown"
            raise ServiceError(
                f"another devhost (pid {holder}) is running on {data_dir}; stop it first, or "
                "give this one its own DEVHOST_DATA_DIR and ports"
            ) from None
        lock_file.truncate(0)
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _start_services(stack: contextlib.ExitStack, services: ServiceSettings) -> str | None:
    """Start PostgreSQL and Azurite side by side; ``stack`` stops whichever started.

    Returns:
        The URL for migrations and receipts (the superuser's, for the embedded server).
    """
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="devhost-start")
    futures: list[Future[_Started]] = [
        pool.submit(_database, services),
        pool.submit(_storage, services),
    ]
    try:
        wait(futures)
    finally:
        # Even when interrupted, let both finish so that what started is also stopped.
        pool.shutdown(wait=True)
        for future in futures:
            handle = future.result()[0] if future.exception() is None else None
            if handle is not None:
                stack.callback(handle.stop)
    url = futures[0].result()[1]
    futures[1].result()
    return url


def _database(services: ServiceSettings) -> _Started:
    """Start the embedded PostgreSQL unless DATABASE_URL names another server."""
    url = os.environ.get("DATABASE_URL")
    if not _embedded_postgres_wanted(url, services.pg_port):
        log.info("using DATABASE_URL %s; no embedded PostgreSQL", redact_url(str(url)))
        return None, url
    database = urlsplit(url).path.lstrip("/") if url else ""
    handle = start_postgres(
        services.data_dir / "pg", services.pg_port, database=database or "advisoros"
    )
    if not url:
        os.environ["DATABASE_URL"] = handle.url
    return handle, handle.url


def _storage(services: ServiceSettings) -> _Started:
    """Start Azurite when AzureWebJobsStorage is the local emulator (or unset)."""
    value = os.environ.get(DEFAULT_CONNECTION)
    if not is_development_storage(value):
        log.info("AzureWebJobsStorage is not the local emulator; no Azurite started")
        return None, None
    blob_port, queue_port = development_storage_ports(value)
    handle = start_azurite(
        services.data_dir / "azurite",
        blob_port or services.azurite_blob_port,
        queue_port or services.azurite_queue_port,
    )
    os.environ[DEFAULT_CONNECTION] = handle.connection_string
    # Other connection settings naming the emulator get the ports actually used.
    for name, setting in list(os.environ.items()):
        if setting.strip().lower() == "usedevelopmentstorage=true":
            os.environ[name] = handle.connection_string
    return handle, None


async def _serve(
    app: LoadedApp, settings: HostSettings, database_url: str | None, t0: float
) -> None:
    host = DevHost(app, settings, database_url=database_url)
    stop, force = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(name: str) -> None:
        if stop.is_set():
            log.warning("%s again: not waiting for running functions", name)
            force.set()
            return
        log.info("%s: stopping", name)
        stop.set()

    # SIGHUP too: closing the terminal must not leave Postgres and Azurite behind.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await host.start()
        _print_listing(host, database_url, t0)
        await stop.wait()
    finally:
        await host.stop(force=force)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _print_listing(host: DevHost, database_url: str | None, t0: float) -> None:
    lines = [
        f"devhost: app {host.app.script_path} ({len(host.app.functions)} functions)",
        f"  HTTP      {host.http.base_url}/<route>",
    ]
    if database_url:
        lines.append(f"  Postgres  {redact_url(database_url)}")
    storage = os.environ.get(DEFAULT_CONNECTION)
    if storage and is_development_storage(storage):
        blob_port, _ = development_storage_ports(storage)
        lines.append(f"  Azurite   http://127.0.0.1:{blob_port}/devstoreaccount1")
    settings = host.settings
    function_key = (
        settings.function_key
        if settings.function_key == DEFAULT_FUNCTION_KEY
        else "<DEVHOST_FUNCTION_KEY>"
    )
    master_key = (
        settings.master_key
        if settings.master_key == DEFAULT_MASTER_KEY
        else "<DEVHOST_MASTER_KEY>"
    )
    lines.append(f"  keys      [function] ?code={function_key}  [admin] ?code={master_key}")
    lines.append("functions:")
    lines.extend(host.describe())
    lines.append(f"ready in {time.monotonic() - t0:.1f} s; Ctrl-C stops everything")
    print("\n".join(lines), flush=True)
    for spec in host.app.functions:
        if not spec.served:
            log.warning("function %s is not served: %s", spec.name, spec.unserved)
    sys.stdout.flush()
