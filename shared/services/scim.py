"""SCIM 2.0 provisioning (RFC 7643/7644) of the firm's users and groups, as Entra ID and
Okta send it. A group's display name gives its members their role:

- ``advisoros-firm-admins``: firm admin
- ``advisoros-advisors``: advisor
- ``advisoros-client-<client id>``: client user of that client

Other groups are kept but grant nothing; a user in no such group signs in to nothing.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg

from shared.adapters import postgres
from shared.errors import Conflict, NotFound, ValidationError
from shared.services import audit

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ROLE_GROUPS = {"advisoros-firm-admins": "firm_admin", "advisoros-advisors": "advisor"}
CLIENT_GROUP = re.compile(r"^advisoros-client-([0-9a-fA-F-]{36})$")
# Higher wins when a user is in several groups.
ROLE_RANK = {"client_user": 1, "advisor": 2, "firm_admin": 3}
_FILTER = re.compile(r'^\s*(userName|displayName|externalId)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.I)
MAX_RESULTS = 200

_USER_COLUMNS = "id, user_name, external_id, display_name, email, active, created_at, updated_at"


def _user_json(row: tuple[Any, ...]) -> dict[str, Any]:
    user_id, user_name, external_id, display_name, email, active, created, updated = row
    body: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "id": str(user_id),
        "userName": user_name,
        "active": active,
        "meta": {
            "resourceType": "User",
            "created": created.isoformat(),
            "lastModified": updated.isoformat(),
            "location": f"/scim/v2/Users/{user_id}",
        },
    }
    if external_id:
        body["externalId"] = external_id
    if display_name:
        body["displayName"] = display_name
    if email:
        body["emails"] = [{"value": email, "type": "work", "primary": True}]
    return body


def _text(data: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"attribute {name!r} must be a non-empty string")
    return value.strip()


def _primary_email(data: dict[str, Any]) -> str | None:
    emails = data.get("emails")
    if not isinstance(emails, list):
        return None
    found = [e for e in emails if isinstance(e, dict) and isinstance(e.get("value"), str)]
    primary = [e for e in found if e.get("primary")] or found
    return str(primary[0]["value"]) if primary else None


def _as_bool(value: object, name: str) -> bool:
    # Entra sends booleans as the strings "True" and "False" in PATCH values.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValidationError(f"attribute {name!r} must be true or false")


def create_user(firm_id: uuid.UUID, data: dict[str, Any]) -> dict[str, Any]:
    """Create a user.

    Raises:
        ValidationError: userName missing or a value of the wrong type.
        Conflict: the userName is taken (SCIM ``uniqueness``).
    """
    user_name = _text(data, "userName", required=True)
    active = _as_bool(data.get("active", True), "active")
    with postgres.transaction() as conn:
        row = conn.execute(
            "INSERT INTO users (firm_id, user_name, external_id, display_name, email, active)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT ((lower(user_name))) DO NOTHING"
            f" RETURNING {_USER_COLUMNS}",
            (
                firm_id,
                user_name,
                _text(data, "externalId"),
                _text(data, "displayName"),
                _primary_email(data),
                active,
            ),
        ).fetchone()
        if row is None:
            raise Conflict(f"userName {user_name!r} is already provisioned")
        _audit(conn, "user.provisioned", row[0], {"user_name": user_name, "active": active})
    return _user_json(row)


def get_user(firm_id: uuid.UUID, user_id: str) -> dict[str, Any]:
    """One user of the firm. Raises NotFound."""
    with postgres.transaction() as conn:
        return _user_json(_user_row(conn, firm_id, user_id))


def list_users(firm_id: uuid.UUID, filter_text: str | None) -> dict[str, Any]:
    """Users, optionally ``filter=userName eq "..."`` (or externalId)."""
    where, args = "firm_id = %s", [str(firm_id)]
    if filter_text:
        attribute, value = _parse_filter(filter_text, ("username", "externalid"))
        column = "lower(user_name)" if attribute == "username" else "external_id"
        where += f" AND {column} = %s"
        args.append(value.lower() if attribute == "username" else value)
    with postgres.transaction() as conn:
        rows = conn.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE {where} ORDER BY user_name LIMIT %s",
            (*args, MAX_RESULTS),
        ).fetchall()
    return _list([_user_json(r) for r in rows])


def patch_user(firm_id: uuid.UUID, user_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """Apply a PatchOp: ``active``, ``displayName``, ``externalId``, ``userName``.

    Raises:
        ValidationError: not a PatchOp, or an operation on another attribute.
        NotFound: no such user.
    """
    changes: dict[str, Any] = {}
    for op in _operations(data):
        kind = str(op.get("op", "")).lower()
        if kind not in ("add", "replace"):
            raise ValidationError(f"op {op.get('op')!r} is not supported on users")
        path = op.get("path")
        values = op.get("value") if path is None else {str(path): op.get("value")}
        if not isinstance(values, dict):
            raise ValidationError("a PATCH operation without path needs an object value")
        for name, value in values.items():
            if name == "active":
                changes["active"] = _as_bool(value, "active")
            elif name in ("displayName", "externalId", "userName"):
                changes[name] = _text({name: value}, name, required=True)
            else:
                raise ValidationError(f"attribute {name!r} cannot be patched")
    columns = {"active": "active", "displayName": "display_name", "externalId": "external_id"}
    columns["userName"] = "user_name"
    with postgres.transaction() as conn:
        _user_row(conn, firm_id, user_id)
        for name, value in changes.items():
            conn.execute(
                f"UPDATE users SET {columns[name]} = %s, updated_at = now() WHERE id = %s",
                (value, user_id),
            )
        _audit(conn, "user.patched", user_id, {"changed": sorted(changes)})
        return _user_json(_user_row(conn, firm_id, user_id))


def delete_user(firm_id: uuid.UUID, user_id: str) -> None:
    """Remove a user (and its group memberships). Raises NotFound."""
    with postgres.transaction() as conn:
        _user_row(conn, firm_id, user_id)
        conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
        _audit(conn, "user.deprovisioned", user_id, {})


def _user_row(conn: psycopg.Connection, firm_id: uuid.UUID, user_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        f"SELECT {_USER_COLUMNS} FROM users WHERE firm_id = %s AND id = %s",
        (firm_id, _uuid(user_id, "User")),
    ).fetchone()
    if row is None:
        raise NotFound(f"User {user_id} not found")
    return tuple(row)


# -- Groups --------------------------------------------------------------------------------


def _group_role(name: str) -> tuple[str | None, uuid.UUID | None]:
    if name.lower() in ROLE_GROUPS:
        return ROLE_GROUPS[name.lower()], None
    match = CLIENT_GROUP.match(name)
    if match:
        return "client_user", uuid.UUID(match.group(1))
    return None, None


def _group_json(conn: psycopg.Connection, row: tuple[Any, ...]) -> dict[str, Any]:
    group_id, name, external_id, created = row
    members = conn.execute(
        "SELECT m.user_id, u.user_name FROM user_group_members m JOIN users u ON u.id = m.user_id"
        " WHERE m.group_id = %s ORDER BY u.user_name",
        (group_id,),
    ).fetchall()
    body: dict[str, Any] = {
        "schemas": [GROUP_SCHEMA],
        "id": str(group_id),
        "displayName": name,
        "members": [{"value": str(u), "display": n} for u, n in members],
        "meta": {
            "resourceType": "Group",
            "created": created.isoformat(),
            "location": f"/scim/v2/Groups/{group_id}",
        },
    }
    if external_id:
        body["externalId"] = external_id
    return body


def create_group(firm_id: uuid.UUID, data: dict[str, Any]) -> dict[str, Any]:
    """Create a group with its members; members get the group's role.

    Raises:
        ValidationError: displayName missing, or a client group naming another firm's client.
        Conflict: the displayName is taken.
    """
    name = _text(data, "displayName", required=True)
    assert name is not None
    role, client = _group_role(name)
    with postgres.transaction() as conn:
        if (
            client is not None
            and not conn.execute(
                "SELECT 1 FROM clients WHERE id = %s AND firm_id = %s", (client, firm_id)
            ).fetchone()
        ):
            raise ValidationError(f"displayName {name!r} names a client this firm does not have")
        row = conn.execute(
            "INSERT INTO user_groups (firm_id, display_name, external_id, role, client_id)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (firm_id, display_name) DO NOTHING"
            " RETURNING id, display_name, external_id, created_at",
            (firm_id, name, _text(data, "externalId"), role, client),
        ).fetchone()
        if row is None:
            raise Conflict(f"group {name!r} already exists")
        _set_members(conn, firm_id, row[0], _member_ids(data.get("members", [])), add=True)
        return _group_json(conn, tuple(row))


def get_group(firm_id: uuid.UUID, group_id: str) -> dict[str, Any]:
    with postgres.transaction() as conn:
        return _group_json(conn, _group_row(conn, firm_id, group_id))


def list_groups(firm_id: uuid.UUID, filter_text: str | None) -> dict[str, Any]:
    """Groups, optionally ``filter=displayName eq "..."``."""
    where, args = "firm_id = %s", [str(firm_id)]
    if filter_text:
        attribute, value = _parse_filter(filter_text, ("displayname", "externalid"))
        where += (
            " AND display_name = %s" if attribute == "displayname" else " AND external_id = %s"
        )
        args.append(value)
    with postgres.transaction() as conn:
        rows = conn.execute(
            "SELECT id, display_name, external_id, created_at FROM user_groups"
            f" WHERE {where} ORDER BY display_name LIMIT %s",
            (*args, MAX_RESULTS),
        ).fetchall()
        return _list([_group_json(conn, tuple(r)) for r in rows])


def patch_group(firm_id: uuid.UUID, group_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """Add or remove members (``path: members``, or ``members[value eq "id"]`` to remove)."""
    with postgres.transaction() as conn:
        row = _group_row(conn, firm_id, group_id)
        for op in _operations(data):
            kind = str(op.get("op", "")).lower()
            path = str(op.get("path") or "")
            selected = re.match(r'^members\[value eq "([^"]+)"\]$', path)
            if kind == "add" and path == "members":
                _set_members(conn, firm_id, row[0], _member_ids(op.get("value")), add=True)
            elif kind == "remove" and selected:
                _set_members(conn, firm_id, row[0], [selected.group(1)], add=False)
            elif kind == "remove" and path == "members":
                _set_members(conn, firm_id, row[0], _member_ids(op.get("value")), add=False)
            elif kind == "replace" and path == "displayName":
                raise ValidationError("a group's displayName decides its role and cannot change")
            else:
                raise ValidationError(
                    f"op {op.get('op')!r} on {path or 'the group'!r} is not supported"
                )
        return _group_json(conn, row)


def delete_group(firm_id: uuid.UUID, group_id: str) -> None:
    """Remove a group; its members lose the role it gave."""
    with postgres.transaction() as conn:
        row = _group_row(conn, firm_id, group_id)
        members = [
            str(r[0])
            for r in conn.execute(
                "SELECT user_id FROM user_group_members WHERE group_id = %s", (row[0],)
            ).fetchall()
        ]
        conn.execute("DELETE FROM user_groups WHERE id = %s", (row[0],))
        for member in members:
            _recompute_role(conn, uuid.UUID(member))


def _group_row(conn: psycopg.Connection, firm_id: uuid.UUID, group_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT id, display_name, external_id, created_at FROM user_groups"
        " WHERE firm_id = %s AND id = %s",
        (firm_id, _uuid(group_id, "Group")),
    ).fetchone()
    if row is None:
        raise NotFound(f"Group {group_id} not found")
    return tuple(row)


def _member_ids(value: object) -> list[str]:
    if not isinstance(value, list) or not all(
        isinstance(v, dict) and isinstance(v.get("value"), str) for v in value
    ):
        raise ValidationError('members must be a list of {"value": "<user id>"}')
    return [str(v["value"]) for v in value]


def _set_members(
    conn: psycopg.Connection, firm_id: uuid.UUID, group_id: uuid.UUID, ids: list[str], *, add: bool
) -> None:
    for raw in ids:
        user_id = _uuid(raw, "User")
        if not conn.execute(
            "SELECT 1 FROM users WHERE id = %s AND firm_id = %s", (user_id, firm_id)
        ).fetchone():
            raise ValidationError(f"member {raw!r} is not a user of this firm")
        if add:
            conn.execute(
                "INSERT INTO user_group_members (group_id, user_id) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                (group_id, user_id),
            )
        else:
            conn.execute(
                "DELETE FROM user_group_members WHERE group_id = %s AND user_id = %s",
                (group_id, user_id),
            )
        _recompute_role(conn, user_id)


def _recompute_role(conn: psycopg.Connection, user_id: uuid.UUID) -> None:
    """The user's role is the highest its groups give; none when in no role group."""
    rows = conn.execute(
        "SELECT g.role, g.client_id FROM user_group_members m"
        " JOIN user_groups g ON g.id = m.group_id"
        " WHERE m.user_id = %s AND g.role IS NOT NULL ORDER BY g.display_name",
        (user_id,),
    ).fetchall()
    best = max(rows, key=lambda r: ROLE_RANK[r[0]], default=(None, None))
    # Limitation: a user in several client groups belongs to the first by name only.
    conn.execute(
        "UPDATE users SET role = %s, client_id = %s, updated_at = now() WHERE id = %s",
        (best[0], best[1] if best[0] == "client_user" else None, user_id),
    )
    _audit(conn, "user.role.changed", user_id, {"role": best[0]})


