"""The Durable SDK's client shares one aiohttp session per process, opened on the event loop
that first calls the management API. The Functions worker has a single loop, so that is
enough there; tests run the client on loops of their own, one after another in one process,
so each such loop drops the session it finds (bound to a loop that may be gone) and closes
the one it opened."""

from __future__ import annotations

from azure.durable_functions.models.utils import http_utils

from devhost.durable_api import close_client_session


def drop_session() -> None:
    """Forget the session of another loop; the next call opens one on the current loop."""
    http_utils._client_session = None


async def close_session() -> None:
    """Close the session this loop opened, if it did (run it on that loop)."""
    await close_client_session()
