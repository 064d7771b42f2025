"""The ``python -m devhost`` command line: ``run`` the app, ``blob`` put/ls/get on Azurite, and
``bus`` send/ls/dlq on the local Service Bus broker."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
import uuid
from collections.abc import Sequence
from pathlib import Path

from azure.core.exceptions import AzureError, ResourceNotFoundError, ServiceRequestError
from azure.storage.blob import BlobServiceClient
from psycopg_pool import ConnectionPool, PoolTimeout

from devhost import tokens
from devhost.blobs import DEFAULT_CONNECTION
from devhost.errors import DevhostError
from devhost.host import redact_url, run
from devhost.logs import setup_console_logging
from devhost.services import REPO_ROOT, azurite_connection_string
from devhost.settings import SETTINGS, ServiceSettings, load_local_settings
from devhost.storage import development_storage_ports, is_development_storage
from shared.adapters.local_broker import LocalBroker
from shared.errors import AdvisorError, UpstreamError
from shared.messaging import OutboundMessage

log = logging.getLogger(__name__)

DESCRIPTION = """\
A local Functions host for function_app.py: HTTP triggers on http://127.0.0.1:7071/api/,
blob triggers from Azurite, timer triggers, Service Bus triggers from a local broker kept in
the embedded PostgreSQL. Never deployed.

commands:
  run                         start PostgreSQL, Azurite, migrations and the app (make run)
  blob put CONTAINER FILE     upload a local file (--name to choose the blob name)
  blob ls CONTAINER           list blobs (--prefix to filter)
  blob get CONTAINER NAME     download a blob to stdout or -o FILE
  bus send QUEUE BODY         send a message to the local broker (--id, --session, ...)
  bus ls                      list the local broker's queues and their message counts
  bus dlq QUEUE               show a queue's dead letters (--max N)
  token --role ROLE           print a local bearer token for the portal API (--client, --firm)
"""


def _settings_epilog() -> str:
    lines = ["settings (environment or local.settings.json Values):"]
    for name, (default, meaning) in SETTINGS.items():
        lines.append(f"  {name} (default {default})")
        lines.append(textwrap.fill(meaning, 92, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m devhost``."""
    parser = argparse.ArgumentParser(
        prog="python -m devhost",
        description=DESCRIPTION,
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=REPO_ROOT,
        help="directory of function_app.py and local.settings.json (default: the repo root)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run_cmd = commands.add_parser("run", help="serve the app with everything it needs")
    run_cmd.add_argument("--port", type=int, help="HTTP port (default LocalHttpPort or 7071)")
    run_cmd.add_argument(
        "--migrations", type=Path, help="migrations directory (default <app dir>/migrations)"
    )

    blob = commands.add_parser("blob", help="put, list and get blobs on the local Azurite")
    blob_commands = blob.add_subparsers(dest="blob_command", required=True, metavar="ACTION")
    put = blob_commands.add_parser("put", help="upload a local file as a blob")
    put.add_argument("container")
    put.add_argument("file", type=Path)
    put.add_argument("--name", help="blob name (default: the file's name)")
    ls = blob_commands.add_parser("ls", help="list the blobs of a container")
    ls.add_argument("container")
    ls.add_argument("--prefix", default=None, help="only names starting with this")
    get = blob_commands.add_parser("get", help="download a blob")
    get.add_argument("container")
    get.add_argument("name")
    get.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")

    bus = commands.add_parser("bus", help="send, count and inspect messages of the local broker")
    bus_commands = bus.add_subparsers(dest="bus_command", required=True, metavar="ACTION")
    send = bus_commands.add_parser("send", help="send one message")
    send.add_argument("queue")
    send.add_argument("body", help="the message body (text); @FILE reads a file")
    send.add_argument("--id", help="MessageId (default: a new UUID)")
    send.add_argument("--session", help="SessionId (required by session queues)")
    send.add_argument("--subject", help="Subject (label)")
    send.add_argument("--content-type", default="application/json")
    send.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an application property; repeat for more",
    )
    bus_commands.add_parser("ls", help="list queues with active, scheduled, locked, dead counts")
    dlq = bus_commands.add_parser("dlq", help="peek a queue's dead-letter queue")
    dlq.add_argument("queue")
    dlq.add_argument("--max", type=int, default=20, help="how many at most (default 20)")
    tokens.add_parser(commands)
    return parser


