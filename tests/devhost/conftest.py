"""Real PostgreSQL and Azurite on free ports, the fixture app, and an event loop in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devhost.discovery import LoadedApp, load_app
from devhost.services import (
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
