"""SCIM 2.0 provisioning as Entra ID and Okta drive it: create, filter, patch active,
groups that give roles, delete; and what a provisioned user can then do in the portal."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from tests.portal.conftest import send

SECRET = "scim-test-secret"


@pytest.fixture()
def scim_firm(
    portal: None, firm: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> Iterator[uuid.UUID]:
    from shared.config import get_settings

    monkeypatch.setenv("SCIM_BEARER_TOKENS", f"old-secret,{SECRET}")
    monkeypatch.setenv("SCIM_FIRM_ID", str(firm))
    get_settings.cache_clear()
    yield firm
    get_settings.cache_clear()


def scim(
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    secret: str = SECRET,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    from functions import scim as api

    parts = path.strip("/").split("/")
    route_params = {}
    if len(parts) == 2:
        route_params = {"user_id" if parts[0] == "Users" else "group_id": parts[1]}
    handler = {
        ("Users", 1): api.scim_users,
        ("Users", 2): api.scim_user,
        ("Groups", 1): api.scim_groups,
        ("Groups", 2): api.scim_group,
    }[(parts[0], len(parts))]
    request = func.HttpRequest(
        method=method,
        url=f"/api/scim/v2/{path}",
        headers={"Authorization": f"Bearer {secret}"},
        params=params or {},
        route_params=route_params,
        body=json.dumps(body).encode() if body is not None else b"",
    )
    response = handler.build().get_user_function()(request)
    raw = response.get_body()
    return response.status_code, json.loads(raw) if raw else None


def entra_user(name: str) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "externalId": str(uuid.uuid4()),
        "active": True,
        "displayName": "Ada Lovelace",
        "emails": [{"type": "work", "value": name, "primary": True}],
    }


def patch(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": list(ops)}


def test_refuses_a_wrong_secret(scim_firm: uuid.UUID) -> None:
    status, body = scim("GET", "Users", secret="guess")

    assert status == 401
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


def test_user_lifecycle_and_the_role_a_group_gives(
    scim_firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    from shared.services import identity

    name = f"ada-{uuid.uuid4().hex[:6]}@example.test"
    created_status, user = scim("POST", "Users", entra_user(name))
    dup_status, dup = scim("POST", "Users", entra_user(name.upper()))
    _, found = scim("GET", "Users", params={"filter": f'userName eq "{name.upper()}"'})
    token = identity.issue_local_token(name)
    before_group = send("GET", "v1/clients", token)

    group_status, group = scim(
        "POST",
        "Groups",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": f"advisoros-client-{client_id}",
            "members": [{"value": user["id"]}],
        },
    )
    as_client_user = send("GET", "v1/clients", token)

    # Entra disables with a string boolean under a path.
    _, disabled = scim(
        "PATCH",
        f"Users/{user['id']}",
        patch({"op": "Replace", "path": "active", "value": "False"}),
    )
    after_disable = send("GET", "v1/clients", token)
    _, enabled = scim(
        "PATCH", f"Users/{user['id']}", patch({"op": "replace", "value": {"active": True}})
    )
    removed_status, _ = scim(
        "PATCH",
        f"Groups/{group['id']}",
        patch({"op": "remove", "path": f'members[value eq "{user["id"]}"]'}),
    )
    after_removal = send("GET", "v1/clients", token)
    deleted_status, _ = scim("DELETE", f"Users/{user['id']}")
    gone_status, _ = scim("GET", f"Users/{user['id']}")

    assert (created_status, user["userName"], user["active"]) == (201, name, True)
    assert (dup_status, dup["scimType"]) == (409, "uniqueness")
    assert [r["id"] for r in found["Resources"]] == [user["id"]]
    assert before_group.status == 403 and before_group.json()["detail"].endswith("has no role yet")
    assert group_status == 201 and group["members"][0]["value"] == user["id"]
    assert [c["id"] for c in as_client_user.json()["clients"]] == [str(client_id)]
    assert disabled["active"] is False and after_disable.status == 403
    assert enabled["active"] is True
    assert removed_status == 200 and after_removal.status == 403
    assert (deleted_status, gone_status) == (204, 404)


def test_group_for_another_firms_client_is_refused(scim_firm: uuid.UUID) -> None:
    from shared.services import clients

    elsewhere = clients.create_client(clients.create_firm("Other"), "Not ours")

    status, body = scim("POST", "Groups", {"displayName": f"advisoros-client-{elsewhere}"})

    assert status == 400
    assert (
        body["detail"]
        == f"displayName 'advisoros-client-{elsewhere}' names a client this firm does not have"
    )


def test_unsupported_filter_is_a_clear_400(scim_firm: uuid.UUID) -> None:
    status, body = scim("GET", "Users", params={"filter": 'emails co "x"'})

    assert status == 400
    assert body["detail"] == 'filter \'emails co "x"\' is not supported; use userName eq "..."'
