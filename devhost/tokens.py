"""``python -m devhost token``: provision a local user and print a bearer token of the local
development issuer for it, so the portal API can be tried with curl."""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

import psycopg

from devhost.settings import ServiceSettings, load_local_settings
from shared.errors import AdvisorError

ROLES = ("firm_admin", "advisor", "client_user")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare the ``token`` command."""
    token = commands.add_parser(
        "token", help="print a local bearer token for the portal API (not in production)"
    )
    token.add_argument("--role", choices=ROLES, required=True)
    token.add_argument("--client", type=uuid.UUID, help="the client (required for client_user)")
    token.add_argument("--firm", type=uuid.UUID, help="the firm (default: the client's)")
    token.add_argument("--user", help="sign-in name (default <role>@localhost.test)")
    token.add_argument("--ttl", type=int, default=8 * 3600, help="lifetime in seconds")


def token_command(args: argparse.Namespace) -> int:
    """Provision (or update) the user, then print its token on stdout."""
    load_local_settings(args.app_dir)
    os.environ.setdefault(
        "DATABASE_URL",
        f"postgresql://postgres@127.0.0.1:{ServiceSettings.from_env(args.app_dir).pg_port}"
        "/advisoros",
    )
    key_dir = Path(os.environ.get("PORTAL_LOCAL_KEY_DIR") or ".local/portal-issuer")
    if not key_dir.is_absolute():
        os.environ["PORTAL_LOCAL_KEY_DIR"] = str(args.app_dir / key_dir)
    if args.role == "client_user" and args.client is None:
        print("devhost: --client is required for --role client_user", file=sys.stderr)
        return 2
    from shared.config import get_settings
    from shared.services import identity

    user_name = args.user or f"{args.role.replace('_', '-')}@localhost.test"
    try:
        settings = get_settings()
        if settings.app_environment == "production":
            print(
                "devhost: the local issuer is refused when APP_ENVIRONMENT is production",
                file=sys.stderr,
            )
            return 1
        _provision(settings.database_url, args, user_name)
        print(identity.issue_local_token(user_name, ttl_s=args.ttl))
    except (AdvisorError, psycopg.Error) as exc:
        print(f"devhost: {exc}", file=sys.stderr)
        return 1
    return 0


def _provision(database_url: str, args: argparse.Namespace, user_name: str) -> None:
    with psycopg.connect(database_url) as conn:
        firm = args.firm
        if args.client is not None:
            row = conn.execute(
                "SELECT firm_id FROM clients WHERE id = %s", (args.client,)
            ).fetchone()
            if row is None:
                raise AdvisorError(f"client {args.client} does not exist")
            firm = firm or row[0]
        if firm is None:
            firms = conn.execute("SELECT id FROM firms ORDER BY created_at LIMIT 2").fetchall()
            if len(firms) != 1:
                raise AdvisorError("name the firm with --firm (or a client with --client)")
            firm = firms[0][0]
        conn.execute(
            "INSERT INTO users (firm_id, user_name, role, client_id) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT ((lower(user_name))) DO UPDATE SET firm_id = excluded.firm_id,"
            " role = excluded.role, client_id = excluded.client_id, active = true,"
            " updated_at = now()",
            (firm, user_name, args.role, args.client if args.role == "client_user" else None),
        )
