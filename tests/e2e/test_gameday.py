"""The game day script on a devhost of its own: Postgres stopped, Azurite stopped and the
consumer killed while signed Stripe events flow in, and every event applied exactly once."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_gameday_loses_nothing_and_applies_nothing_twice() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gameday.py", "--events", "60"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split(" after ")[0] for line in lines if " after " in line] == [
        "Postgres stopped",
        "Azurite stopped",
        "consumer killed",
    ]
    assert lines[-2] == (
        "database: inbox=60, inbox_distinct=60, applied=60, postings=60, entries=60,"
        " outbox_unsent=0, dead_letters=0"
    )
    assert lines[-1] == "nothing lost, nothing applied twice"
