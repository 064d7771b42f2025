"""Route parameters that cannot name anything are simply not found."""

from __future__ import annotations

import azure.functions as func
import pytest

from functions._http import route_int, route_uuid
from shared.errors import NotFound


def _request(**route_params: str) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET", url="http://127.0.0.1/api/x", body=b"", route_params=route_params
    )


@pytest.mark.parametrize("raw", ["²", "١", "-1", "1e3", "", "9" * 19])
def test_route_int_refuses_anything_but_ascii_digits(raw):
    with pytest.raises(NotFound):
        route_int(_request(import_id=raw), "import_id")


def test_route_int_reads_ascii_digits():
    assert route_int(_request(import_id="42"), "import_id") == 42


@pytest.mark.parametrize("raw", ["x", "12345", "../etc"])
def test_route_uuid_refuses_non_ids(raw):
    with pytest.raises(NotFound, match="client_id"):
        route_uuid(_request(client_id=raw), "client_id")
