"""The ``python -m devhost`` command line: ``run`` the app, and ``blob`` put/ls/get on Azurite."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from azure.core.exceptions import AzureError, ResourceNotFoundError, ServiceRequestError
from azure.storage.blob import BlobServiceClient

from devhost.blobs import DEFAULT_CONNECTION
from devhost.errors import DevhostError
from devhost.host import run
from devhost.logs import setup_console_logging
from devhost.services import REPO_ROOT, azurite_connection_string
from devhost.settings import SETTINGS, ServiceSettings, load_local_settings
from devhost.storage import development_storage_ports, is_development_storage

log = logging.getLogger(__name__)

DESCRIPTION = """\
A local Functions host for function_app.py: HTTP triggers on http://127.0.0.1:7071/api/,
blob triggers from Azurite, timer triggers, with embedded PostgreSQL. Never deployed.

commands:
  run                         start PostgreSQL, Azurite, migrations and the app (make run)
  blob put CONTAINER FILE     upload a local file (--name to choose the blob name)
  blob ls CONTAINER           list blobs (--prefix to filter)
  blob get CONTAINER NAME     download a blob to stdout or -o FILE
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return run(args.app_dir, http_port=args.port, migrations_dir=args.migrations)
        setup_console_logging("WARNING")
        return _blob_command(args)
    except DevhostError as exc:
        print(f"devhost: {exc}", file=sys.stderr)
        return 1
