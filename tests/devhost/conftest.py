"""Real PostgreSQL and Azurite on free ports, the fixture app, and an event loop in a thread."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devhost.discovery import LoadedApp, load_app
from devhost.services import (
    REPO_ROOT,
    AzuriteHandle,
    PostgresHandle,
    free_port,
    start_azurite,
    start_postgres,
)
from devhost.settings import HostSettings
from tests.durable_sdk import close_session, drop_session

HERE = Path(__file__).parent
FIXTURE_APP_DIR = HERE / "fixture_app"
MIGRATIONS_DIR = HERE / "migrations"
FIXTURE_MODULE = "devhost_fixture_function_app"
STORAGE_SETTING = "AzureWebJobsStorage"

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout_s: float = 20.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def unique(prefix: str = "t") -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class HostProcess:
    """``python -m devhost run`` serving the fixture app, and what it printed so far."""

    proc: subprocess.Popen[str]
    ports: dict[str, int]
    env: dict[str, str]
    output: list[str]

    @property
    def text(self) -> str:
        return "".join(self.output)


@contextmanager
def devhost_process(
    tmp_path: Path, settings: dict[str, str], ready_timeout_s: float = 90
) -> Iterator[HostProcess]:
    """Start the devhost on free ports with ``settings`` added to its environment, wait until
    it says it is ready (or has exited), and kill it at the end if it still runs."""
    ports = {name: free_port() for name in ("http", "pg", "blob", "queue")}
    env = {k: v for k, v in os.environ.items() if k not in (STORAGE_SETTING, "DATABASE_URL")}
    env.update(
        {
            "DEVHOST_DATA_DIR": str(tmp_path / "local"),
            "DEVHOST_PG_PORT": str(ports["pg"]),
            "DEVHOST_AZURITE_BLOB_PORT": str(ports["blob"]),
            "DEVHOST_AZURITE_QUEUE_PORT": str(ports["queue"]),
            "PYTHONUNBUFFERED": "1",
            **settings,
        }
    )
    args = ["run", "--port", str(ports["http"]), "--migrations", str(MIGRATIONS_DIR)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "devhost", "--app-dir", str(FIXTURE_APP_DIR), *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: output.extend(iter(stdout.readline, "")))
    reader.start()
    try:
        wait_for(
            lambda: any("ready in" in line for line in output) or proc.poll() is not None,
            ready_timeout_s,
            "the devhost to be ready",
        )
        yield HostProcess(proc, ports, env, output)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)


class LoopThread:
    """An asyncio event loop running in a background thread."""

    def __init__(self) -> None:
        drop_session()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.run(close_session())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresHandle]:
    handle = start_postgres(tmp_path_factory.mktemp("devhost-pg") / "pg", free_port(), fsync=False)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteHandle]:
    handle = start_azurite(tmp_path_factory.mktemp("devhost-azurite"), free_port(), free_port())
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def fixture_app() -> LoadedApp:
    return load_app(FIXTURE_APP_DIR, module_name=FIXTURE_MODULE)


@pytest.fixture(scope="session")
def calls(fixture_app: LoadedApp) -> Any:
    import sys

    return sys.modules[FIXTURE_MODULE].CALLS


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.close()


def fast_settings(**overrides: Any) -> HostSettings:
    """Host settings for tests: port 0 (any free), quick retries."""
    values: dict[str, Any] = {
        "http_port": 0,
        "blob_poll_interval_s": 0.05,
        "blob_retry_backoff_s": 0.0,
        "blob_lease_s": 30.0,
        "thread_count": 8,
        "blob_concurrency": 8,
    }
    values.update(overrides)
    return HostSettings(**values)
