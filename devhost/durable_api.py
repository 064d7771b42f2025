"""The Durable management HTTP API at the host's URLs (``/runtime/webhooks/durabletask/``),
and the client binding that points ``DurableOrchestrationClient`` at it.

Every answer is JSON, as the SDK's client reads each body as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiohttp import web
from azure.durable_functions.models.utils import http_utils

from devhost.durable import ACTIVE_STATUSES, DurableEngine, DurableError, TaskHub

PREFIX = "/runtime/webhooks/durabletask/"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def close_client_session() -> None:
    """Close the HTTP session the Durable SDK's client shares across the process.

    The app's functions open it on the host's loop at their first management call; the
    worker's exit would end it, so the host closes it when it stops.
    """
    await http_utils._close_session()


def client_binding(base_url: str, hub: str, key: str) -> str:
    """The ``durableClient`` binding value the host passes to a starter function.

    Args:
        base_url: ``http://127.0.0.1:<port>`` of the host (no path).
        hub: the task hub name.
        key: the key the management URLs carry (the devhost's function key).
    """
    rpc = f"{base_url}{PREFIX}"
    query = f"taskHub={hub}&connection=Storage&code={key}"
    instance = f"{rpc}instances/INSTANCEID"
    return json.dumps(
        {
            "taskHubName": hub,
            "rpcBaseUrl": rpc,
            "baseUrl": rpc.rstrip("/"),
            "requiredQueryStringParameters": f"code={key}",
            "httpBaseUrl": "",
            "creationUrls": {
                "createNewInstancePostUri": f"{rpc}orchestrators/{{functionName}}"
                f"[/{{instanceId}}]?code={key}",
                "createAndWaitOnNewInstancePostUri": f"{rpc}orchestrators/{{functionName}}"
                f"[/{{instanceId}}]?timeout={{timeoutInSeconds}}&pollingInterval="
                f"{{intervalInSeconds}}&code={key}",
            },
            "managementUrls": {
                "id": "INSTANCEID",
                "statusQueryGetUri": f"{instance}?{query}",
                "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{query}",
                "terminatePostUri": f"{instance}/terminate?reason={{text}}&{query}",
                "rewindPostUri": f"{instance}/rewind?reason={{text}}&{query}",
                "purgeHistoryDeleteUri": f"{instance}?{query}",
                "restartPostUri": f"{instance}/restart?{query}",
                "suspendPostUri": f"{instance}/suspend?reason={{text}}&{query}",
                "resumePostUri": f"{instance}/resume?reason={{text}}&{query}",
            },
        }
    )


# Limitation: the management API takes no key, as the Functions host's own loopback RPC
# endpoint does not either; the devhost listens on 127.0.0.1 only. Rewind, restart,
# suspend and resume answer 501.
class DurableApi:
    """aiohttp routes of the management API over one task hub.

    Args:
        hub: the task hub.
        engine: woken when a start or an event is queued; knows the orchestrator names.
    """

    def __init__(self, hub: TaskHub, engine: DurableEngine) -> None:
        self._hub = hub
        self._engine = engine

    def routes(self) -> list[web.RouteDef]:
        p = PREFIX
        return [
            web.post(p + "orchestrators/{name}", self._guard(self.start)),
            web.post(p + "orchestrators/{name}/{iid}", self._guard(self.start)),
            web.get(p + "instances/", self._guard(self.list)),
            web.get(p + "instances", self._guard(self.list)),
            web.delete(p + "instances/", self._guard(self.purge_many)),
            web.delete(p + "instances", self._guard(self.purge_many)),
            web.get(p + "instances/{iid}", self._guard(self.status)),
            web.delete(p + "instances/{iid}", self._guard(self.purge)),
            web.post(p + "instances/{iid}/raiseEvent/{event}", self._guard(self.raise_event)),
            web.post(p + "instances/{iid}/terminate", self._guard(self.terminate)),
            web.post(p + "instances/{iid}/{operation}", self._guard(self.unsupported)),
        ]

    def _guard(self, handler: _Handler) -> _Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except DurableError as exc:
                return web.json_response({"ExceptionMessage": str(exc)}, status=exc.status)
            except ValueError as exc:
                return web.json_response({"ExceptionMessage": str(exc)}, status=400)

        return guarded

    async def start(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self._engine.orchestrator_names:
            known = ", ".join(sorted(self._engine.orchestrator_names)) or "none"
            raise DurableError(
                f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator "
                f"function; orchestrators: {known}",
                400,
            )
        input_json = _body_json(await request.text())
        iid = request.match_info.get("iid") or _new_id()
        await self._hub.start(name, iid, input_json)
        self._engine.wake()
        return web.json_response({"id": iid}, status=202)

    async def status(self, request: web.Request) -> web.StreamResponse:
        iid = request.match_info["iid"]
        history = request.query.get("showHistory", "").lower() == "true"
        found = await self._hub.status(iid, with_history=history)
        if request.query.get("showInput", "true").lower() == "false":
            found["input"] = None
        running = found["runtimeStatus"] in ACTIVE_STATUSES
        return web.json_response(found, status=202 if running else 200)

    async def list(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        statuses = [s for s in q.get("runtimeStatus", "").split(",") if s] or None
        top = int(q["top"]) if q.get("top") else None
        rows = await self._hub.query(
            statuses=statuses,
            created_from=_when(q.get("createdTimeFrom")),
            created_to=_when(q.get("createdTimeTo")),
            prefix=q.get("instanceIdPrefix") or None,
            limit=top,
        )
        return web.json_response(rows)

    async def raise_event(self, request: web.Request) -> web.StreamResponse:
        data = _body_json(await request.text())
        await self._hub.raise_event(request.match_info["iid"], request.match_info["event"], data)
        self._engine.wake()
        return web.json_response(None, status=202)

    async def terminate(self, request: web.Request) -> web.StreamResponse:
        await self._hub.terminate(request.match_info["iid"], request.query.get("reason", ""))
        return web.json_response(None, status=202)

    async def purge(self, request: web.Request) -> web.StreamResponse:
        deleted = await self._hub.purge(request.match_info["iid"])
        return web.json_response({"instancesDeleted": deleted}, status=200 if deleted else 404)

    async def purge_many(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        statuses = [s for s in q.get("runtimeStatus", "").split(",") if s] or None
        deleted = await self._hub.purge_where(
            statuses=statuses,
            created_from=_when(q.get("createdTimeFrom")),
            created_to=_when(q.get("createdTimeTo")),
        )
        return web.json_response({"instancesDeleted": deleted}, status=200 if deleted else 404)

    async def unsupported(self, request: web.Request) -> web.StreamResponse:
        operation = request.match_info["operation"]
        return web.json_response(
            {"ExceptionMessage": f"{operation} is not served by the devhost"}, status=501
        )


def _body_json(body: str) -> str | None:
    """The JSON of the value a request carries.

    The SDK sends a value as a JSON string holding the value's JSON; a person with curl sends
    the value's JSON itself. A JSON string whose text is not JSON is taken as a plain string.
    """
    if not body.strip():
        return None
    decoded = json.loads(body)
    if decoded is None:
        return None
    if not isinstance(decoded, str):
        return json.dumps(decoded)
    try:
        json.loads(decoded)
    except ValueError:
        return json.dumps(decoded)
    return decoded


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex
