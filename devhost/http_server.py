"""HTTP triggers on ``http://127.0.0.1:<port>/<prefix>/<route>``, served with aiohttp.

Same port (7071) and prefix (``api``, or host.json's ``routePrefix``) as ``func start``.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

import azure.functions as func
from aiohttp import web
from azure.functions import _abc as azf_abc
from multidict import CIMultiDict

from devhost.discovery import HTTP_TRIGGER, FunctionSpec, LoadedApp
from devhost.errors import ServiceError
from devhost.invoke import Invoker, log_invocation, new_invocation_id
from devhost.routes import Route, RouteTable, RouteTemplate
from devhost.services import LOOPBACK
from devhost.settings import HostSettings

log = logging.getLogger(__name__)

ANONYMOUS, FUNCTION, ADMIN = "anonymous", "function", "admin"
# How long stopping waits for requests in flight before it closes their connections.
HTTP_SHUTDOWN_S = 5.0
_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


def build_route_table(app: LoadedApp) -> RouteTable:
    """Routes of every HTTP function, unserved ones included (they answer 501)."""
    routes = []
    for spec in app.functions:
        if spec.trigger_type != HTTP_TRIGGER:
            continue
        trigger = spec.trigger
        methods = trigger.get("methods")
        routes.append(
            Route(
                template=RouteTemplate.parse(str(trigger.get("route") or spec.name)),
                function=spec,
                methods=frozenset(str(m).upper() for m in methods) if methods else None,
                auth_level=str(trigger.get("authLevel") or FUNCTION).lower(),
            )
        )
    return RouteTable(routes)


# Limitation: the ``Host.CORS`` and ``Host.LocalHttpsPort`` entries of local.settings.json
# are not applied: no CORS headers, plain HTTP only; and bodies are read whole into memory
# (up to FUNCTIONS_REQUEST_BODY_SIZE_LIMIT), as the Python worker also does.
class HttpServer:
    """Serves the app's HTTP triggers until ``stop()``.

    Args:
        app: the loaded app.
        invoker: runs the functions.
        settings: port, prefix, keys and the body size limit.
    """

    def __init__(self, app: LoadedApp, invoker: Invoker, settings: HostSettings) -> None:
        self._table = build_route_table(app)
        self._invoker = invoker
        self._settings = settings
        self._prefix = "/" + settings.route_prefix if settings.route_prefix else ""
        self._runner: web.AppRunner | None = None
        self._extra_routes: list[web.RouteDef] = []
        self.port = settings.http_port

    def add_routes(self, routes: list[web.RouteDef]) -> None:
        """Serve these before the functions' routes (the Durable management API)."""
        self._extra_routes.extend(routes)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/<prefix>``."""
        return f"http://{LOOPBACK}:{self.port}{self._prefix}"

    def url_of(self, route: Route) -> str:
        """The URL of a route, with its template left in."""
        return f"{self.base_url}/{route.template.template}"

    @property
    def routes(self) -> list[Route]:
        """The routes, most specific first."""
        return list(self._table)

    async def start(self) -> None:
        """Listen on 127.0.0.1 (port 0 picks a free one, then ``port`` tells which).

        Raises:
            ServiceError: the port is taken.
        """
        application = web.Application(client_max_size=self._settings.max_body_bytes)
        application.router.add_routes(self._extra_routes)
        application.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            application, access_log=None, handle_signals=False, shutdown_timeout=HTTP_SHUTDOWN_S
        )
        await self._runner.setup()
        # With more than one process on the port, each listens with SO_REUSEPORT.
        site = web.TCPSite(
            self._runner,
            LOOPBACK,
            self._settings.http_port,
            reuse_port=self._settings.http_processes > 1 or None,
        )
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ServiceError(
                f"cannot listen on {LOOPBACK}:{self._settings.http_port} ({exc.strerror}); "
                "is another host running? Choose another port with --port"
            ) from None
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])

    async def stop(self) -> None:
        """Stop listening; requests in flight get a short grace period."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in ("", "/"):
            return web.Response(text="devhost is running; functions are under " + self.base_url)
        if self._prefix and not (path == self._prefix or path.startswith(self._prefix + "/")):
            return web.Response(status=404, text="Not Found")
        resolution = self._table.resolve(path[len(self._prefix) :], request.method)
        if resolution is None:
            return web.Response(status=404, text="Not Found")
        if resolution.route is None:
            allow = ", ".join(sorted(resolution.allowed))
            return web.Response(status=405, text="Method Not Allowed", headers={"Allow": allow})
        route = resolution.route
        spec = route.function
        if not self._authorised(route.auth_level, request):
            return web.Response(status=401, text="Unauthorized")
        if not spec.served:
            return web.Response(status=501, text=f"Function {spec.name}: {spec.unserved}")

        if (request.content_length or 0) > self._settings.max_body_bytes:
            return _too_large(self._settings.max_body_bytes)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(self._settings.max_body_bytes)
        return await self._invoke(spec, request, dict(resolution.params), body)

    async def _invoke(
        self, spec: FunctionSpec, request: web.Request, params: dict[str, str], body: bytes
    ) -> web.Response:
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        query: dict[str, str] = {}
        for name, value in request.query.items():
            query.setdefault(name, value)
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=headers,
            params=query,
            route_params=params,
            body=body,
        )
        invocation_id = new_invocation_id()
        started = time.monotonic()
        fields = {"method": request.method, "path": request.path}
        try:
            result = await self._invoker.call(spec, http_request, invocation_id=invocation_id)
            response = to_web_response(result)
        except Exception:
            log.exception(
                "function %s failed",
                spec.name,
                extra={"function": spec.name, "invocation_id": invocation_id},
            )
            log_invocation(spec, invocation_id, started, "500", failed=True, **fields)
            return web.Response(
                status=500,
                text=f"Internal Server Error (invocation {invocation_id}); "
                "the traceback is in the devhost log.",
            )
        status = response.status
        log_invocation(spec, invocation_id, started, str(status), failed=status >= 500, **fields)
        return response

    def _authorised(self, level: str, request: web.Request) -> bool:
        if level == ANONYMOUS:
            return True
        key = request.query.get("code") or request.headers.get("x-functions-key") or ""
        if not key:
            return False
        if _same(key, self._settings.master_key):
            return True
        return level == FUNCTION and _same(key, self._settings.function_key)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _too_large(limit: int) -> web.Response:
    return web.Response(
        status=413,
        text=f"Payload Too Large: the limit is {limit} bytes (setting "
        "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT)",
    )


def to_web_response(result: Any) -> web.Response:
    """Turn what an HTTP function returned into an aiohttp response.

    ``func.HttpResponse`` keeps its status, headers (repeated ones too), mimetype and
    charset; a ``str`` is 200 text/plain, ``bytes`` 200 octet-stream, ``None`` 204.

    Raises:
        TypeError: the function returned anything else.
    """
    if isinstance(result, azf_abc.HttpResponse):
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in result.headers.items():
            if name.lower() not in _HOP_HEADERS:
                headers.add(name, value)
        if "content-type" not in headers:
            mimetype = result.mimetype or "text/plain"
            charset = result.charset or "utf-8"
            text_like = mimetype.startswith("text/") or mimetype == "application/json"
            headers["Content-Type"] = f"{mimetype}; charset={charset}" if text_like else mimetype
        return web.Response(status=result.status_code, headers=headers, body=result.get_body())
    if isinstance(result, str):
        return web.Response(text=result, content_type="text/plain")
    if isinstance(result, bytes | bytearray):
        return web.Response(body=bytes(result), content_type="application/octet-stream")
    if result is None:
        return web.Response(status=204)
    raise TypeError(
        "an HTTP function must return func.HttpResponse, str or bytes, "
        f"not {type(result).__name__}"
    )
