"""Local settings, host.json, storage connection strings and the app's function index."""

from __future__ import annotations

import json

import pytest

from devhost.discovery import load_app
from devhost.errors import AppLoadError, ConfigError
from devhost.host import DevHost, _embedded_postgres_wanted, redact_url
from devhost.services import azurite_connection_string
from devhost.settings import HostSettings, load_local_settings, read_host_json
from devhost.storage import (
    StorageAccount,
    development_storage_ports,
    is_development_storage,
)
from tests.devhost.conftest import FIXTURE_APP_DIR, fast_settings


class TestLocalSettings:
    def test_values_fill_the_environment_without_overriding(self, tmp_path):
        (tmp_path / "local.settings.json").write_text(
            json.dumps(
                {
                    "IsEncrypted": False,
                    "Values": {"A": "from file", "B": "from file"},
                    "Host": {"LocalHttpPort": 7099},
                }
            )
        )
        env = {"A": "already set"}
        loaded = load_local_settings(tmp_path, env)
        assert env == {"A": "already set", "B": "from file"}
        assert loaded.applied == ("B",)
        assert loaded.http_port == 7099

    def test_example_file_is_the_fallback_and_says_so(self, caplog):
        caplog.set_level("INFO")
        env: dict[str, str] = {}
        loaded = load_local_settings(FIXTURE_APP_DIR, env)
        assert loaded.path == FIXTURE_APP_DIR / "local.settings.example.json"
        assert env["FX_FROM_EXAMPLE"] == "yes"
        assert "local.settings.json not found; using local.settings.example.json" in caplog.text

    def test_encrypted_file_is_refused(self, tmp_path):
        (tmp_path / "local.settings.json").write_text('{"IsEncrypted": true, "Values": {}}')
        with pytest.raises(ConfigError, match="encrypted"):
            load_local_settings(tmp_path, {})

    def test_bad_json_names_the_file_and_line(self, tmp_path):
        (tmp_path / "local.settings.json").write_text('{\n "Values": {,}\n}')
        with pytest.raises(ConfigError, match=r"local\.settings\.json is not valid JSON: line 2"):
            load_local_settings(tmp_path, {})


class TestHostSettings:
    def test_host_json_route_prefix_and_poison_threshold(self, tmp_path):
        (tmp_path / "host.json").write_text(
            json.dumps(
                {
                    "version": "2.0",
                    "extensions": {
                        "http": {"routePrefix": "/v1/"},
                        "blobs": {"poisonBlobThreshold": 3, "maxDegreeOfParallelism": 2},
                    },
                }
            )
        )
        settings = HostSettings.from_env({}, read_host_json(tmp_path))
        assert settings.route_prefix == "v1"
        assert settings.blob_max_attempts == 3
        assert settings.blob_concurrency == 2

    def test_host_json_service_bus_concurrency_and_lock_renewal(self, tmp_path):
        (tmp_path / "host.json").write_text(
            json.dumps(
                {
                    "version": "2.0",
                    "extensions": {
                        "serviceBus": {
                            "maxConcurrentCalls": 3,
                            "maxConcurrentSessions": 2,
                            "maxAutoLockRenewalDuration": "00:10:30",
                            "maxMessageBatchSize": 50,
                        }
                    },
                }
            )
        )
        settings = HostSettings.from_env(
            {"DEVHOST_BUS_RETRY_BACKOFF_S": "0"}, read_host_json(tmp_path)
        )
        assert settings.bus_max_concurrent_calls == 3
        assert settings.bus_max_concurrent_sessions == 2
        assert settings.bus_max_lock_renewal_s == 630
        assert settings.bus_max_message_batch_size == 50
        assert settings.bus_retry_backoff_s == 0

    def test_a_bad_timespan_in_host_json_is_named(self, tmp_path):
        (tmp_path / "host.json").write_text(
            json.dumps({"extensions": {"serviceBus": {"maxAutoLockRenewalDuration": "5m"}}})
        )
        with pytest.raises(ConfigError, match=r"host.json: '5m' is not a TimeSpan"):
            read_host_json(tmp_path)

    def test_environment_overrides_and_bad_numbers(self):
        env = {"DEVHOST_BLOB_MAX_ATTEMPTS": "7", "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": "1024"}
        settings = HostSettings.from_env(env)
        assert (settings.blob_max_attempts, settings.max_body_bytes) == (7, 1024)
        with pytest.raises(ConfigError, match="DEVHOST_BLOB_POLL_INTERVAL_S must be a number"):
            HostSettings.from_env({"DEVHOST_BLOB_POLL_INTERVAL_S": "fast"})


