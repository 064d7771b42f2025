"""Local services the host runs beside the app: embedded PostgreSQL, Azurite, migrations.

``python -m devhost run`` and the test fixtures start them through the same functions.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from yoyo import get_backend, read_migrations

from devhost.errors import ConfigError, MigrationError, ServiceError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"

PG_DEFAULT_PORT = 54329
PG_DATABASE = "advisoros"
PG_SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; as root the cluster belongs to this system user.
PG_SYSTEM_USER = "pgserver"
PG_START_TIMEOUT_S = 30
# Sized like a small server rather than initdb's defaults (128 MB of buffers, 1 GB of WAL
# between checkpoints), so that a million-row import neither writes back its own dirty
# pages nor forces checkpoints halfway through.
PG_TUNING = (
    "-c", "shared_buffers=512MB", "-c", "max_wal_size=4GB", "-c", "wal_buffers=16MB",
    "-c", "checkpoint_timeout=15min",
)  # fmt: skip
PG_STOP_TIMEOUT_S = 30
PG_LOG_FILE = "devhost-postgres.log"
PG_SHMEM_RETRIES = 10
# Unix socket paths longer than this (107 bytes on Linux, less elsewhere) cannot be bound.
PG_SOCKET_PATH_MAX = 100

AZURITE_BLOB_DEFAULT_PORT = 10000
AZURITE_QUEUE_DEFAULT_PORT = 10001
AZURITE_ACCOUNT = "devstoreaccount1"
# The emulator's published well-known key: identical in every Azurite install, not a secret.
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_START_TIMEOUT_S = 30
AZURITE_STOP_TIMEOUT_S = 10

# Serialises migration runs of several devhost processes on one database.
_MIGRATION_LOCK_KEY = 0x0DE7_4057
_MIGRATION_NAME = re.compile(r"^(\d+)[_-].+\.sql$")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    Returns:
        A port number; another process may still take it before the caller binds it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    """Tell whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rpartition(")")[2].split()[:1] != ["Z"]


def _cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid`` from /proc, or None where /proc does not tell."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


# -- PostgreSQL --------------------------------------------------------------------------


