"""Settings: one object, read once from the environment (where the Functions host puts app
settings, Key Vault references resolved, and ``local.settings.json`` values).

Names that bindings need at import time (container names) are constants here too, so the
code, the local host and the Bicep templates share one definition.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import ConfigError

LEDGER_IMPORTS_CONTAINER = "ledger-imports"
LEDGER_REPORTS_CONTAINER = "ledger-reports"
LEDGER_QUARANTINE_CONTAINER = "ledger-quarantine"
CONTAINERS: tuple[str, ...] = (
    LEDGER_IMPORTS_CONTAINER,
    LEDGER_REPORTS_CONTAINER,
    LEDGER_QUARANTINE_CONTAINER,
)
DOCUMENTS_CONTAINER = "documents"
DOCUMENTS_QUARANTINE_CONTAINER = "documents-quarantine"
CONTAINERS += (DOCUMENTS_CONTAINER, DOCUMENTS_QUARANTINE_CONTAINER)

LEDGER_IMPORT_MAX_BYTES = 256 * 1024 * 1024
LEDGER_DRY_RUN_MAX_BYTES = 50 * 1024 * 1024
LEDGER_REPORT_MAX_ERRORS = 1000
DB_POOL_MAX_SIZE = 4
DB_STATEMENT_TIMEOUT_S = 600
DB_POOL_TIMEOUT_S = 30

STRIPE_WEBHOOK_TOLERANCE_S = 300
WEBHOOK_MAX_BYTES = 1024 * 1024
OUTBOX_RELAY_SCHEDULE = "*/30 * * * * *"
OUTBOX_RELAY_SESSIONS_PER_ROUND = 100
OUTBOX_RELAY_MESSAGES_PER_SESSION = 100
OUTBOX_RELAY_MAX_ROUNDS = 20
OUTBOX_BACKOFF_FIRST_S = 30
OUTBOX_BACKOFF_MAX_S = 3600
WEBHOOK_REPLAY_MAX_EVENTS = 1000

DOCUMENTS_MAX_BYTES = 50 * 1024 * 1024
DOCUMENTS_MAX_PAGES = 200
DOCUMENTS_REVIEW_THRESHOLD = 0.80
# Portal links to document blobs: an upload link lives long enough to send a large scan
# on a slow line; a download link only as long as it takes to start the download.
DOCUMENT_UPLOAD_LINK_TTL_S = 15 * 60
DOCUMENT_DOWNLOAD_LINK_TTL_S = 5 * 60
DOCINTEL_TIMEOUT_S = 120
DOCINTEL_MAX_ATTEMPTS = 4
DOCINTEL_BREAKER_FAILURES = 5
DOCINTEL_BREAKER_RESET_S = 60
QBO_MAX_REQ_PER_MIN = 500
QBO_MAX_CONCURRENT = 10
QBO_RATE_WINDOW_S = 60.0
QBO_TIMEOUT_S = 30.0
QBO_BATCH_MAX_ITEMS = 30
QBO_MAX_ATTEMPTS = 6
QBO_BACKOFF_FIRST_S = 1.0
QBO_BACKOFF_MAX_S = 60.0
QBO_BREAKER_FAILURES = 5
QBO_BREAKER_OPEN_S = 60.0
QBO_REFRESH_MARGIN_S = 300
QBO_CDC_SCHEDULE = "0 */15 * * * *"
PORTAL_API_ROLE = "advisoros_api"
PORTAL_JWT_ALGORITHMS = ("RS256",)
PORTAL_ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
PORTAL_JWT_LEEWAY_S = 60
PORTAL_JWKS_CACHE_S = 3600
PORTAL_RATE_LIMIT_PER_MIN = 600
PORTAL_MAX_BODY_BYTES = 64 * 1024
PORTAL_MAX_PAGE_SIZE = 500
PORTAL_LOCAL_KEY_DIR = ".local/portal-issuer"

# A comma-separated list in the environment; secrets stay out of reprs.
SecretList = Annotated[tuple[str, ...], NoDecode]


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

    db_pool_timeout_s: float = Field(default=DB_POOL_TIMEOUT_S, alias="DB_POOL_TIMEOUT_S", gt=0)
    """Longest a request waits for a database connection, in seconds; then it fails (503)."""

    stripe_webhook_secrets: SecretList = Field(
        default=(), alias="STRIPE_WEBHOOK_SECRETS", repr=False
    )
    """Stripe endpoint signing secrets (``whsec_...``), comma-separated; an event signed with
    any of them is accepted, so a rotated secret and its successor both work."""

    stripe_webhook_tolerance_s: int = Field(
        default=STRIPE_WEBHOOK_TOLERANCE_S, alias="STRIPE_WEBHOOK_TOLERANCE_S", ge=1
    )
    """Largest age (or clock lead) of a Stripe-Signature timestamp, in seconds."""

    stripe_livemode: bool = Field(default=False, alias="STRIPE_LIVEMODE")
    """Accept live-mode Stripe events (true) or test-mode ones (false); others get 400."""

    quickbooks_webhook_verifier_tokens: SecretList = Field(
        default=(), alias="QUICKBOOKS_WEBHOOK_VERIFIER_TOKENS", repr=False
    )
    """QuickBooks webhook verifier tokens, comma-separated (one per Intuit app)."""

    webhook_max_bytes: int = Field(default=WEBHOOK_MAX_BYTES, alias="WEBHOOK_MAX_BYTES", gt=0)
    """Largest webhook body accepted, in bytes; larger ones get 413."""

    outbox_relay_schedule: str = Field(
        default=OUTBOX_RELAY_SCHEDULE, alias="OUTBOX_RELAY_SCHEDULE", min_length=1
    )
    """NCRONTAB schedule of the outbox relay (six fields, seconds first)."""
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

    stripe_account_id: str | None = Field(
        default=None, alias="STRIPE_ACCOUNT_ID", pattern="^acct_[A-Za-z0-9_]+$"
    )
    """The deployment's own Stripe account (``acct_...``): events that name no ``account``
    (all but Connect events) belong to it. Unset, such events cannot be applied."""

    # Engagements
    engagement_reminder_interval_s: float = Field(
        default=3 * 86400, alias="ENGAGEMENT_REMINDER_INTERVAL_S", gt=0
    )
    """Seconds between reminders while an engagement waits for documents (times the type's
    cadence); default 3 days."""

    engagement_dunning_interval_s: float = Field(
        default=7 * 86400, alias="ENGAGEMENT_DUNNING_INTERVAL_S", gt=0
    )
    """Seconds between payment reminders while an engagement's invoice is unpaid; 7 days."""

    engagement_event_relay_schedule: str = Field(
        default="*/5 * * * * *", alias="ENGAGEMENT_EVENT_RELAY_SCHEDULE", min_length=1
    )
    """NCRONTAB schedule of the relay that raises engagement events (documents classified,
    invoices paid) in their orchestrations (six fields, seconds first)."""

    stripe_api_key: str | None = Field(default=None, alias="STRIPE_API_KEY", repr=False)
    """Secret key for Stripe API calls (invoices of engagements); a Key Vault reference in
    Azure."""

    stripe_api_base: str = Field(
        default="https://api.stripe.com", alias="STRIPE_API_BASE", min_length=1
    )
    """Base URL of the Stripe API; tests point it at a local fake."""

    log_level: str = Field(
        default="INFO", alias="LOG_LEVEL", pattern="^(DEBUG|INFO|WARNING|ERROR)$"
    )
    """Lowest level logged by the app's own loggers."""

    documents_max_bytes: int = Field(
        default=DOCUMENTS_MAX_BYTES, alias="DOCUMENTS_MAX_BYTES", gt=0
    )
    """Largest client document accepted, in bytes; larger files go to quarantine."""

    documents_max_pages: int = Field(
        default=DOCUMENTS_MAX_PAGES, alias="DOCUMENTS_MAX_PAGES", gt=0
    )
    """Most pages a client document may have; longer ones go to quarantine."""

    documents_review_threshold: float = Field(
        default=DOCUMENTS_REVIEW_THRESHOLD, alias="DOCUMENTS_REVIEW_THRESHOLD", ge=0, le=1
    )
    """Classification confidence (0-1) below which a document goes to the review list."""

    documents_field_key: str | None = Field(default=None, alias="DOCUMENTS_FIELD_KEY", repr=False)
    """Key that encrypts sensitive document fields at rest (tax ids, account numbers):
    32 random bytes, URL-safe base64. Unset, documents with such fields cannot be stored."""

    docintel_endpoint: str | None = Field(default=None, alias="DOCINTEL_ENDPOINT")
    """Azure AI Document Intelligence endpoint (``https://<name>.cognitiveservices.azure.com``);
    unset, documents are classified by the local classifier."""

    docintel_key: str | None = Field(default=None, alias="DOCINTEL_KEY", repr=False)
    """Document Intelligence API key; unset, the managed identity is used."""

    docintel_classifier_id: str | None = Field(default=None, alias="DOCINTEL_CLASSIFIER_ID")
    """Id of a custom Document Intelligence classifier; unset, the layout text decides."""

    docintel_timeout_s: float = Field(default=DOCINTEL_TIMEOUT_S, alias="DOCINTEL_TIMEOUT_S", gt=0)
    """Longest one analysis (submit and polling) may take, in seconds."""
    quickbooks_client_id: str = Field(default="", alias="QUICKBOOKS_CLIENT_ID")
    """The Intuit app's OAuth client id."""

    quickbooks_client_secret: str = Field(default="", alias="QUICKBOOKS_CLIENT_SECRET", repr=False)
    """The Intuit app's OAuth client secret."""

    quickbooks_redirect_uri: str = Field(default="", alias="QUICKBOOKS_REDIRECT_URI")
    """Where Intuit's consent page sends the advisor back (``.../api/quickbooks/callback``)."""

    quickbooks_oauth_discovery: str = Field(default="", alias="QUICKBOOKS_OAUTH_DISCOVERY")
    """Intuit's OpenID discovery document: ``sandbox``, ``production`` or its URL. Empty
    means the connection's environment."""

    quickbooks_api_url: str = Field(default="", alias="QUICKBOOKS_API_URL")
    """Base URL of the Accounting API (``.../v3``); empty means Intuit's URL for the
    connection's environment (sandbox or production)."""

    quickbooks_max_requests_per_window: int = Field(
        default=QBO_MAX_REQ_PER_MIN, alias="QUICKBOOKS_MAX_REQUESTS_PER_WINDOW", ge=1
    )
    """Requests per realm per rate window, shared by every worker (QuickBooks allows 500 a
    minute)."""

    quickbooks_rate_window_s: float = Field(
        default=QBO_RATE_WINDOW_S, alias="QUICKBOOKS_RATE_WINDOW_S", gt=0
    )
    """Length of the rate window, in seconds (60, as QuickBooks counts)."""

    quickbooks_max_concurrent: int = Field(
        default=QBO_MAX_CONCURRENT, alias="QUICKBOOKS_MAX_CONCURRENT", ge=1
    )
    """Requests per realm in flight at once, across all workers (QuickBooks allows 10)."""

    quickbooks_timeout_s: float = Field(default=QBO_TIMEOUT_S, alias="QUICKBOOKS_TIMEOUT_S", gt=0)
    """Longest wait for one QuickBooks answer, in seconds."""

    quickbooks_batch_max_items: int = Field(
        default=QBO_BATCH_MAX_ITEMS, alias="QUICKBOOKS_BATCH_MAX_ITEMS", ge=1, le=30
    )
    """Records per batch request (QuickBooks takes at most 30)."""

    quickbooks_max_attempts: int = Field(
        default=QBO_MAX_ATTEMPTS, alias="QUICKBOOKS_MAX_ATTEMPTS", ge=1
    )
    """Tries of one request on throttling, 5xx and timeouts before the sync gives up for now."""

    quickbooks_backoff_first_s: float = Field(
        default=QBO_BACKOFF_FIRST_S, alias="QUICKBOOKS_BACKOFF_FIRST_S", ge=0
    )
    """First backoff after a 5xx or timeout, in seconds; doubled per try, with jitter."""

    quickbooks_breaker_failures: int = Field(
        default=QBO_BREAKER_FAILURES, alias="QUICKBOOKS_BREAKER_FAILURES", ge=1
    )
    """Failures in a row that open a realm's circuit breaker."""

    quickbooks_breaker_open_s: float = Field(
        default=QBO_BREAKER_OPEN_S, alias="QUICKBOOKS_BREAKER_OPEN_S", gt=0
    )
    """How long an open breaker refuses requests to the realm, in seconds."""

    key_vault_url: str = Field(default="", alias="KEY_VAULT_URL")
    """Key Vault holding the QuickBooks refresh tokens (``https://<name>.vault.azure.net``).
    Empty means the local encrypted secret store below."""

    local_secret_store_path: str = Field(
        default=".local/secrets.json", alias="LOCAL_SECRET_STORE_PATH"
    )
    """File of the local encrypted secret store (devhost only)."""

    local_secret_store_key: str = Field(default="", alias="LOCAL_SECRET_STORE_KEY", repr=False)
    """Fernet key of the local secret store; required when Key Vault is not configured."""
    # -- Portal API and identity -------------------------------------------------------

    app_environment: str = Field(
        default="production", alias="APP_ENVIRONMENT", pattern="^(development|test|production)$"
    )
    """``development``, ``test`` or ``production``; production refuses the local issuer."""

    portal_database_url: str | None = Field(default=None, alias="PORTAL_DATABASE_URL", repr=False)
    """Postgres URL of the portal API's role (no BYPASSRLS). Unset: ``DATABASE_URL`` with
    its user replaced by ``advisoros_api`` (enough for a local server with trust auth)."""

    portal_identity_providers: str = Field(default="[]", alias="PORTAL_IDENTITY_PROVIDERS")
    """JSON list of identity providers whose tokens the portal takes: each
    ``{"name", "issuer", "audience", "jwks_url", "username_claim"?}`` (Entra ID, Okta)."""

    portal_jwt_algorithms: Annotated[tuple[str, ...], NoDecode] = Field(
        default=PORTAL_JWT_ALGORITHMS, alias="PORTAL_JWT_ALGORITHMS"
    )
    """Signature algorithms a token may use, comma-separated; anything else is refused."""

    portal_jwt_leeway_s: int = Field(
        default=PORTAL_JWT_LEEWAY_S, alias="PORTAL_JWT_LEEWAY_S", ge=0, le=300
    )
    """Clock skew allowed on ``exp`` and ``nbf``, in seconds."""

    portal_jwks_cache_s: int = Field(
        default=PORTAL_JWKS_CACHE_S, alias="PORTAL_JWKS_CACHE_S", ge=1
    )
    """How long signing keys are kept before they are fetched again, in seconds (an
    unknown ``kid`` fetches them at once)."""

    portal_app_service_auth: bool = Field(default=False, alias="PORTAL_APP_SERVICE_AUTH")
    """True only behind App Service Authentication: the ``X-MS-CLIENT-PRINCIPAL`` header
    then names the user. Otherwise the header is ignored."""

    portal_local_issuer: bool = Field(default=False, alias="PORTAL_LOCAL_ISSUER")
    """Accept tokens of the local development issuer (``python -m devhost token``);
    refused at start when ``APP_ENVIRONMENT`` is production."""

    portal_local_key_dir: str = Field(default=PORTAL_LOCAL_KEY_DIR, alias="PORTAL_LOCAL_KEY_DIR")
    """Where the local issuer keeps its signing key (created on first use)."""

    portal_rate_limit_per_min: int = Field(
        default=PORTAL_RATE_LIMIT_PER_MIN, alias="PORTAL_RATE_LIMIT_PER_MIN", ge=1
    )
    """Requests per user per minute, per worker; more get 429 with Retry-After."""

    portal_max_body_bytes: int = Field(
        default=PORTAL_MAX_BODY_BYTES, alias="PORTAL_MAX_BODY_BYTES", gt=0
    )
    """Largest portal request body, in bytes; larger ones get 413."""

    portal_max_page_size: int = Field(
        default=PORTAL_MAX_PAGE_SIZE, alias="PORTAL_MAX_PAGE_SIZE", ge=1
    )
    """Largest ``limit`` a list endpoint takes; larger ones get 400."""

    scim_bearer_tokens: SecretList = Field(default=(), alias="SCIM_BEARER_TOKENS", repr=False)
    """Bearer secrets the identity provider's SCIM client sends, comma-separated (old and
    new while rotating); empty refuses every SCIM request (503)."""

    scim_firm_id: str | None = Field(
        default=None,
        alias="SCIM_FIRM_ID",
        pattern="^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    )
    """The firm whose users and groups SCIM provisions."""

    @field_validator("portal_jwt_algorithms", "scim_bearer_tokens", mode="before")
    @classmethod
    def _split_portal_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("portal_database_url", "scim_firm_id", mode="before")
    @classmethod
    def _empty_portal_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _local_issuer_not_in_production(self) -> Settings:
        if self.portal_local_issuer and self.app_environment == "production":
            raise ValueError("PORTAL_LOCAL_ISSUER is refused when APP_ENVIRONMENT is production")
        # Shared-secret algorithms would let anyone holding the public key sign tokens.
        unsafe = set(self.portal_jwt_algorithms) - set(PORTAL_ASYMMETRIC_ALGORITHMS)
        if unsafe or not self.portal_jwt_algorithms:
            raise ValueError(
                "PORTAL_JWT_ALGORITHMS must list only asymmetric algorithms ("
                + ", ".join(PORTAL_ASYMMETRIC_ALGORITHMS)
                + f"), not {', '.join(sorted(unsafe)) or 'nothing'}"
            )
        return self

    @field_validator("stripe_webhook_secrets", "quickbooks_webhook_verifier_tokens", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator(
        "documents_field_key",
        "docintel_endpoint",
        "docintel_key",
        "docintel_classifier_id",
        mode="before",
    )
    @classmethod
    def _empty_setting_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("stripe_account_id", "stripe_api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # local.settings.json lists every setting, unset ones as "".
        return None if value == "" else value

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
