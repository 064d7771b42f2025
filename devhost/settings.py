"""Settings of the local host: ``local.settings.json``, ``host.json`` and ``DEVHOST_*`` values.

Every name read here is listed in ``SETTINGS`` with its default and meaning.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devhost.errors import ConfigError
from devhost.services import (
    AZURITE_BLOB_DEFAULT_PORT,
    AZURITE_QUEUE_DEFAULT_PORT,
    PG_DEFAULT_PORT,
)

log = logging.getLogger(__name__)

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)$")
LOCAL_SETTINGS_FILE = "local.settings.json"
LOCAL_SETTINGS_EXAMPLE_FILE = "local.settings.example.json"
HOST_JSON_FILE = "host.json"

DEFAULT_HTTP_PORT = 7071
DEFAULT_ROUTE_PREFIX = "api"
# Fixed, documented keys so that a local caller can pass ``?code=``; never valid in Azure.
DEFAULT_FUNCTION_KEY = "devhost-function-key"
DEFAULT_MASTER_KEY = "devhost-master-key"
DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024
DEFAULT_BLOB_POLL_INTERVAL_S = 1.0
DEFAULT_BLOB_MAX_ATTEMPTS = 5
DEFAULT_BLOB_RETRY_BACKOFF_S = 1.0
BLOB_RETRY_BACKOFF_MAX_S = 30.0
DEFAULT_BLOB_LEASE_S = 60.0
DEFAULT_BUS_POLL_INTERVAL_S = 0.5
DEFAULT_BUS_RETRY_BACKOFF_S = 1.0
BUS_RETRY_BACKOFF_MAX_S = 30.0
# The Functions host's defaults for extensions.serviceBus in host.json.
DEFAULT_BUS_MAX_CONCURRENT_CALLS = 16 * (os.cpu_count() or 1)
DEFAULT_BUS_MAX_CONCURRENT_SESSIONS = 8
DEFAULT_BUS_MAX_LOCK_RENEWAL_S = 300.0
DEFAULT_BUS_MAX_MESSAGE_BATCH_SIZE = 1000
# The Functions host takes 1 to 10 language worker processes.
MAX_WORKER_PROCESSES = 10

# name -> (default, meaning); the README and local.settings.example.json list the same.
SETTINGS: dict[str, tuple[str, str]] = {
    "AzureWebJobsStorage": (
        "local Azurite",
        "storage the blob triggers watch; the local emulator (UseDevelopmentStorage=true or "
        "a devstoreaccount1 string on 127.0.0.1) makes `run` start Azurite on its ports",
    ),
    "DATABASE_URL": (
        "embedded PostgreSQL",
        "database of the app and of the devhost's receipts; unset, or pointing at "
        "127.0.0.1:DEVHOST_PG_PORT, makes `run` start the embedded PostgreSQL",
    ),
    "ServiceBusConnection": (
        "unset",
        "unset or empty: Service Bus triggers read the local broker in DATABASE_URL; a "
        "connection string (or <name>__fullyQualifiedNamespace) makes them read that "
        "namespace; the same holds for any setting a trigger names in connection=",
    ),
    "DEVHOST_DATA_DIR": (
        "<app dir>/.local",
        "where the embedded PostgreSQL and Azurite keep data",
    ),
    "DEVHOST_PG_PORT": (str(PG_DEFAULT_PORT), "TCP port of the embedded PostgreSQL"),
    "DEVHOST_AZURITE_BLOB_PORT": (str(AZURITE_BLOB_DEFAULT_PORT), "Azurite blob port"),
    "DEVHOST_AZURITE_QUEUE_PORT": (str(AZURITE_QUEUE_DEFAULT_PORT), "Azurite queue port"),
    "AZURITE_BIN_DIR": ("<repo>/node_modules/.bin", "where azurite-blob/azurite-queue live"),
    "DEVHOST_FUNCTION_KEY": (
        DEFAULT_FUNCTION_KEY,
        "key (?code= or x-functions-key) for FUNCTION-level HTTP routes",
    ),
    "DEVHOST_MASTER_KEY": (DEFAULT_MASTER_KEY, "key for ADMIN-level routes; valid for all"),
    "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": (
        str(DEFAULT_MAX_BODY_BYTES),
        "largest HTTP request body in bytes; larger gets 413",
    ),
    "PYTHON_THREADPOOL_THREAD_COUNT": (
        "min(32, cores + 4)",
        "threads that run sync functions",
    ),
    "FUNCTIONS_WORKER_PROCESS_COUNT": (
        "1",
        f"processes that serve HTTP triggers on the one port (1 to {MAX_WORKER_PROCESSES}); "
        "above 1 they are started beside the first process, which then keeps the timers, "
        "blob, Service Bus and Durable work and answers no HTTP",
    ),
    "PYTHON_SCRIPT_FILE_NAME": ("function_app.py", "the app's entry module file"),
    "DEVHOST_BLOB_POLL_INTERVAL_S": (
        str(DEFAULT_BLOB_POLL_INTERVAL_S),
        "seconds between two listings of a watched container",
    ),
    "DEVHOST_BLOB_MAX_ATTEMPTS": (
        "host.json extensions.blobs.poisonBlobThreshold, else 5",
        "attempts of a blob before it is poison",
    ),
    "DEVHOST_BLOB_RETRY_BACKOFF_S": (
        str(DEFAULT_BLOB_RETRY_BACKOFF_S),
        f"delay before the first retry of a blob; doubles per attempt, at most "
        f"{BLOB_RETRY_BACKOFF_MAX_S:g} s",
    ),
    "DEVHOST_BLOB_LEASE_S": (
        str(DEFAULT_BLOB_LEASE_S),
        "seconds a claimed blob stays claimed without renewal (a dead process's claim "
        "expires after this)",
    ),
    "DEVHOST_BUS_POLL_INTERVAL_S": (
        str(DEFAULT_BUS_POLL_INTERVAL_S),
        "seconds between two looks at an empty queue of the local broker",
    ),
    "DEVHOST_BUS_RETRY_BACKOFF_S": (
        str(DEFAULT_BUS_RETRY_BACKOFF_S),
        f"delay before a failed Service Bus message is delivered again; doubles per "
        f"delivery, at most {BUS_RETRY_BACKOFF_MAX_S:g} s (Service Bus itself redelivers at "
        f"once; 0 does the same)",
    ),
    "WEBSITE_TIME_ZONE": ("UTC", "IANA time zone of the timer schedules"),
    "DEVHOST_LOG_LEVEL": ("INFO", "console log level"),
}


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """What ``load_local_settings`` read."""

    path: Path | None
    applied: tuple[str, ...]
    http_port: int | None


def load_local_settings(
    app_dir: Path, environ: MutableMapping[str, str] | None = None
) -> LocalSettings:
    """Copy the ``Values`` of ``local.settings.json`` into the environment.

    Variables already set win, as with ``func start``. Without ``local.settings.json`` the
    example file is read instead, and a log line says so.

    Args:
        app_dir: the directory of ``function_app.py``.
        environ: the mapping to fill, default ``os.environ``.

    Returns:
        The file read (None when neither exists), the names applied and ``Host.LocalHttpPort``.

    Raises:
        ConfigError: the file is not valid JSON, is encrypted, or has non-string values.
    """
    env = os.environ if environ is None else environ
    path = app_dir / LOCAL_SETTINGS_FILE
    if not path.exists():
        example = app_dir / LOCAL_SETTINGS_EXAMPLE_FILE
        if not example.exists():
            log.warning("no %s nor %s in %s", LOCAL_SETTINGS_FILE, example.name, app_dir)
            return LocalSettings(None, (), None)
        log.info("%s not found; using %s", LOCAL_SETTINGS_FILE, example.name)
        path = example

    data = _read_json(path)
    if data.get("IsEncrypted"):
        raise ConfigError(f"{path} is encrypted (IsEncrypted: true); the devhost reads plain text")
    values = data.get("Values", {})
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: Values must be an object")
    applied = []
    for name, value in values.items():
        if not isinstance(value, str):
            raise ConfigError(f"{path}: Values.{name} must be a string, not {value!r}")
        if name not in env:
            env[name] = value
            applied.append(name)
    host = data.get("Host", {})
    port = host.get("LocalHttpPort") if isinstance(host, dict) else None
    return LocalSettings(path, tuple(applied), int(port) if port is not None else None)


@dataclass(frozen=True, slots=True)
class HostJson:
    """The parts of ``host.json`` the devhost honours."""

    route_prefix: str = DEFAULT_ROUTE_PREFIX
    poison_blob_threshold: int | None = None
    blob_parallelism: int | None = None
    bus_max_concurrent_calls: int | None = None
    bus_max_concurrent_sessions: int | None = None
    bus_max_lock_renewal_s: float | None = None
    bus_max_message_batch_size: int | None = None
    durable_hub: str | None = None


def read_host_json(app_dir: Path) -> HostJson:
    """Read ``extensions.http.routePrefix`` and the blob and Service Bus extension settings.

    Raises:
        ConfigError: host.json is not valid JSON.
    """
    path = app_dir / HOST_JSON_FILE
    if not path.exists():
        return HostJson()
    extensions = _read_json(path).get("extensions", {})
    http = extensions.get("http", {})
    blobs = extensions.get("blobs", {})
    prefix = http.get("routePrefix", DEFAULT_ROUTE_PREFIX)
    threshold = blobs.get("poisonBlobThreshold")
    parallelism = blobs.get("maxDegreeOfParallelism")
    bus = extensions.get("serviceBus", {})
    calls = bus.get("maxConcurrentCalls")
    sessions = bus.get("maxConcurrentSessions")
    renewal = bus.get("maxAutoLockRenewalDuration")
    batch = bus.get("maxMessageBatchSize")
    return HostJson(
        route_prefix=str(prefix).strip("/"),
        poison_blob_threshold=int(threshold) if threshold is not None else None,
        blob_parallelism=int(parallelism) if parallelism is not None else None,
        bus_max_concurrent_calls=int(calls) if calls is not None else None,
        bus_max_concurrent_sessions=int(sessions) if sessions is not None else None,
        bus_max_lock_renewal_s=_timespan_s(str(renewal)) if renewal is not None else None,
        bus_max_message_batch_size=int(batch) if batch is not None else None,
        durable_hub=extensions.get("durableTask", {}).get("hubName"),
    )


def _timespan_s(text: str) -> float:
    """Seconds of a host.json TimeSpan such as ``00:05:00`` or ``1.00:00:00``.

    Raises:
        ConfigError: the text is not a TimeSpan.
    """
    found = _TIMESPAN.match(text.strip())
    if found is None:
        raise ConfigError(f"host.json: {text!r} is not a TimeSpan ([d.]hh:mm:ss)")
    days, hours, minutes, seconds = found.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass(frozen=True, slots=True)
class HostSettings:
    """How the host serves the app; ``from_env`` fills it from the environment and host.json."""

    http_port: int = DEFAULT_HTTP_PORT
    route_prefix: str = DEFAULT_ROUTE_PREFIX
    function_key: str = DEFAULT_FUNCTION_KEY
    master_key: str = DEFAULT_MASTER_KEY
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    thread_count: int = min(32, (os.cpu_count() or 1) + 4)
    http_processes: int = 1
    blob_poll_interval_s: float = DEFAULT_BLOB_POLL_INTERVAL_S
    blob_max_attempts: int = DEFAULT_BLOB_MAX_ATTEMPTS
    blob_retry_backoff_s: float = DEFAULT_BLOB_RETRY_BACKOFF_S
    blob_lease_s: float = DEFAULT_BLOB_LEASE_S
    blob_concurrency: int = 8 * (os.cpu_count() or 1)
    bus_poll_interval_s: float = DEFAULT_BUS_POLL_INTERVAL_S
    bus_retry_backoff_s: float = DEFAULT_BUS_RETRY_BACKOFF_S
    bus_max_concurrent_calls: int = DEFAULT_BUS_MAX_CONCURRENT_CALLS
    bus_max_concurrent_sessions: int = DEFAULT_BUS_MAX_CONCURRENT_SESSIONS
    bus_max_lock_renewal_s: float = DEFAULT_BUS_MAX_LOCK_RENEWAL_S
    bus_max_message_batch_size: int = DEFAULT_BUS_MAX_MESSAGE_BATCH_SIZE
    time_zone: str | None = None
    durable_hub: str = "DevhostHub"
    durable_workers: int = 4
    durable_lease_s: float = 30.0
    durable_poll_interval_s: float = 0.1

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        host_json: HostJson | None = None,
        *,
        http_port: int | None = None,
    ) -> HostSettings:
        """Build the settings from ``environ`` (default ``os.environ``) and ``host_json``.

        Raises:
            ConfigError: a value is not a number or out of range; the message names it.
        """
        env = os.environ if environ is None else environ
        hj = host_json or HostJson()
        base = cls()
        return cls(
            http_port=http_port or DEFAULT_HTTP_PORT,
            route_prefix=hj.route_prefix,
            function_key=env.get("DEVHOST_FUNCTION_KEY") or DEFAULT_FUNCTION_KEY,
            master_key=env.get("DEVHOST_MASTER_KEY") or DEFAULT_MASTER_KEY,
            max_body_bytes=env_int(env, "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", base.max_body_bytes),
            thread_count=env_int(env, "PYTHON_THREADPOOL_THREAD_COUNT", base.thread_count),
            http_processes=_process_count(env),
            blob_poll_interval_s=env_float(
                env, "DEVHOST_BLOB_POLL_INTERVAL_S", base.blob_poll_interval_s
            ),
            blob_max_attempts=env_int(
                env,
                "DEVHOST_BLOB_MAX_ATTEMPTS",
                hj.poison_blob_threshold or DEFAULT_BLOB_MAX_ATTEMPTS,
            ),
            blob_retry_backoff_s=env_float(
                env, "DEVHOST_BLOB_RETRY_BACKOFF_S", base.blob_retry_backoff_s, minimum=0.0
            ),
            blob_lease_s=env_float(env, "DEVHOST_BLOB_LEASE_S", base.blob_lease_s),
            blob_concurrency=hj.blob_parallelism or base.blob_concurrency,
            bus_poll_interval_s=env_float(
                env, "DEVHOST_BUS_POLL_INTERVAL_S", base.bus_poll_interval_s
            ),
            bus_retry_backoff_s=env_float(
                env, "DEVHOST_BUS_RETRY_BACKOFF_S", base.bus_retry_backoff_s, minimum=0.0
            ),
            bus_max_concurrent_calls=hj.bus_max_concurrent_calls or base.bus_max_concurrent_calls,
            bus_max_concurrent_sessions=(
                hj.bus_max_concurrent_sessions or base.bus_max_concurrent_sessions
            ),
            bus_max_lock_renewal_s=hj.bus_max_lock_renewal_s or base.bus_max_lock_renewal_s,
            bus_max_message_batch_size=(
                hj.bus_max_message_batch_size or base.bus_max_message_batch_size
            ),
            durable_hub=hj.durable_hub or base.durable_hub,
            durable_workers=env_int(env, "DEVHOST_DURABLE_WORKERS", base.durable_workers),
            durable_lease_s=env_float(env, "DEVHOST_DURABLE_LEASE_S", base.durable_lease_s),
            durable_poll_interval_s=env_float(
                env, "DEVHOST_DURABLE_POLL_INTERVAL_S", base.durable_poll_interval_s
            ),
            time_zone=env.get("WEBSITE_TIME_ZONE") or None,
        )


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Where and on which ports ``run`` starts PostgreSQL and Azurite."""

    data_dir: Path
    pg_port: int = PG_DEFAULT_PORT
    azurite_blob_port: int = AZURITE_BLOB_DEFAULT_PORT
    azurite_queue_port: int = AZURITE_QUEUE_DEFAULT_PORT

    @classmethod
    def from_env(cls, app_dir: Path, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        """Read ``DEVHOST_DATA_DIR`` and the ``DEVHOST_*_PORT`` settings.

        Raises:
            ConfigError: a port is not a number; the message names the setting.
        """
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("DEVHOST_DATA_DIR") or app_dir / ".local")
        return cls(
            data_dir=data_dir if data_dir.is_absolute() else app_dir / data_dir,
            pg_port=env_int(env, "DEVHOST_PG_PORT", PG_DEFAULT_PORT),
            azurite_blob_port=env_int(env, "DEVHOST_AZURITE_BLOB_PORT", AZURITE_BLOB_DEFAULT_PORT),
            azurite_queue_port=env_int(
                env, "DEVHOST_AZURITE_QUEUE_PORT", AZURITE_QUEUE_DEFAULT_PORT
            ),
        )


def _process_count(env: Mapping[str, str]) -> int:
    count = env_int(env, "FUNCTIONS_WORKER_PROCESS_COUNT", 1)
    if count > MAX_WORKER_PROCESSES:
        raise ConfigError(
            f"setting FUNCTIONS_WORKER_PROCESS_COUNT must be at most {MAX_WORKER_PROCESSES},"
            f" not {count}"
        )
    return count


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    """Read an integer setting, ``default`` when unset or empty.

    Raises:
        ConfigError: the value is not an integer of at least ``minimum``.
    """
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"setting {name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"setting {name} must be at least {minimum}, not {value}")
    return value


def env_float(
    env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.001
) -> float:
    """Read a number setting, ``default`` when unset or empty.

    Raises:
        ConfigError: the value is not a number of at least ``minimum``.
    """
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"setting {name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"setting {name} must be at least {minimum:g}, not {value:g}")
    return value


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data
