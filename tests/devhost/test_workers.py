"""``FUNCTIONS_WORKER_PROCESS_COUNT``: several processes answer HTTP on one port, while timers
and Service Bus triggers run in the first process only, which answers no HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from devhost.errors import ConfigError, ServiceError
from devhost.services import REPO_ROOT
from devhost.settings import HostSettings
from devhost.workers import PARENT_CHECK_S, HttpWorkers, _hold_port
from tests.devhost.conftest import FIXTURE_APP_DIR, devhost_process, wait_for


def _lines(path: Path, kind: str) -> list[int]:
    if not path.exists():
        return []
    return [
        int(line.split()[1]) for line in path.read_text().splitlines() if line.split()[0] == kind
    ]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _answering(port: int, count: int) -> set[int]:
    """The pids of the processes answering on ``port``, until ``count`` of them did."""
    pids: set[int] = set()
    for _ in range(200):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/pid") as resp:
            pids.add(int(resp.read()))
        if len(pids) == count:
            break
    return pids


def test_two_processes_share_the_port_and_only_the_first_runs_timers_and_consumers(
    tmp_path: Path,
):
    process_log = tmp_path / "processes.log"
    settings = {
        "DEVHOST_BUS_POLL_INTERVAL_S": "0.1",
        "FUNCTIONS_WORKER_PROCESS_COUNT": "2",
        "FX_TICK_SCHEDULE": "* * * * * *",
        "FX_PROCESS_LOG": str(process_log),
    }
    with devhost_process(tmp_path, settings) as host:
        proc, ports, env = host.proc, host.ports, host.env
        assert proc.poll() is None, host.text

        # Each request opens a connection of its own; the kernel spreads them over both.
        answered = _answering(ports["http"], 2)
        assert len(answered) == 2, answered
        assert proc.pid not in answered

        for n in range(5):
            sent = subprocess.run(
                [sys.executable, "-m", "devhost", "--app-dir", str(FIXTURE_APP_DIR), "bus",
                 "send", "fx-orders", f'{{"n": {n}}}', "--id", f"workers-{n}"],
                cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert sent.returncode == 0, sent.stderr
        wait_for(lambda: len(_lines(process_log, "bus")) >= 5, 30, "the messages to be handled")
        wait_for(lambda: len(_lines(process_log, "tick")) >= 3, 30, "three timer ticks")

        assert set(_lines(process_log, "bus")) == {proc.pid}
        assert len(_lines(process_log, "bus")) == 5
        assert set(_lines(process_log, "tick")) == {proc.pid}

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert not any(_running(pid) for pid in answered)


def test_process_count_is_limited_as_the_functions_host_limits_it():
    assert HostSettings.from_env({"FUNCTIONS_WORKER_PROCESS_COUNT": "10"}).http_processes == 10
    assert HostSettings.from_env({}).http_processes == 1
    with pytest.raises(ConfigError, match="FUNCTIONS_WORKER_PROCESS_COUNT must be at most 10"):
        HostSettings.from_env({"FUNCTIONS_WORKER_PROCESS_COUNT": "11"})
    with pytest.raises(ConfigError, match="FUNCTIONS_WORKER_PROCESS_COUNT must be at least 1"):
        HostSettings.from_env({"FUNCTIONS_WORKER_PROCESS_COUNT": "0"})


def test_an_http_process_that_dies_is_replaced_and_every_process_stops_with_the_host(
    tmp_path: Path,
):
    settings = {
        "FUNCTIONS_WORKER_PROCESS_COUNT": "2",
        "FX_PROCESS_LOG": str(tmp_path / "processes.log"),
    }

    with devhost_process(tmp_path, settings) as host:
        proc, output = host.proc, host.output
        assert proc.poll() is None, host.text
        first = _answering(host.ports["http"], 2)
        assert len(first) == 2, first

        dead = min(first)
        os.kill(dead, signal.SIGKILL)
        wait_for(
            lambda: any(f"HTTP worker process {dead} exited" in line for line in output),
            30,
            "the host to see its worker die",
        )
        wait_for(
            lambda: any(re.search(r"HTTP worker process \d+ listening", ln) for ln in output),
            90,
            "a new worker to listen",
        )
        now = _answering(host.ports["http"], 2)
        assert len(now) == 2 and dead not in now and proc.pid not in now, now

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not any(_running(pid) for pid in now)


def _server_closed_connection(listener: socket.socket) -> None:
    """Leave the listener's port with a connection in TIME_WAIT, as a host that answered and
    then stopped leaves it."""
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    accepted.close()
    client.recv(1)
    client.close()
    listener.close()


def test_the_port_a_single_process_host_just_served_can_be_taken_at_once():
    listener = socket.socket()
    # As asyncio listens with one process: SO_REUSEADDR.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    _server_closed_connection(listener)

    holder = _hold_port(port)
    assert holder.getsockname()[1] == port
    holder.close()


def test_a_port_another_host_serves_with_several_processes_is_refused(tmp_path: Path):
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen()
    port = other.getsockname()[1]
    try:
        with pytest.raises(ServiceError, match=f"cannot listen on 127.0.0.1:{port} "):
            HttpWorkers(tmp_path, port, 2).start()
    finally:
        other.close()


def test_the_port_is_taken_once_the_processes_a_killed_host_left_let_it_go():
    left = socket.socket()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    left.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    left.bind(("127.0.0.1", 0))
    left.listen()
    port = left.getsockname()[1]
    # As an HTTP process closes its socket when it sees its host gone.
    closer = threading.Timer(PARENT_CHECK_S / 2, left.close)
    closer.start()
    try:
        holder = _hold_port(port)
    finally:
        closer.join()
    assert holder.getsockname()[1] == port
    holder.close()
