"""``python -m devhost run`` end to end: its own services, the app, the blob and bus CLIs,
Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psycopg
import pytest

from devhost.cli import main
from devhost.errors import ServiceError
from devhost.host import _data_dir_lock
from devhost.services import REPO_ROOT, free_port, port_accepts
from tests.devhost.conftest import FIXTURE_APP_DIR, devhost_process, unique, wait_for


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devhost", "--app-dir", str(FIXTURE_APP_DIR), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _receipt_status(database_url: str, blob_name: str) -> str | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT status FROM devhost.blob_receipts WHERE blob_name = %s", (blob_name,)
        ).fetchone()
    return row[0] if row else None


def test_run_serves_the_app_with_its_services_and_ctrl_c_stops_everything(tmp_path: Path):
    with devhost_process(tmp_path, {"DEVHOST_BLOB_POLL_INTERVAL_S": "0.1"}, 60) as host:
        proc, ports, env, output = host.proc, host.ports, host.env, host.output
        text = host.text
        assert proc.poll() is None, text
        assert "using local.settings.example.json" in text
        assert f"http://127.0.0.1:{ports['http']}/api/hello/{{name?}}" in text
        assert (
            "function on_order is not served: Service Bus topic subscriptions are not served by "
            "devhost yet" in text
        )

        with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/api/bp/ping") as resp:
            assert resp.read() == b"pong"

        database_url = f"postgresql://postgres@127.0.0.1:{ports['pg']}/advisoros"
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT fx_total()").fetchone()[0] == 100

        source = tmp_path / "statement.csv"
        source.write_bytes(b"date,amount\n2026-01-02,10.00\n")
        put = _cli(env, "blob", "put", "fx-once", str(source), "--name", "e2e/statement.csv")
        assert put.returncode == 0, put.stderr
        wait_for(
            lambda: _receipt_status(database_url, "e2e/statement.csv") == "done",
            30,
            "the uploaded blob to be processed",
        )
        assert "blob=fx-once/e2e/statement.csv" in "".join(output)

        sent = _cli(env, "bus", "send", "fx-orders", '{"n": 1}', "--id", "run-msg-1")
        assert sent.returncode == 0, sent.stderr
        wait_for(
            lambda: any(
                "message_id=run-msg-1" in line and "outcome=ok" in line for line in output
            ),
            30,
            "the Service Bus message to be handled",
        )

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0

    for name, port in ports.items():
        assert not port_accepts(port), f"{name} port {port} still open after Ctrl-C"
    assert not (tmp_path / "local" / "pg" / "postmaster.pid").exists()
    assert not list((tmp_path / "local" / "azurite").glob("*.pid"))


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """``python -m devhost`` in this process, with an app dir that has no settings."""
    monkeypatch.setattr("devhost.cli.setup_console_logging", lambda level: None)
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)

    def run_cli(*args: str) -> int:
        return main(["--app-dir", str(tmp_path), *args])

    return run_cli


def test_blob_cli_puts_lists_and_gets(cli, azurite, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DEVHOST_AZURITE_BLOB_PORT", str(azurite.blob_port))
    source = tmp_path / "report.pdf"
    source.write_bytes(b"%PDF-1.7 not really")
    name = f"{unique('cli')}/report.pdf"

    assert cli("blob", "put", "cli-test", str(source), "--name", name) == 0
    assert cli("blob", "ls", "cli-test", "--prefix", name.split("/")[0]) == 0
    assert name in capsys.readouterr().out
    fetched = tmp_path / "fetched.pdf"
    assert cli("blob", "get", "cli-test", name, "-o", str(fetched)) == 0
    assert fetched.read_bytes() == source.read_bytes()
    assert cli("blob", "get", "cli-test", "no/such/blob") == 1
    assert "not found: cli-test/no/such/blob" in capsys.readouterr().err


def test_blob_cli_says_when_azurite_is_not_running(cli, monkeypatch, capsys):
    monkeypatch.setenv("DEVHOST_AZURITE_BLOB_PORT", str(free_port()))
    assert cli("blob", "ls", "anything") == 1
    assert "is `make run` (python -m devhost run) running?" in capsys.readouterr().err


def test_second_run_on_the_same_data_dir_is_refused(tmp_path: Path):
    refused = pytest.raises(ServiceError, match=rf"another devhost \(pid {os.getpid()}\)")
    with _data_dir_lock(tmp_path), refused, _data_dir_lock(tmp_path):
        pass
    with _data_dir_lock(tmp_path):
        pass
