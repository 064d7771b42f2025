"""Health: can this worker reach what it depends on right now."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from shared.adapters import blob, postgres
from shared.errors import AdvisorError

log = logging.getLogger(__name__)


def ready() -> dict[str, Any]:
    """Probe the database, blob storage and Service Bus; ``status`` is ``ok`` only when all
    three answer, else ``failing`` with ``down`` naming the ones that did not (readiness).
    """
    from shared.adapters import servicebus

    result = _probe((("database", _database), ("storage", blob.ping), ("bus", servicebus.ping)))
    result["down"] = [name for name, c in result["checks"].items() if c["status"] != "ok"]
    return result


def _probe(probes: tuple[tuple[str, Callable[[], None]], ...]) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    for name, probe in probes:
        started = time.perf_counter()
        try:
            probe()
            checks[name] = {"status": "ok"}
        except AdvisorError as exc:
            checks[name] = {"status": "failing", "error": str(exc)}
        checks[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    overall = "ok" if all(c["status"] == "ok" for c in checks.values()) else "failing"
    return {"status": overall, "checks": checks}


def _database() -> None:
    with postgres.transaction() as conn:
        conn.execute("SELECT 1")