class TestStorageConnections:
    def test_local_emulator_is_recognised(self):
        assert is_development_storage(None)
        assert is_development_storage("UseDevelopmentStorage=true")
        assert is_development_storage(azurite_connection_string(10000, 10001))
        remote = (
            "DefaultEndpointsProtocol=https;AccountName=prod;AccountKey=a2V5;"
            "EndpointSuffix=core.windows.net"
        )
        assert not is_development_storage(remote)

    def test_ports_come_from_the_connection_string(self):
        assert development_storage_ports(azurite_connection_string(20000, 20001)) == (20000, 20001)
        assert development_storage_ports("UseDevelopmentStorage=true") == (None, None)

    def test_account_endpoints(self):
        account = StorageAccount.from_connection_string(azurite_connection_string(1, 2))
        assert account.blob_endpoint == "http://127.0.0.1:1/devstoreaccount1"
        assert account.queue_endpoint == "http://127.0.0.1:2/devstoreaccount1"


class TestDatabaseChoice:
    def test_embedded_unless_the_url_names_another_server(self):
        assert _embedded_postgres_wanted(None, 54329)
        assert _embedded_postgres_wanted("postgresql://postgres@127.0.0.1:54329/advisoros", 54329)
        assert not _embedded_postgres_wanted("postgresql://app@db.internal:5432/advisoros", 54329)
        assert not _embedded_postgres_wanted("postgresql://postgres@127.0.0.1:5432/x", 54329)

    def test_passwords_are_not_printed(self):
        assert redact_url("postgresql://u:secret@h:5432/d") == "postgresql://u:***@h:5432/d"


class TestFunctionIndex:
    def test_every_function_is_listed_with_unserved_ones_marked(self, fixture_app):
        by_name = {f.name: f for f in fixture_app.functions}
        assert by_name["bp_ping"].served
        assert by_name["blob_once"].trigger_type == "blobTrigger"
        assert by_name["bus_orders"].served
        assert (
            by_name["on_order"].unserved
            == "Service Bus topic subscriptions are not served by devhost yet"
        )
        assert by_name["fx_orchestrator"].served
        assert by_name["fx_activity"].served
        assert by_name["start_orchestration"].durable_client == "client"
        assert fixture_app.uses_durable

    def test_listing_shows_trigger_and_route(self, fixture_app):
        host = DevHost(fixture_app, fast_settings(http_port=7071), database_url=None)
        lines = "\n".join(host.describe())
        assert "hello " in lines
        assert "GET,POST http://127.0.0.1:7071/api/hello/{name?} [anonymous]" in lines
        assert "fx-params/{client_id}/{name}" in lines
        assert "%FX_TICK_SCHEDULE%" in lines
        assert "orders/audit NOT SERVED: Service Bus topic" in lines
        assert "fx-sessions (sessions)" in lines
        host.invoker.shutdown(wait=False)

    def test_missing_app_is_a_load_error(self, tmp_path):
        with pytest.raises(AppLoadError, match="no function app at"):
            load_app(tmp_path, module_name="devhost_missing_app")

    def test_app_that_fails_to_import_is_a_load_error(self, tmp_path):
        (tmp_path / "function_app.py").write_text("raise RuntimeError('broken on import')\n")
        with pytest.raises(AppLoadError, match="RuntimeError: broken on import"):
            load_app(tmp_path, module_name="devhost_broken_app")


class TestDisabledFunctions:
    def test_a_disabled_function_is_left_unserved_and_says_which_setting(
        self, tmp_path, monkeypatch
    ):
        (tmp_path / "function_app.py").write_text(
            "import azure.functions as func\n"
            "app = func.FunctionApp()\n"
            "@app.route(route='on', auth_level=func.AuthLevel.ANONYMOUS)\n"
            "def on(req): return 'on'\n"
            "@app.route(route='off', auth_level=func.AuthLevel.ANONYMOUS)\n"
            "def off(req): return 'off'\n"
            "@app.timer_trigger(schedule='0 * * * * *', arg_name='timer')\n"
            "def beat(timer): pass\n"
        )
        monkeypatch.setenv("AzureWebJobs.off.Disabled", "true")
        monkeypatch.setenv("AzureWebJobs_beat_Disabled", "1")
        monkeypatch.setenv("AzureWebJobs.on.Disabled", "false")
        app = load_app(tmp_path, module_name="devhost_disabled_app")
        specs = {spec.name: spec for spec in app.functions}

        assert specs["off"].unserved == "disabled by the setting AzureWebJobs.off.Disabled"
        assert specs["beat"].unserved == "disabled by the setting AzureWebJobs.beat.Disabled"
        assert specs["on"].served
        assert app.by_trigger("timerTrigger") == []