def storage_connection_string(app_dir: Path) -> str:
    """The storage the blob commands use: ``AzureWebJobsStorage`` after local settings.

    The local emulator (or no setting) means Azurite on 127.0.0.1 at the configured ports.
    """
    load_local_settings(app_dir)
    value = os.environ.get(DEFAULT_CONNECTION)
    if value and not is_development_storage(value):
        return value
    blob_port, queue_port = development_storage_ports(value)
    services = ServiceSettings.from_env(app_dir)
    return azurite_connection_string(
        blob_port or services.azurite_blob_port, queue_port or services.azurite_queue_port
    )


def _blob_command(args: argparse.Namespace) -> int:
    # A person is waiting: fail at once when Azurite is down rather than retry for a minute.
    client = BlobServiceClient.from_connection_string(
        storage_connection_string(args.app_dir), retry_total=0, connection_timeout=10
    )
    container = client.get_container_client(args.container)
    try:
        if args.blob_command == "put":
            name = args.name or args.file.name
            if not container.exists():
                container.create_container()
            with args.file.open("rb") as data:
                container.upload_blob(name, data, overwrite=True)
            print(f"uploaded {args.file} to {args.container}/{name}")
        elif args.blob_command == "ls":
            for item in container.list_blobs(name_starts_with=args.prefix):
                modified = item.last_modified.isoformat() if item.last_modified else "-"
                print(f"{item.size:>12}  {modified}  {item.etag}  {item.name}")
        else:
            downloader = container.download_blob(args.name)
            if args.output is None:
                downloader.readinto(sys.stdout.buffer)
                sys.stdout.buffer.flush()
            else:
                with args.output.open("wb") as out:
                    downloader.readinto(out)
                print(f"wrote {args.container}/{args.name} to {args.output}")
    except ServiceRequestError as exc:
        print(
            f"cannot reach blob storage at {container.primary_endpoint}: {exc}\n"
            "is `make run` (python -m devhost run) running?",
            file=sys.stderr,
        )
        return 1
    except ResourceNotFoundError:
        print(f"not found: {args.container}/{getattr(args, 'name', '')}", file=sys.stderr)
        return 1
    except AzureError as exc:
        print(f"storage error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


def _bus_command(args: argparse.Namespace) -> int:
    load_local_settings(args.app_dir)
    url = os.environ.get("DATABASE_URL") or (
        f"postgresql://postgres@127.0.0.1:{ServiceSettings.from_env(args.app_dir).pg_port}"
        "/advisoros"
    )
    try:
        with ConnectionPool(url, min_size=0, max_size=1, open=True, timeout=10) as pool:
            broker = LocalBroker(pool)
            if args.bus_command == "send":
                return _bus_send(broker, args)
            if args.bus_command == "ls":
                print(f"{'queue':<28} {'active':>8} {'scheduled':>10} {'locked':>8} {'dead':>8}")
                for d in broker.depths():
                    print(
                        f"{d.queue:<28} {d.active:>8} {d.scheduled:>10} {d.locked:>8}"
                        f" {d.dead_lettered:>8}"
                    )
                return 0
            for dead in broker.peek_dead_letters(args.queue, args.max):
                print(
                    f"{dead.sequence_number:>8}  {dead.message_id}  session={dead.session_id}"
                    f"  deliveries={dead.delivery_count}  {dead.dead_letter_reason}:"
                    f" {dead.dead_letter_description}"
                )
            return 0
    except (UpstreamError, PoolTimeout):
        print(
            f"cannot reach the local broker's database at {redact_url(url)}\n"
            "is `make run` (python -m devhost run) running?",
            file=sys.stderr,
        )
        return 1
    except AdvisorError as exc:
        print(f"devhost: {exc}", file=sys.stderr)
        return 1


def _bus_send(broker: LocalBroker, args: argparse.Namespace) -> int:
    body = Path(args.body[1:]).read_bytes() if args.body.startswith("@") else args.body.encode()
    properties = {}
    for item in args.property:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"devhost: --property {item!r} must be NAME=VALUE", file=sys.stderr)
            return 2
        properties[name] = value
    message = OutboundMessage(
        message_id=args.id or str(uuid.uuid4()),
        body=body,
        session_id=args.session,
        content_type=args.content_type,
        subject=args.subject,
        application_properties=properties,
    )
    broker.send(args.queue, [message])
    print(f"sent {message.message_id} to {args.queue}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return run(args.app_dir, http_port=args.port, migrations_dir=args.migrations)
        setup_console_logging("WARNING")
        if args.command == "bus":
            return _bus_command(args)
        if args.command == "token":
            return tokens.token_command(args)
        return _blob_command(args)
    except DevhostError as exc:
        print(f"devhost: {exc}", file=sys.stderr)
        return 1
