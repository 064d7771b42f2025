"""A blueprint of the fixture app, to show that blueprints are found without devhost changes."""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()


@bp.route(route="bp/ping", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def bp_ping(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("pong")