class _StopsOnExit:
    """A service handle usable in ``with``: leaving the block stops the service."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PostgresHandle(_StopsOnExit):
    """A PostgreSQL cluster listening on 127.0.0.1; ``stop()`` shuts it down (fast mode).

    Use as a context manager, or call ``stop()``; see ``start_postgres``.
    """

    def __init__(
        self, *, data_dir: Path, port: int, database: str, run_as: str | None, bin_dir: Path
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.database = database
        self._run_as = run_as
        self._bin_dir = bin_dir

    @property
    def url(self) -> str:
        """Connection URL of the app database, e.g. ``postgresql://postgres@127.0.0.1:54329/advisoros``."""
        return f"postgresql://{PG_SUPERUSER}@{LOOPBACK}:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        """Connection URL of the ``postgres`` maintenance database."""
        return f"postgresql://{PG_SUPERUSER}@{LOOPBACK}:{self.port}/postgres"

    def is_running(self) -> bool:
        """Tell whether the postmaster of this data directory is alive."""
        return _live_postmaster(self.data_dir) is not None

    def stop(self) -> None:
        """Stop the server with ``pg_ctl stop -m fast``; a stopped server is left as is.

        Raises:
            ServiceError: the server is still running afterwards.
        """
        if not self.is_running():
            return
        result = _run_pg(
            self._bin_dir / "pg_ctl",
            ["stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(PG_STOP_TIMEOUT_S)],
            run_as=self._run_as,
            cwd=self.data_dir,
        )
        if result.returncode != 0 and self.is_running():
            raise ServiceError(
                f"pg_ctl stop failed for {self.data_dir} (exit {result.returncode}): "
                f"{result.output.strip()}"
            )
        log.info("PostgreSQL stopped", extra={"data_dir": str(self.data_dir), "port": self.port})


class _PgResult:
    def __init__(self, returncode: int, output: str) -> None:
        self.returncode = returncode
        self.output = output


def _run_pg(exe: Path, args: list[str], *, run_as: str | None, cwd: Path) -> _PgResult:
    """Run a PostgreSQL tool, as ``run_as`` when given, and collect its output.

    Output goes through a temporary file, not a pipe: the postmaster that ``pg_ctl start``
    leaves behind would otherwise hold the pipe open.
    """
    entry = pwd.getpwnam(run_as) if run_as is not None else None
    with tempfile.TemporaryFile("w+") as out:
        completed = subprocess.run(
            [str(exe), *args],
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            timeout=PG_START_TIMEOUT_S + 30,
            user=entry.pw_uid if entry else None,
            group=entry.pw_gid if entry else None,
            extra_groups=[] if entry else None,
        )
        out.seek(0)
        return _PgResult(completed.returncode, out.read())


def _pg_bin_dir() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "the pip package pgserver is not installed; run "
            "`pip install -r requirements-dev.txt` (or set DATABASE_URL to a running server)"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").exists():
        raise ServiceError(f"pgserver has no PostgreSQL binaries in {bin_dir}; reinstall it")
    return bin_dir


def _pg_system_user() -> str | None:
    """The user to run PostgreSQL as: None for a normal user, ``pgserver`` for root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        log.info(
            "creating system user %s to run PostgreSQL, which refuses to run as root",
            PG_SYSTEM_USER,
        )
        subprocess.run(
            [
                useradd,
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


def _prepare_data_dir(data_dir: Path, run_as: str | None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    if run_as is None:
        return
    entry = pwd.getpwnam(run_as)
    if data_dir.stat().st_uid != entry.pw_uid:
        for root, dirs, files in os.walk(data_dir):
            for name in [*dirs, *files]:
                os.chown(Path(root) / name, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)

    # The server user must be able to walk down to its data directory.
    for parent in data_dir.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("adding o+x to %s so that %s can reach %s", parent, run_as, data_dir)
            parent.chmod(mode | stat.S_IXOTH)


def _initdb(bin_dir: Path, data_dir: Path, run_as: str | None, fsync: bool) -> None:
    if any(data_dir.iterdir()):
        raise ServiceError(
            f"{data_dir} is not empty and holds no PostgreSQL cluster (no PG_VERSION); "
            "remove it or point the data directory elsewhere"
        )
    args = [
        "-D", str(data_dir), "-U", PG_SUPERUSER, "--auth=trust", "--encoding=UTF8",
        "--no-locale",
    ]  # fmt: skip
    if not fsync:
        args.append("--no-sync")
    started = time.monotonic()
    result = _run_pg(bin_dir / "initdb", args, run_as=run_as, cwd=data_dir)
    if result.returncode != 0:
        raise ServiceError(f"initdb failed for {data_dir}: {result.output.strip()}")
    log.info(
        "PostgreSQL cluster created",
        extra={"data_dir": str(data_dir), "duration_ms": _ms_since(started)},
    )


class _Postmaster:
    def __init__(self, pid: int, port: int | None) -> None:
        self.pid = pid
        self.port = port


def _read_postmaster(data_dir: Path) -> _Postmaster | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not lines or not lines[0].strip().isdigit():
        return _Postmaster(0, None)
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    return _Postmaster(int(lines[0]), port)


def _live_postmaster(data_dir: Path) -> _Postmaster | None:
    """The postmaster named in ``postmaster.pid`` if it is alive and serves ``data_dir``."""
    info = _read_postmaster(data_dir)
    if info is None or info.pid <= 0 or not _pid_alive(info.pid):
        return None
    argv = _cmdline(info.pid)
    if argv is None:
        return info
    if not argv or "postgres" not in Path(argv[0]).name:
        return None
    return info if str(data_dir) in argv else None


def _socket_dir_for(data_dir: Path, port: int) -> str:
    if len(str(data_dir / f".s.PGSQL.{port}")) <= PG_SOCKET_PATH_MAX:
        return str(data_dir)
    # Limitation: with a data directory path this long there is no unix socket; clients
    # must use TCP (the URLs the devhost hands out always do).
    log.warning("data directory path too long for a unix socket; TCP only: %s", data_dir)
    return ""


def _start_postmaster(handle: PostgresHandle, bin_dir: Path, fsync: bool) -> None:
    data_dir, port = handle.data_dir, handle.port
    if port_accepts(port):
        raise ServiceError(
            f"port {port} on {LOOPBACK} is already in use by another program; "
            "stop it or choose another port (DEVHOST_PG_PORT)"
        )
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists():
        log.warning("removing stale %s left by a server that is gone", pid_file)
        pid_file.unlink()

    options = [
        "-c", f"listen_addresses={LOOPBACK}", "-p", str(port),
        "-c", f"unix_socket_directories={_socket_dir_for(data_dir, port)}",
        *PG_TUNING,
    ]  # fmt: skip
    if not fsync:
        options += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        options += ["-c", "full_page_writes=off"]
    log_path = data_dir / PG_LOG_FILE
    started = time.monotonic()
    args = [
        "start", "-D", str(data_dir), "-w", "-t", str(PG_START_TIMEOUT_S),
        "-l", str(log_path), "-o", shlex.join(options),
    ]  # fmt: skip
    for _ in range(PG_SHMEM_RETRIES):
        result = _run_pg(bin_dir / "pg_ctl", args, run_as=handle._run_as, cwd=data_dir)
        # Children of a killed server may hold its shared memory for a moment longer.
        if result.returncode == 0 or "still in use" not in _tail(log_path, 5):
            break
        time.sleep(0.5)
    if result.returncode != 0:
        raise ServiceError(
            f"PostgreSQL did not start on port {port} (pg_ctl exit {result.returncode}). "
            f"Last lines of {log_path}:\n{_tail(log_path)}"
        )
    log.info(
        "PostgreSQL started",
        extra={"data_dir": str(data_dir), "port": port, "duration_ms": _ms_since(started)},
    )


def _ensure_database(handle: PostgresHandle) -> None:
    with psycopg.connect(handle.admin_url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (handle.database,)
        ).fetchone()
        if exists:
            return
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(handle.database)))
            log.info("database created", extra={"database": handle.database})


def start_postgres(
    data_dir: Path,
    port: int = PG_DEFAULT_PORT,
    *,
    database: str = PG_DATABASE,
    fsync: bool = True,
) -> PostgresHandle:
    """Start an embedded PostgreSQL (pgserver's binaries) on 127.0.0.1 and a unix socket.

    The first call on ``data_dir`` runs initdb. A server still running on ``data_dir``
    (an earlier run that was killed) is adopted when it listens on ``port`` and restarted
    on ``port`` otherwise; a stale ``postmaster.pid`` is removed. As root, the cluster is
    owned and run by the system user ``pgserver`` (created when missing).

    Args:
        data_dir: the cluster directory (PGDATA), created when missing; the unix socket and
            the server log (``devhost-postgres.log``) live in it too.
        port: TCP port on 127.0.0.1, default 54329.
        database: database to create when missing, default ``advisoros``.
        fsync: False turns off fsync, synchronous_commit and full_page_writes: faster, and
            a machine crash can corrupt the cluster, so for tests only.

    Returns:
        A handle with ``url`` and ``stop()``; also a context manager.

    Raises:
        ServiceError: pgserver is missing, the port is taken, or the server did not start.
    """
    data_dir = data_dir.resolve()
    bin_dir = _pg_bin_dir()
    run_as = _pg_system_user()
    _prepare_data_dir(data_dir, run_as)
    if not (data_dir / "PG_VERSION").exists():
        _initdb(bin_dir, data_dir, run_as, fsync)

    handle = PostgresHandle(
        data_dir=data_dir, port=port, database=database, run_as=run_as, bin_dir=bin_dir
    )
    running = _live_postmaster(data_dir)
    if running is not None and running.port == port:
        log.warning(
            "adopting the PostgreSQL already running on %s (pid %s), left by an earlier run",
            data_dir,
            running.pid,
        )
    else:
        if running is not None:
            log.warning(
                "PostgreSQL on %s listens on port %s; restarting it on %s",
                data_dir,
                running.port,
                port,
            )
            handle.stop()
        _start_postmaster(handle, bin_dir, fsync)
    try:
        _ensure_database(handle)
    except BaseException:
        handle.stop()
        raise
    return handle


# -- Azurite -----------------------------------------------------------------------------


def azurite_connection_string(blob_port: int, queue_port: int | None = None) -> str:
    """Connection string of a local Azurite on 127.0.0.1 (blob, and queue when given)."""
    parts = [
        "DefaultEndpointsProtocol=http",
        f"AccountName={AZURITE_ACCOUNT}",
        f"AccountKey={AZURITE_ACCOUNT_KEY}",
        f"BlobEndpoint=http://{LOOPBACK}:{blob_port}/{AZURITE_ACCOUNT}",
    ]
    if queue_port is not None:
        parts.append(f"QueueEndpoint=http://{LOOPBACK}:{queue_port}/{AZURITE_ACCOUNT}")
    return ";".join(parts) + ";"


def azurite_bin_dir(explicit: Path | None = None) -> Path:
    """Where the Azurite launchers are: ``explicit``, else ``AZURITE_BIN_DIR``, else the repo's
    ``node_modules/.bin``."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get("AZURITE_BIN_DIR")
    if from_env:
        return Path(from_env)
    return REPO_ROOT / "node_modules" / ".bin"


class AzuriteHandle(_StopsOnExit):
    """Running Azurite services; ``stop()`` terminates them. See ``start_azurite``."""

    def __init__(self, *, data_dir: Path, blob_port: int, queue_port: int | None) -> None:
        self.data_dir = data_dir
        self.blob_port = blob_port
        self.queue_port = queue_port
        self._procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    @property
    def connection_string(self) -> str:
        """Storage connection string for the app (``AzureWebJobsStorage``)."""
        return azurite_connection_string(self.blob_port, self.queue_port)

    @property
    def blob_endpoint(self) -> str:
        """Blob service URL, e.g. ``http://127.0.0.1:10000/devstoreaccount1``."""
        return f"http://{LOOPBACK}:{self.blob_port}/{AZURITE_ACCOUNT}"

    def stop(self) -> None:
        """Terminate every Azurite process this handle started (SIGTERM, then SIGKILL)."""
        while self._procs:
            service, proc, pid_file = self._procs.pop()
            _terminate_group(proc.pid, proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
            pid_file.unlink(missing_ok=True)
            log.info("Azurite %s stopped", service, extra={"pid": proc.pid})


def _terminate_group(pid: int, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group led by ``pid``, then SIGKILL it after a grace period."""

    def exited() -> bool:
        return proc.poll() is not None if proc is not None else not _pid_alive(pid)

    for sig, grace_s in ((signal.SIGTERM, AZURITE_STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if exited():
                return
            time.sleep(0.05)


def _stop_orphan(pid_file: Path, data_dir: Path) -> None:
    """Stop an Azurite that an earlier, killed run left on ``data_dir``."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    argv = _cmdline(pid)
    ours = argv is not None and any("azurite" in a for a in argv) and str(data_dir) in argv
    if ours and _pid_alive(pid):
        log.warning("stopping Azurite pid %s left running by an earlier run", pid)
        _terminate_group(pid, None)
    pid_file.unlink(missing_ok=True)


def start_azurite(
    data_dir: Path,
    blob_port: int = AZURITE_BLOB_DEFAULT_PORT,
    queue_port: int | None = AZURITE_QUEUE_DEFAULT_PORT,
    *,
    bin_dir: Path | None = None,
) -> AzuriteHandle:
    """Start Azurite blob (and queue) on 127.0.0.1 and wait until they accept connections.

    Azurite comes from the repo's ``node_modules`` (``npm ci``); telemetry is always off.
    An Azurite that an earlier, killed run left on ``data_dir`` is stopped first.

    Args:
        data_dir: Azurite's ``--location``; its logs (``azurite-*.log``) go there too.
        blob_port: blob service port, default 10000.
        queue_port: queue service port, default 10001; None runs no queue service (no
            poison-queue messages then).
        bin_dir: directory of the ``azurite-blob`` launcher; see ``azurite_bin_dir``.

    Returns:
        A handle with ``connection_string`` and ``stop()``; also a context manager.

    Raises:
        ServiceError: Azurite or Node.js is missing, a port is taken, or it did not start.
    """
    bin_dir = azurite_bin_dir(bin_dir)
    services = [("blob", blob_port)]
    if queue_port is not None:
        services.append(("queue", queue_port))
    for service, _ in services:
        if not (bin_dir / f"azurite-{service}").exists():
            raise ServiceError(
                f"Azurite is not installed: {bin_dir / f'azurite-{service}'} is missing. "
                f"Run `npm ci` in {REPO_ROOT} (or set AZURITE_BIN_DIR)"
            )
    if shutil.which("node") is None:
        raise ServiceError("Node.js (`node`) is not on PATH; Azurite needs it")

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = AzuriteHandle(data_dir=data_dir, blob_port=blob_port, queue_port=queue_port)
    started = time.monotonic()
    try:
        for service, port in services:
            pid_file = data_dir / f"azurite-{service}.pid"
            _stop_orphan(pid_file, data_dir)
            if port_accepts(port):
                raise ServiceError(
                    f"port {port} on {LOOPBACK} is already in use; stop the other program or "
                    f"choose another port (DEVHOST_AZURITE_{service.upper()}_PORT)"
                )
            proc = _spawn_azurite(bin_dir, service, port, data_dir)
            pid_file.write_text(str(proc.pid))
            handle._procs.append((service, proc, pid_file))
        for (service, port), (_, proc, _) in zip(services, handle._procs, strict=True):
            _wait_for_port(port, proc, data_dir / f"azurite-{service}.log", service)
    except BaseException:
        handle.stop()
        raise
    log.info(
        "Azurite started",
        extra={
            "blob_port": blob_port,
            "queue_port": queue_port,
            "duration_ms": _ms_since(started),
        },
    )
    return handle


def _spawn_azurite(
    bin_dir: Path, service: str, port: int, data_dir: Path
) -> subprocess.Popen[bytes]:
    args = [
        str(bin_dir / f"azurite-{service}"),
        f"--{service}Host", LOOPBACK, f"--{service}Port", str(port),
        "--location", str(data_dir),
        "--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry",
    ]  # fmt: skip
    with (data_dir / f"azurite-{service}.log").open("ab") as log_file:
        # A session of its own: Ctrl-C in the terminal reaches the host, which then stops
        # Azurite in order, instead of every process at once.
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log_path: Path, name: str) -> None:
    deadline = time.monotonic() + AZURITE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if port_accepts(port):
            return
        if proc.poll() is not None:
            raise ServiceError(
                f"Azurite {name} exited with code {proc.returncode} before listening on "
                f"port {port}. Last lines of {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(0.05)
    raise ServiceError(
        f"Azurite {name} did not listen on port {port} within {AZURITE_START_TIMEOUT_S} s. "
        f"Last lines of {log_path}:\n{_tail(log_path)}"
    )


# -- Migrations --------------------------------------------------------------------------


def _migration_files(migrations_dir: Path) -> list[Path]:
    """The numbered ``.sql`` files, checked so that name order is number order."""
    if not migrations_dir.is_dir():
        raise ConfigError(f"migrations directory {migrations_dir} does not exist")
    files = sorted(
        p
        for p in migrations_dir.iterdir()
        if p.suffix == ".sql" and not p.name.endswith(".rollback.sql")
    )
    numbers: list[int] = []
    for path in files:
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise ConfigError(
                f"migration {path} is not named <number>_<title>.sql (e.g. 0003_billing.sql)"
            )
        numbers.append(int(match.group(1)))
    if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
        raise ConfigError(
            f"migration numbers in {migrations_dir} are duplicated or do not sort as text "
            f"(pad them with zeros): {[p.name for p in files]}"
        )
    return files


def _yoyo_url(database_url: str) -> str:
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ConfigError(f"DATABASE_URL must be a postgresql:// URL, not {parts.scheme}://")
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def apply_migrations(database_url: str, migrations_dir: Path) -> list[str]:
    """Apply the numbered SQL files of ``migrations_dir`` in order, each once.

    Applied files are recorded in yoyo's tables (``_yoyo_migration`` and its companions);
    each file runs in one transaction. Concurrent callers on one database are serialised.

    Args:
        database_url: ``postgresql://`` URL of the target database.
        migrations_dir: directory of ``<number>_<title>.sql`` files (zero-padded numbers).

    Returns:
        The ids (file names without ``.sql``) applied by this call; empty when up to date.

    Raises:
        ConfigError: the directory is missing or its files are misnamed or misnumbered.
        MigrationError: a file failed; it was rolled back and the ones after it not run.
    """
    if not _migration_files(migrations_dir):
        log.info("no migrations in %s", migrations_dir)
        return []
    with psycopg.connect(database_url, autocommit=True) as guard:
        guard.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
        backend = get_backend(_yoyo_url(database_url))
        try:
            # Holding the advisory lock, any yoyo lock row is a leftover of a killed run.
            # Limitation: a `yoyo apply` typed by hand at the same moment does not take the
            # advisory lock, so its lock row would be broken too.
            backend.break_lock()
            with backend.lock():
                ids = []
                migrations = read_migrations(str(migrations_dir))
                for migration in backend.to_apply(migrations):
                    try:
                        backend.apply_one(migration)
                    except psycopg.Error as exc:
                        raise MigrationError(
                            f"migration {migration.path} failed and was rolled back: {exc}"
                        ) from exc
                    ids.append(str(migration.id))
                    log.info("migration applied", extra={"migration": migration.id})
                if ids:
                    backend.run_post_apply(migrations)
        finally:
            backend.connection.close()
    return ids


# -- helpers -----------------------------------------------------------------------------


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
