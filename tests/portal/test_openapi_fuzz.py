"""Schemathesis against the published OpenAPI document: generated requests to every
operation, as a signed-in advisor of a client with books; no answer is a 5xx and every
answer matches the document."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import azure.functions as func
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from functions import portal as api
from tests.portal.conftest import dispatch, make_user, seed_bank

ROUTES = [
    (re.compile("^/api/" + re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", r) + "$"), r)
    for r in sorted({op.route for op in api.OPERATIONS})
]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def wsgi_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The portal's functions behind WSGI, the way the Functions host hands them requests."""
    path = environ["PATH_INFO"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    headers = {
        key[5:].replace("_", "-").title(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if "CONTENT_TYPE" in environ:
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    if path == "/api/openapi.json":
        response = api.openapi_json(func.HttpRequest("GET", path, body=b""))
    else:
        for pattern, route in ROUTES:
            match = pattern.match(path)
            if match:
                request = func.HttpRequest(
                    method=environ["REQUEST_METHOD"],
                    url=path,
                    headers=headers,
                    params=dict(parse_qsl(environ.get("QUERY_STRING", ""))),
                    route_params=match.groupdict(),
                    body=body,
                )
                response = dispatch(request, route)
                break
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no route"]
    sent = [(k, v) for k, v in response.headers.items() if k.lower() != "content-type"]
    sent.append(("Content-Type", response.mimetype or "text/plain"))
    start_response(f"{response.status_code} -", sent)
    return [response.get_body()]


def _schema(mode: schemathesis.GenerationMode) -> Any:
    loaded = schemathesis.openapi.from_dict(api.openapi_document())
    loaded.app = wsgi_app
    # The bearer token is the test's to give; generated cases leave it alone.
    loaded.config.generation.update(modes=[mode], with_security_parameters=False)
    return loaded


valid = _schema(schemathesis.GenerationMode.POSITIVE)
invalid = _schema(schemathesis.GenerationMode.NEGATIVE)
# Hypothesis runs the test body many times inside one function-scoped fixture set.
# Derandomised, so a run in CI generates the same cases as the run before it.
CHECKS = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture()
def signed_in(portal: None, firm: uuid.UUID, client_id: uuid.UUID) -> dict[str, str]:
    seed_bank(client_id, 3)
    advisor = make_user(firm, "advisor")
    return {"token": advisor.token, "client_id": str(client_id)}


@valid.parametrize()
@CHECKS
def test_valid_requests_are_answered_as_documented(case: Any, signed_in: dict[str, str]) -> None:
    if case.path_parameters and "client_id" in case.path_parameters:
        case.path_parameters["client_id"] = signed_in["client_id"]
    # A schema-valid cursor or date range can still be refused for what it means (a cursor
    # this API never issued, "from" after "to"): those answers are 400 naming the input.
    response = case.call_and_validate(
        app=wsgi_app,
        headers={"Authorization": f"Bearer {signed_in['token']}"},
        excluded_checks=[positive_data_acceptance],
    )

    assert response.status_code < 500, json.dumps(case.as_transport_kwargs(), default=str)
    if response.status_code == 400:
        assert response.json()["detail"], "a 400 names what was wrong"


@invalid.parametrize()
@CHECKS
def test_invalid_requests_are_refused_with_a_4xx(case: Any, signed_in: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {signed_in['token']}"}
    if any(name == "" or value == [] for name, value in (case.query or {}).items()):
        # A parameter without a name, or one given as an empty list, never reaches the app:
        # the query string carries nothing for it, so the request the app sees may be valid.
        response = case.call(app=wsgi_app, headers=headers)
        assert response.status_code < 500
        return
    response = case.call_and_validate(app=wsgi_app, headers=headers)

    assert 400 <= response.status_code < 500, json.dumps(case.as_transport_kwargs(), default=str)