# -- Shared --------------------------------------------------------------------------------


def _operations(data: dict[str, Any]) -> list[dict[str, Any]]:
    ops = data.get("Operations")
    if PATCH_SCHEMA not in (data.get("schemas") or []) or not isinstance(ops, list) or not ops:
        raise ValidationError(f"the body must be a {PATCH_SCHEMA} with Operations")
    if not all(isinstance(op, dict) for op in ops):
        raise ValidationError("each of Operations must be an object")
    return ops


def _parse_filter(text: str, allowed: tuple[str, ...]) -> tuple[str, str]:
    match = _FILTER.match(text)
    if match is None or match.group(1).lower() not in allowed:
        shown = {"username": "userName", "displayname": "displayName"}[allowed[0]]
        raise ValidationError(f'filter {text!r} is not supported; use {shown} eq "..."')
    return match.group(1).lower(), re.sub(r"\\(.)", r"\1", match.group(2))


def _list(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [LIST_SCHEMA],
        "totalResults": len(resources),
        "startIndex": 1,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


def _uuid(raw: str, kind: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise NotFound(f"{kind} {raw} not found") from None


def _audit(
    conn: psycopg.Connection, action: str, user_id: object, details: dict[str, Any]
) -> None:
    audit.record(
        conn, actor="scim", action=action, client_id=None, subject=str(user_id), details=details
    )
