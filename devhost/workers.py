"""Processes for the HTTP triggers: with ``FUNCTIONS_WORKER_PROCESS_COUNT`` above 1, that many
processes answer on the one port, each with its own interpreter, so requests are not served
one core at a time.

Each of them serves HTTP only: the app's routes and the Durable management API (whose work
the first process's engine picks up from the task hub). The first process (``run``) holds the
port (bound, not listening) until they listen, and keeps the timers, blob polling, Service Bus
triggers and the Durable engine, so a timer fires once and a message has one consumer, as
with the Functions host, and that work never delays an answer.

Every process listens with ``SO_REUSEPORT``, so the kernel spreads new connections over them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from devhost.discovery import load_app
from devhost.durable import DurableEngine, TaskHub
from devhost.durable_api import DurableApi, client_binding, close_client_session
from devhost.errors import ServiceError
from devhost.http_server import HttpServer
from devhost.invoke import Invoker
from devhost.logs import setup_console_logging
from devhost.services import LOOPBACK
from devhost.settings import HostSettings, read_host_json

log = logging.getLogger(__name__)

# How long the first process waits for another one to listen: it imports the whole app.
WORKER_START_TIMEOUT_S = 60.0
# How often a worker checks that the process that started it is still there.
PARENT_CHECK_S = 1.0
# How long a new host waits for the HTTP processes a killed one left to let the port go.
LEFT_WORKERS_WAIT_S = 3 * PARENT_CHECK_S
_READY = b"listening\n"


class HttpWorkers:
    """The HTTP-only processes beside the first one, started and stopped together.

    Args:
        app_dir: the app's directory (each worker imports the app from it).
        port: the port the first process listens on.
        count: how many processes to start.
    """

    def __init__(self, app_dir: Path, port: int, count: int) -> None:
        self._app_dir = app_dir
        self.port = port
        self._count = count
        self._procs: list[subprocess.Popen[bytes]] = []
        # Guards ``_procs`` and ``_stopping`` between ``replace_exited`` and ``stop``.
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [p.pid for p in self._procs if p.poll() is None]

    def start(self) -> None:
        """Start the workers and return once each one listens; ``port`` then says where
        (port 0 picks a free one).

        The port is held meanwhile by a socket that is bound but does not listen, so no
        connection lands on it and no other program takes the port.

        Raises:
            ServiceError: the port is taken, or a worker exited or did not listen within 60 s;
                none is left running.
        """
        holder = _hold_port(self.port)
        self.port = int(holder.getsockname()[1])
        pipes = []
        try:
            for _ in range(self._count):
                read_fd, write_fd = os.pipe()
                pipes.append(read_fd)
                try:
                    self._procs.append(self._spawn(write_fd))
                finally:
                    os.close(write_fd)
            for proc, read_fd in zip(self._procs, pipes, strict=True):
                _wait_ready(proc, read_fd)
        except BaseException:
            self.stop(grace_s=5.0)
            raise
        finally:
            for read_fd in pipes:
                os.close(read_fd)
            holder.close()
        log.info("HTTP worker processes listening", extra={"pids": self.pids})

    def replace_exited(self) -> list[int]:
        """Start a new worker in place of each one that exited while the host runs, as the
        Functions host restarts a language worker that died; return the exited ones' ids.

        Raises:
            ServiceError: a new worker exited or did not listen within 60 s (the next call
                tries again).
        """
        gone: list[int] = []
        while True:
            with self._lock:
                exited = next((p for p in self._procs if p.poll() is not None), None)
                if self._stopping or exited is None:
                    return gone
                log.error(
                    "HTTP worker process %s exited (code %s); starting another",
                    exited.pid,
                    exited.returncode,
                )
                gone.append(exited.pid)
                read_fd, write_fd = os.pipe()
                try:
                    replacement = self._spawn(write_fd)
                finally:
                    os.close(write_fd)
                self._procs[self._procs.index(exited)] = replacement
            try:
                _wait_ready(replacement, read_fd)
            finally:
                os.close(read_fd)
            log.info("HTTP worker process %s listening", replacement.pid)

    def stop(self, *, grace_s: float) -> None:
        """Ask every worker to stop (SIGTERM); kill those still running after ``grace_s``."""
        with self._lock:
            self._stopping = True
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("HTTP worker %s did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait()
        self._procs = []

    def _spawn(self, ready_fd: int) -> subprocess.Popen[bytes]:
        args = [
            sys.executable, "-m", "devhost.workers",
            "--app-dir", str(self._app_dir), "--port", str(self.port),
            "--parent", str(os.getpid()), "--ready-fd", str(ready_fd),
        ]  # fmt: skip
        return subprocess.Popen(args, pass_fds=(ready_fd,), start_new_session=False)


def _hold_port(port: int) -> socket.socket:
    # SO_REUSEADDR, as asyncio's listeners set it, so that the connections a host closed
    # just before (TIME_WAIT) do not keep the port from the next one. The port is first
    # bound without SO_REUSEPORT: another program listening with it (another devhost with
    # several processes) would otherwise share the port and get half of the connections.
    # The HTTP processes of a host that was killed listen until they see it gone
    # (``PARENT_CHECK_S``), so a host started again at once waits for them a little.
    deadline = time.monotonic() + LEFT_WORKERS_WAIT_S
    while True:
        try:
            with _port_socket(port, share=False):
                break
        except ServiceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return _port_socket(port, share=True)


def _port_socket(port: int, *, share: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if share:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((LOOPBACK, port))
    except OSError as exc:
        sock.close()
        raise ServiceError(
            f"cannot listen on {LOOPBACK}:{port} ({exc.strerror}); is another host running? "
            "Choose another port with --port"
        ) from None
    return sock


def _wait_ready(proc: subprocess.Popen[bytes], read_fd: int) -> None:
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ServiceError(
                f"HTTP worker process {proc.pid} did not listen within "
                f"{WORKER_START_TIMEOUT_S:g} s"
            )
        readable, _, _ = select.select([read_fd], [], [], min(left, 0.5))
        if readable:
            if os.read(read_fd, len(_READY)) == _READY:
                return
            raise ServiceError(
                f"HTTP worker process {proc.pid} exited at start (code {proc.wait()}); "
                "its log lines are above"
            )
        if proc.poll() is not None:
            raise ServiceError(
                f"HTTP worker process {proc.pid} exited at start (code {proc.returncode}); "
                "its log lines are above"
            )


async def serve_http_only(
    app_dir: Path, settings: HostSettings, *, parent: int, ready_fd: int | None
) -> None:
    """Serve the app's HTTP triggers (and the Durable API) until SIGTERM, SIGINT or the
    parent process goes away."""
    app = load_app(app_dir)
    gc.freeze()  # as the first process does: the app's import stays out of full collections
    invoker = Invoker(settings.thread_count, str(app.script_path.parent))
    http = HttpServer(app, invoker, settings)
    database_url = os.environ.get("DATABASE_URL")
    hub: TaskHub | None = None
    if app.uses_durable and database_url:
        hub = TaskHub(database_url, settings.durable_hub)
        await hub.open()
        # Never run here: it names the orchestrators for the API. Limitation: a start or an
        # event queued here waits for the first process's engine to look at the hub
        # (DEVHOST_DURABLE_POLL_INTERVAL_S, 0.1 s); with one process the API wakes it at once.
        engine = DurableEngine(app, hub, invoker, workers=1)
        http.add_routes(DurableApi(hub, engine).routes())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await http.start()
        if hub is not None:
            invoker.durable_client = client_binding(
                f"http://127.0.0.1:{http.port}", hub.hub, settings.function_key
            )
        if ready_fd is not None:
            os.write(ready_fd, _READY)
            os.close(ready_fd)
        while not stop.is_set() and os.getppid() == parent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PARENT_CHECK_S)
    finally:
        await http.stop()
        if hub is not None:
            await hub.close()
        await close_client_session()
        invoker.shutdown(wait=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devhost.workers``: one HTTP worker process, started by ``run``."""
    parser = argparse.ArgumentParser(prog="python -m devhost.workers")
    parser.add_argument("--app-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--ready-fd", type=int)
    args = parser.parse_args(argv)
    setup_console_logging(os.environ.get("DEVHOST_LOG_LEVEL", "INFO"))
    settings = HostSettings.from_env(host_json=read_host_json(args.app_dir), http_port=args.port)
    asyncio.run(
        serve_http_only(args.app_dir, settings, parent=args.parent, ready_fd=args.ready_fd)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
