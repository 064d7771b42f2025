"""The Durable management API the portal's workflow operations call, in the test process: the
devhost's own API and task hub on the test database, on an event loop of its own thread.

No orchestration runs here (instances stay pending); the full workflow is walked on a
running devhost in tests/e2e/test_portal_engagements_e2e.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import azure.durable_functions as df
from aiohttp import web

from devhost.durable import TaskHub
from devhost.durable_api import DurableApi, client_binding
from shared.services import engagements
from tests.durable_sdk import close_session, drop_session

T = TypeVar("T")


class _Idle:
    """The engine side of the API: knows the orchestrator's name, runs nothing."""

    orchestrator_names = frozenset({engagements.ORCHESTRATOR})

    def wake(self) -> None:
        pass


class WorkflowHost:
    """Serves the management API on 127.0.0.1 and runs coroutines on its loop."""

    def __init__(self, database_url: str, port: int) -> None:
        self._database_url = database_url
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._hub: TaskHub | None = None

    def start(self) -> WorkflowHost:
        drop_session()
        self._thread.start()
        self.run(self._open())
        return self

    async def _open(self) -> None:
        self._hub = TaskHub(self._database_url, "PortalTests", pool_size=4)
        await self._hub.open()
        app = web.Application()
        app.add_routes(DurableApi(self._hub, _Idle()).routes())  # type: ignore[arg-type]
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self._port).start()

    def client(self) -> df.DurableOrchestrationClient:
        binding = client_binding(f"http://127.0.0.1:{self._port}", "PortalTests", "test-key")
        return df.DurableOrchestrationClient(binding)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the host's loop, where the SDK's HTTP session lives."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def status(self, instance_id: str) -> dict[str, Any]:
        assert self._hub is not None
        return self.run(self._hub.status(instance_id))

    def stop(self) -> None:
        async def close() -> None:
            await close_session()
            if self._runner is not None:
                await self._runner.cleanup()
            if self._hub is not None:
                await self._hub.close()

        self.run(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
