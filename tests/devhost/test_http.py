"""HTTP triggers served on a real socket: routing, methods, auth levels, limits, responses."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from devhost.discovery import LoadedApp
from devhost.errors import ServiceError
from devhost.http_server import HttpServer
from devhost.invoke import Invoker
from devhost.settings import DEFAULT_FUNCTION_KEY, DEFAULT_MASTER_KEY
from tests.devhost.conftest import LoopThread, fast_settings, wait_for

BODY_LIMIT = 4096


@pytest.fixture(scope="module")
def server(fixture_app: LoadedApp, loop_thread: LoopThread) -> Iterator[HttpServer]:
    settings = fast_settings(max_body_bytes=BODY_LIMIT)
    invoker = Invoker(settings.thread_count, str(fixture_app.script_path.parent))
    srv = HttpServer(fixture_app, invoker, settings)
    loop_thread.run(srv.start())
    yield srv
    loop_thread.run(srv.stop())
    invoker.shutdown(wait=False)


def call(
    server: HttpServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


class TestRouting:
    def test_route_parameter_query_body_and_headers_reach_the_function(self, server):
        status, headers, body = call(
            server, "POST", "/api/hello/ada?q=1&q=2", body=b"payload", headers={"X-Test": "t1"}
        )
        assert status == 200
        assert headers["Content-Type"] == "application/json; charset=utf-8"
        seen = json.loads(body)
        assert seen["method"] == "POST"
        assert seen["name"] == "ada"
        assert seen["q"] == "1"
        assert seen["body"] == "payload"
        assert seen["header"] == "t1"
        assert seen["url"] == f"http://127.0.0.1:{server.port}/api/hello/ada?q=1&q=2"

    def test_optional_parameter_may_be_absent(self, server):
        status, _, body = call(server, "GET", "/api/hello")
        assert status == 200
        assert json.loads(body)["name"] is None

    def test_literal_segments_match_without_case(self, server):
        assert call(server, "GET", "/api/HELLO/x")[0] == 200

    def test_int_constraint_selects_the_route(self, server):
        assert call(server, "GET", "/api/items/42")[2] == b"item 42"
        assert call(server, "GET", "/api/items/special")[2] == b"special item"
        assert call(server, "GET", "/api/items/abc")[0] == 404

    def test_blueprint_functions_are_served(self, server):
        assert call(server, "GET", "/api/bp/ping")[2] == b"pong"

    def test_unknown_route_is_404(self, server):
        assert call(server, "GET", "/api/nothing/here")[0] == 404
        assert call(server, "GET", "/hello/x")[0] == 404

    def test_wrong_method_is_405_with_allow(self, server):
        status, headers, _ = call(server, "GET", "/api/echo")
        assert status == 405
        assert headers["Allow"] == "POST"

    def test_async_functions_are_awaited(self, server):
        assert call(server, "GET", "/api/async/bob")[2] == b"async hello bob"

    def test_context_parameter_gets_function_name_and_invocation_id(self, server):
        name, invocation_id = call(server, "GET", "/api/ctx")[2].decode().split()
        assert name == "with_context"
        assert len(invocation_id) == 36

    def test_durable_client_starter_without_a_task_hub_fails_as_the_client_has_no_binding(
        self, server
    ):
        # This server has no task hub, so the client binding is missing and the SDK refuses.
        status, _, _ = call(server, "POST", "/api/orchestrators/x")
        assert status == 500


class TestAuthLevels:
    def test_function_level_needs_a_key(self, server):
        assert call(server, "GET", "/api/secured")[0] == 401
        assert call(server, "GET", "/api/secured?code=wrong")[0] == 401
        assert call(server, "GET", f"/api/secured?code={DEFAULT_FUNCTION_KEY}")[0] == 200
        headers = {"x-functions-key": DEFAULT_FUNCTION_KEY}
        assert call(server, "GET", "/api/secured", headers=headers)[0] == 200
        assert call(server, "GET", f"/api/secured?code={DEFAULT_MASTER_KEY}")[0] == 200

    def test_admin_level_takes_only_the_master_key(self, server):
        assert call(server, "GET", f"/api/admin/thing?code={DEFAULT_FUNCTION_KEY}")[0] == 401
        status, _, body = call(server, "GET", f"/api/admin/thing?code={DEFAULT_MASTER_KEY}")
        assert (status, body) == (200, b"admin level ok")


class TestBodiesAndResponses:
    def test_response_status_headers_cookies_and_mimetype_are_kept(self, server):
        status, headers, body = call(server, "POST", "/api/echo", body=b"\x00\x01data")
        assert status == 201
        assert body == b"\x00\x01data"
        assert headers["X-Echo-Length"] == "6"
        assert headers["Content-Type"] == "application/octet-stream"
        assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]

    def test_str_return_is_200_text(self, server):
        status, headers, body = call(server, "GET", f"/api/secured?code={DEFAULT_FUNCTION_KEY}")
        assert (status, body) == (200, b"function level ok")
        assert headers["Content-Type"].startswith("text/plain")

    def test_body_over_the_limit_is_413(self, server):
        assert call(server, "POST", "/api/echo", body=b"x" * BODY_LIMIT)[0] == 201
        assert call(server, "POST", "/api/echo", body=b"x" * (BODY_LIMIT + 1))[0] == 413

    def test_chunked_body_over_the_limit_is_413(self, server):
        chunks = iter([b"x" * 3000, b"y" * 3000])
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("POST", "/api/echo", body=chunks, encode_chunked=True)
            assert conn.getresponse().status == 413
        finally:
            conn.close()

    def test_exception_is_500_with_a_generic_body(self, server, caplog):
        status, _, body = call(server, "GET", "/api/boom")
        assert status == 500
        assert b"Internal Server Error" in body
        assert b"fails on purpose" not in body
        wait_for(lambda: "fails on purpose" in caplog.text, 5, "the traceback in the log")


def test_slow_sync_function_does_not_block_other_requests(server):
    results: list[bytes] = []
    slow = threading.Thread(target=lambda: results.append(call(server, "GET", "/api/slow")[2]))
    slow.start()
    # The release request is served while /slow still holds its thread.
    assert call(server, "POST", "/api/release")[0] == 200
    slow.join(timeout=30)
    assert results == [b"released"]


def test_every_invocation_logs_one_structured_line(server, caplog):
    caplog.set_level("INFO", logger="devhost.invoke")
    call(server, "GET", "/api/items/7")
    record = wait_for(
        lambda: next(
            (r for r in caplog.records if getattr(r, "function", "") == "item_by_id"), None
        ),
        5,
        "the invocation log line",
    )
    assert record.trigger == "http"
    assert record.outcome == "200"
    assert isinstance(record.duration_ms, int)
    assert len(record.invocation_id) == 36


def test_port_in_use_is_a_clear_error(fixture_app, server, loop_thread):
    settings = fast_settings(http_port=server.port)
    invoker = Invoker(1, str(fixture_app.script_path.parent))
    with pytest.raises(ServiceError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        loop_thread.run(HttpServer(fixture_app, invoker, settings).start())
    invoker.shutdown(wait=False)
