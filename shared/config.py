"""Settings: one object, read once from the environment (where the Functions host puts app
settings, Key Vault references resolved, and ``local.settings.json`` values).

Names that bindings need at import time (container names) are constants here too, so the
code, the local host and the Bicep templates share one definition.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError

LEDGER_IMPORTS_CONTAINER = "ledger-imports"
LEDGER_REPORTS_CONTAINER = "ledger-reports"
LEDGER_QUARANTINE_CONTAINER = "ledger-quarantine"
CONTAINERS = (LEDGER_IMPORTS_CONTAINER, LEDGER_REPORTS_CONTAINER, LEDGER_QUARANTINE_CONTAINER)

LEDGER_IMPORT_MAX_BYTES = 256 * 1024 * 1024
LEDGER_DRY_RUN_MAX_BYTES = 50 * 1024 * 1024
LEDGER_REPORT_MAX_ERRORS = 1000
DB_POOL_MAX_SIZE = 4
DB_STATEMENT_TIMEOUT_S = 600


class Settings(BaseSettings):
    """Every setting the app reads. Field aliases are the app-setting names."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    database_url: str = Field(alias="DATABASE_URL", min_length=1)
    """Postgres connection URL (``postgresql://user@host:port/db``)."""

    storage_connection_string: str | None = Field(default=None, alias="AzureWebJobsStorage")
    """Blob storage connection string (local Azurite); empty in Azure, see the next one."""

    storage_account_name: str | None = Field(
        default=None, alias="AzureWebJobsStorage__accountName"
    )
    """Storage account name for identity-based access in Azure (managed identity)."""

    ledger_import_max_bytes: int = Field(
        default=LEDGER_IMPORT_MAX_BYTES, alias="LEDGER_IMPORT_MAX_BYTES", gt=0
    )
    """Largest ledger file imported, in bytes; larger files are rejected whole."""

    ledger_dry_run_max_bytes: int = Field(
        default=LEDGER_DRY_RUN_MAX_BYTES, alias="LEDGER_DRY_RUN_MAX_BYTES", gt=0
    )
    """Largest request body the dry-run endpoint accepts, in bytes."""

    db_pool_max_size: int = Field(default=DB_POOL_MAX_SIZE, alias="DB_POOL_MAX_SIZE", ge=1)
    """Postgres connections per worker process."""

    db_statement_timeout_s: int = Field(
        default=DB_STATEMENT_TIMEOUT_S, alias="DB_STATEMENT_TIMEOUT_S", ge=1
    )
    """Longest a single SQL statement may run, in seconds."""

    service_bus_namespace: str | None = Field(
        default=None, alias="ServiceBusConnection__fullyQualifiedNamespace"
    )
    """Service Bus namespace host (``<name>.servicebus.windows.net``), reached with the
    managed identity; the same setting the Service Bus triggers' ``connection`` reads."""

    service_bus_connection_string: str | None = Field(default=None, alias="ServiceBusConnection")
    """Service Bus connection string, instead of the namespace above. With neither set,
    messages go to the local broker in the app's database."""

    applicationinsights_connection_string: str | None = Field(
        default=None, alias="APPLICATIONINSIGHTS_CONNECTION_STRING"
    )
    """When set, logs and traces go to Application Insights."""

    log_level: str = Field(
        default="INFO", alias="LOG_LEVEL", pattern="^(DEBUG|INFO|WARNING|ERROR)$"
    )
    """Lowest level logged by the app's own loggers."""

    @model_validator(mode="after")
    def _storage_is_configured(self) -> Settings:
        if not (self.storage_connection_string or self.storage_account_name):
            raise ValueError(
                "set AzureWebJobsStorage (a connection string) or "
                "AzureWebJobsStorage__accountName (managed identity)"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the settings, read and checked once per process.

    Raises:
        ConfigError: a setting is missing or invalid; the message names each one.
    """
    try:
        return Settings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigError("invalid app settings: " + "; ".join(problems)) from None
