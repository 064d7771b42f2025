"""Settings fail at start with the name of what is missing or wrong."""

from __future__ import annotations

import pytest

from shared.config import Settings, get_settings
from shared.errors import ConfigError


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch):
    for name in (
        "DATABASE_URL",
        "AzureWebJobsStorage",
        "AzureWebJobsStorage__accountName",
        "LEDGER_IMPORT_MAX_BYTES",
        "LOG_LEVEL",
    ):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_names_a_missing_setting(clean_env):
    clean_env.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    with pytest.raises(ConfigError, match="DATABASE_URL: Field required"):
        get_settings()


def test_names_an_invalid_setting(clean_env):
    clean_env.setenv("DATABASE_URL", "postgresql://x")
    clean_env.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    clean_env.setenv("LEDGER_IMPORT_MAX_BYTES", "lots")
    with pytest.raises(
        ConfigError, match="LEDGER_IMPORT_MAX_BYTES: Input should be a valid integer"
    ):
        get_settings()


def test_requires_some_storage_setting(clean_env):
    clean_env.setenv("DATABASE_URL", "postgresql://x")
    with pytest.raises(ConfigError, match="AzureWebJobsStorage__accountName"):
        get_settings()


def test_every_setting_is_in_the_local_example():
    import json
    from pathlib import Path

    example = json.loads((Path(__file__).parents[2] / "local.settings.example.json").read_text())
    names = {field.alias for field in Settings.model_fields.values()}
    # The managed-identity variants replace the connection strings in Azure only.
    names.discard("AzureWebJobsStorage__accountName")
    names.discard("ServiceBusConnection__fullyQualifiedNamespace")
    assert names <= set(example["Values"]), names - set(example["Values"])


def test_webhook_secrets_are_a_comma_separated_list_kept_out_of_reprs(clean_env):
    clean_env.setenv("DATABASE_URL", "postgresql://x")
    clean_env.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    clean_env.setenv("STRIPE_WEBHOOK_SECRETS", " whsec_old , whsec_new,")
    clean_env.setenv("QUICKBOOKS_WEBHOOK_VERIFIER_TOKENS", "token-a")
    settings = get_settings()
    assert settings.stripe_webhook_secrets == ("whsec_old", "whsec_new")
    assert settings.quickbooks_webhook_verifier_tokens == ("token-a",)
    assert "whsec" not in repr(settings) and "token-a" not in repr(settings)
