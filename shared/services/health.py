"""Health: can this worker reach what it depends on right now."""

from __future__ import annotations

import logging
import time
from typing import Any

from shared.adapters import blob, postgres
from shared.errors import AdvisorError

log = logging.getLogger(__name__)


def check() -> dict[str, Any]:
    """Probe the database and blob storage; ``status`` is ``ok`` only when both answer."""
    checks: dict[str, Any] = {}
    for name, probe in (("database", _database), ("storage", blob.ping)):
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
