"""The Durable engine through a running host: the SDK's client, the management API, and
each orchestration feature, with the task hub in a real PostgreSQL."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import psycopg
import pytest
from azure.durable_functions.models.utils import http_utils

from devhost.discovery import LoadedApp, load_app
from devhost.host import DevHost
from devhost.services import PostgresHandle
from tests.devhost.conftest import LoopThread, fast_settings, wait_for

APP_DIR = Path(__file__).parent / "durable_app"
MODULE = "devhost_durable_function_app"


@pytest.fixture(scope="module")
def durable_app() -> LoadedApp:
    return load_app(APP_DIR, module_name=MODULE)


@pytest.fixture(scope="module")
def fixture_module(durable_app: LoadedApp) -> Any:
    return sys.modules[MODULE]


@pytest.fixture(scope="module")
def host(durable_app: LoadedApp, pg: PostgresHandle, loop_thread: LoopThread) -> Iterator[DevHost]:
    settings = fast_settings(durable_poll_interval_s=0.05, durable_hub="TestHub")
    running = DevHost(durable_app, settings, database_url=pg.url)
    loop_thread.run(running.start())
    yield running
    loop_thread.run(running.stop(grace_s=2))


def http(host: DevHost, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    url = path if path.startswith("http") else f"http://127.0.0.1:{host.http.port}{path}"
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def start(host: DevHost, name: str, body: Any = None, instance_id: str | None = None) -> str:
    instance_id = instance_id or f"{name}-{uuid.uuid4().hex[:8]}"
    status, payload = http(host, "POST", f"/api/start/{name}?id={instance_id}", body)
    assert status == 202, payload
    return str(payload["id"])


def status_of(host: DevHost, instance_id: str, history: bool = False) -> dict[str, Any]:
    query = "?showHistory=true" if history else ""
    _, body = http(host, "GET", f"/runtime/webhooks/durabletask/instances/{instance_id}{query}")
    assert isinstance(body, dict)
    return body


def finished(host: DevHost, instance_id: str, timeout_s: float = 30) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (s := status_of(host, instance_id))["runtimeStatus"] not in ("Running", "Pending")
            and s
        ),
        timeout_s,
        f"instance {instance_id} to end",
    )


def runs_of(module: Any, name: str) -> list[Any]:
    return [v for n, v in module.RUNS if n == name]


class TestClientAndManagementApi:
    def test_starter_gets_check_status_urls_that_work(self, host):
        instance_id = f"chain-{uuid.uuid4().hex[:8]}"
        status, payload = http(host, "POST", f"/api/start/chain?id={instance_id}", ["p", "q"])
        assert status == 202
        assert payload["id"] == instance_id
        assert (
            f":{host.http.port}/runtime/webhooks/durabletask/instances/{instance_id}"
            in (payload["statusQueryGetUri"])
        )
        done = wait_for(
            lambda: (r := http(host, "GET", payload["statusQueryGetUri"]))[0] == 200 and r[1],
            30,
            "the chain to complete",
        )
        assert done["runtimeStatus"] == "Completed"
        assert done["output"] == ["P", "Q"]
        assert done["customStatus"] == {"step": "done"}

    def test_status_with_history_lists_the_steps(self, host):
        instance_id = start(host, "chain", ["a"])
        finished(host, instance_id)
        body = status_of(host, instance_id, history=True)
        kinds = [e["EventType"] for e in body["historyEvents"]]
        assert kinds == [
            "ExecutionStarted",
            "TaskScheduled",
            "TaskCompleted",
            "ExecutionCompleted",
        ]

    def test_unknown_orchestrator_is_refused_with_its_name(self, host):
        status, body = http(host, "POST", "/runtime/webhooks/durabletask/orchestrators/nope", None)
        assert status == 400
        assert "The function 'nope' doesn't exist" in body["ExceptionMessage"]

    def test_starting_a_running_id_again_is_a_conflict(self, host):
        instance_id = start(host, "two_events")
        status, body = http(
            host, "POST", f"/runtime/webhooks/durabletask/orchestrators/two_events/{instance_id}"
        )
        assert status == 409
        assert "already" in body["ExceptionMessage"]

    def test_sdk_client_raise_terminate_list_and_purge(self, host, loop_thread):
        client = df.DurableOrchestrationClient(host.invoker.durable_client)
        prefix = f"sdk-{uuid.uuid4().hex[:6]}"

        async def scenario() -> tuple[Any, ...]:
            a = await client.start_new("two_events", f"{prefix}-a")
            b = await client.start_new("two_events", f"{prefix}-b")
            await client.raise_event(a, "go", {"n": 1})
            await client.terminate(b, "not needed")
            return a, b

        a, b = loop_thread.run(scenario())
        assert finished(host, a)["output"] == ["FIRST", {"n": 1}]
        terminated = finished(host, b)
        assert terminated["runtimeStatus"] == "Terminated"

        async def listing() -> tuple[Any, ...]:
            done = await client.get_status_by(
                runtime_status=[df.OrchestrationRuntimeStatus.Terminated]
            )
            purged = await client.purge_instance_history(b)
            gone = await client.get_status(b)
            return done, purged, gone

        done, purged, gone = loop_thread.run(listing())
        assert b in [s.instance_id for s in done]
        assert a not in [s.instance_id for s in done]
        assert purged.instances_deleted == 1
        assert gone.runtime_status is None

    def test_raising_to_an_unknown_instance_is_404(self, host):
        status, _ = http(
            host, "POST", "/runtime/webhooks/durabletask/instances/missing/raiseEvent/go", "x"
        )
        assert status == 404


class TestOrchestrationFeatures:
    def test_activity_retry_honours_attempts_then_succeeds(self, host, fixture_module):
        key = uuid.uuid4().hex
        instance_id = start(host, "retrying", {"key": key, "succeed_on": 3, "max": 4})
        done = finished(host, instance_id)
        assert done["output"] == {"result": f"{key} ok on attempt 3", "after": "AFTER"}
        assert fixture_module.ATTEMPTS[key] == 3

    def test_activity_retry_gives_up_after_max_attempts(self, host, fixture_module):
        key = uuid.uuid4().hex
        instance_id = start(host, "retrying", {"key": key, "succeed_on": 9, "max": 2})
        done = finished(host, instance_id)
        assert done["runtimeStatus"] == "Completed"
        assert f"attempt 2 of {key} failed" in done["output"]["failed"]
        assert fixture_module.ATTEMPTS[key] == 2

    def test_fan_out_of_twenty_gathers_in_order(self, host):
        instance_id = start(host, "fan", 20)
        assert finished(host, instance_id)["output"] == [f"W{i}" for i in range(20)]

    def test_event_wins_over_timer_and_timer_is_cancelled(self, host):
        instance_id = start(host, "approval", 60)
        wait_for(lambda: status_of(host, instance_id)["customStatus"], 20, "custom status")
        http(
            host,
            "POST",
            f"/runtime/webhooks/durabletask/instances/{instance_id}/raiseEvent/approve",
            {"by": "alice"},
        )
        assert finished(host, instance_id)["output"] == {"approved": {"by": "alice"}}

    def test_timer_fires_when_no_event_comes(self, host):
        instance_id = start(host, "approval", 0.3)
        assert finished(host, instance_id)["output"] == {"approved": "timeout"}

    def test_event_raised_before_the_wait_is_kept_and_delivered(self, host):
        instance_id = start(host, "two_events")
        http(
            host,
            "POST",
            f"/runtime/webhooks/durabletask/instances/{instance_id}/raiseEvent/go",
            "early",
        )
        assert finished(host, instance_id)["output"] == ["FIRST", "early"]

    def test_sub_orchestration_result_reaches_the_parent(self, host):
        instance_id = start(host, "parent")
        assert finished(host, instance_id)["output"] == {"child": ["X", "Y"]}
        assert status_of(host, f"{instance_id}-c")["runtimeStatus"] == "Completed"

    def test_continue_as_new_restarts_with_the_new_input(self, host):
        instance_id = start(host, "counter", 0)
        done = finished(host, instance_id)
        assert done["output"] == 3
        history = status_of(host, instance_id, history=True)["historyEvents"]
        assert history[0]["EventType"] == "ExecutionStarted"
        assert history[0]["Input"] == "3"

    def test_orchestrator_exception_fails_the_instance_with_its_message(self, host):
        instance_id = start(host, "failing")
        done = finished(host, instance_id)
        assert done["runtimeStatus"] == "Failed"
        assert "the books do not balance" in done["output"]

    def test_non_determinism_fails_the_instance_with_a_clear_error(self, host, fixture_module):
        instance_id = start(host, "changing")
        wait_for(lambda: runs_of(fixture_module, "shout").count("one"), 20, "first step")
        wait_for(lambda: _inbox_empty(host, instance_id), 20, "the first step to be recorded")
        fixture_module.CHANGED["value"] = True
        try:
            http(
                host,
                "POST",
                f"/runtime/webhooks/durabletask/instances/{instance_id}/raiseEvent/go",
                1,
            )
            done = finished(host, instance_id)
        finally:
            fixture_module.CHANGED["value"] = False
        assert done["runtimeStatus"] == "Failed"
        assert done["output"].startswith(
            "Non-deterministic workflow detected: a previous "
            "execution of this orchestration scheduled activity "
            "shout as task 0, but on replay it asked for activity "
            "flaky"
        )


def _inbox_empty(host: DevHost, instance_id: str) -> bool:
    assert host.task_hub is not None
    url = host._database_url
    assert url is not None
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM devhost.durable_inbox WHERE instance_id = %s)"
            " + (SELECT count(*) FROM devhost.durable_activities WHERE instance_id = %s)",
            (instance_id, instance_id),
        ).fetchone()
    return row is not None and row[0] == 0


def test_stopping_closes_the_session_the_sdk_client_opened(
    durable_app: LoadedApp, pg: PostgresHandle
) -> None:
    # The app's functions open the SDK's shared session on the host's loop; left open, it
    # is reported as an unclosed client session when the process exits.
    loop_thread = LoopThread()
    try:
        running = DevHost(durable_app, fast_settings(durable_hub="StopHub"), database_url=pg.url)
        loop_thread.run(running.start())
        client = df.DurableOrchestrationClient(running.invoker.durable_client)
        assert loop_thread.run(client.get_status("no-such-instance")).runtime_status is None
        session = http_utils._client_session
        assert session is not None and not session.closed
        loop_thread.run(running.stop(grace_s=2))
        assert session.closed
    finally:
        loop_thread.close()
