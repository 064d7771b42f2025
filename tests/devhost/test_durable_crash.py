"""SIGKILL the devhost in the middle of orchestrations: after a restart every instance ends
with the right output, and no step whose result was recorded runs again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from devhost.services import free_port
from tests.devhost.conftest import wait_for
from tests.devhost.test_durable import APP_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTANCES = 6
WORDS = 4


class Host:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        pg_port = free_port()
        self.database_url = f"postgresql://postgres@127.0.0.1:{pg_port}/advisoros"
        self.run_log = tmp_path / "runs.jsonl"
        self.out = tmp_path / "devhost.log"
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if k not in ("AzureWebJobsStorage", "DATABASE_URL")
            },
            "DEVHOST_DATA_DIR": str(tmp_path / "local"),
            "DEVHOST_PG_PORT": str(pg_port),
            "DEVHOST_AZURITE_BLOB_PORT": str(free_port()),
            "DEVHOST_AZURITE_QUEUE_PORT": str(free_port()),
            "DEVHOST_DURABLE_LEASE_S": "2",
            "DEVHOST_DURABLE_POLL_INTERVAL_S": "0.05",
            "DURABLE_FIXTURE_RUN_LOG": str(self.run_log),
            "DURABLE_FIXTURE_SLOW_S": "0.2",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.out.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "devhost",
                    "--app-dir",
                    str(APP_DIR),
                    "run",
                    "--port",
                    str(self.port),
                ],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: self._up(), 90, "the devhost to answer")

    def _up(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, self.out.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2):
                return True
        except OSError:
            return False

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=60)


def _recorded_results(database_url: str) -> set[str]:
    """Activity inputs whose result is already in the task hub (history or inbox)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT h.instance_id, (h.event->>'TaskScheduledId')::int FROM ("
            "  SELECT instance_id, event FROM devhost.durable_history"
            "  UNION ALL SELECT instance_id, event FROM devhost.durable_inbox) h"
            " WHERE (h.event->>'EventType')::int = 5"
        ).fetchall()
    return {f"{iid.split('-')[-1]}-{task}" for iid, task in rows}


def _statuses(database_url: str) -> dict[str, tuple[str, Any]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT instance_id, status, output FROM devhost.durable_instances"
        ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_sigkill_mid_run_loses_nothing_and_repeats_no_recorded_step(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.start()
    try:
        for i in range(INSTANCES):
            words = [f"{i}-{j}" for j in range(WORDS)]
            host.post(f"/runtime/webhooks/durabletask/orchestrators/slow_chain/crash-{i}", words)
        # Killed once some step's result is recorded: the first steps all start at once,
        # so a count of steps started says nothing of what is recorded.
        wait_for(
            lambda: bool(_recorded_results(host.database_url)),
            60,
            "some activity results to be recorded",
        )
        host.kill()
        recorded = _recorded_results(host.database_url)
        before = len(host.run_log.read_text().splitlines())
        assert 0 < len(recorded) < INSTANCES * WORDS

        host.start()
        wait_for(
            lambda: all(s == "Completed" for s, _ in _statuses(host.database_url).values()),
            120,
            "every instance to complete after the restart",
        )
        outputs = _statuses(host.database_url)
        assert len(outputs) == INSTANCES
        for i in range(INSTANCES):
            assert json.loads(outputs[f"crash-{i}"][1]) == [
                f"{i}-{j}".upper() for j in range(WORDS)
            ]
        after = [json.loads(line)[1] for line in host.run_log.read_text().splitlines()[before:]]
        # Task j of instance i has input "i-j": a step whose result was recorded never reruns.
        assert not recorded & set(after)
        everything = [json.loads(line)[1] for line in host.run_log.read_text().splitlines()]
        assert set(everything) == {f"{i}-{j}" for i in range(INSTANCES) for j in range(WORDS)}
    finally:
        host.stop()
