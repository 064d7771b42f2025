"""The Bicep templates create what the code uses, and only in the safe way.

No Bicep compiler runs here, so each file is parsed with pycep and its syntax tree checked:
settings, containers and queues against the code's own definitions, then transport security,
secrets, roles and diagnostics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from shared.config import CONTAINERS, Settings
from shared.messaging import QUEUES, iso_duration, queues_json

BICEP = Path(__file__).parents[2] / "bicep"
BICEP_FILES = sorted(BICEP.rglob("*.bicep"))

# Settings the code reads that Azure deliberately leaves unset, each with the reason.
LOCAL_ONLY_SETTINGS = {
    # Connection-string form for Azurite; Azure uses AzureWebJobsStorage__accountName.
    "AzureWebJobsStorage",
    # Connection-string form; Azure uses ServiceBusConnection__fullyQualifiedNamespace.
    "ServiceBusConnection",
    # Azure calls Document Intelligence with the app's managed identity, not a key.
    "DOCINTEL_KEY",
    # The devhost's encrypted file of QuickBooks tokens; Azure keeps them in Key Vault.
    "LOCAL_SECRET_STORE_PATH",
    "LOCAL_SECRET_STORE_KEY",
    # Where the devhost keeps the local development issuer's key; Azure has no such issuer.
    "PORTAL_LOCAL_KEY_DIR",
}

# Settings whose values are credentials, besides the fields marked repr=False.
SECRET_SETTINGS = {"DATABASE_URL", "PORTAL_DATABASE_URL"}

DATA_PLANE_ROLES = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "69a216fc-b8fb-44d8-bc22-1f3c2552a39e": "Azure Service Bus Data Sender",
    "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0": "Azure Service Bus Data Receiver",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    # On the QuickBooks token vault only: refresh tokens rotate, so the app writes them.
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "a97b65f3-24c7-4388-baec-2e87135dc908": "Cognitive Services User",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}

# Resource types that must send their logs and metrics to Log Analytics.
MONITORED_TYPES = {
    "Microsoft.Storage/storageAccounts",
    "Microsoft.ServiceBus/namespaces",
    "Microsoft.KeyVault/vaults",
    "Microsoft.DBforPostgreSQL/flexibleServers",
    "Microsoft.CognitiveServices/accounts",
    "Microsoft.Web/sites",
    "Microsoft.Cdn/profiles",
    "Microsoft.OperationalInsights/workspaces",
    "Microsoft.Insights/components",
}

# Role assignments are made on these resources (the existing references in roles.bicep).
SCOPES = {"storage", "serviceBus", "keyVault", "tokenVault", "docIntel", "appInsights"}

# An app setting that is a Key Vault reference: the vault prefix, a secret name and ")".
_KEY_VAULT_REF = re.compile(r"\$\{vaultRef\}\$\{secretNames\.(\w+)\}\)")

_SECRET_WORDS = re.compile(
    r"password|secret(?!names)|connectionstring|listkeys|listconnectionstrings|getsecret|sas",
    re.I,
)


@cache
def parse(path: Path) -> dict[str, Any]:
    tree: dict[str, Any] = BicepParser().parse(file_path=path)
    return tree


def module(name: str) -> dict[str, Any]:
    return parse(BICEP / "modules" / f"{name}.bicep")


def resources(tree: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Each declared resource as (symbol, type, config), loops and conditions unwrapped."""
    for symbol, resource in tree.get("resources", {}).items():
        if resource["existing"]:
            continue
        config = resource["config"]
        while "loop_type" in config or ("condition" in config and "config" in config):
            config = config["config"]
        yield symbol, resource["type"], config


def only(tree: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [config for _, t, config in resources(tree) if t == type_]
    assert len(found) == 1, f"expected one {type_}, found {len(found)}"
    return found[0]


def strings(node: object) -> Iterator[str]:
    """Every string (names, literals, references) in a parsed expression."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def app_settings() -> dict[str, Any]:
    settings: dict[str, Any] = parse(BICEP / "main.bicep")["variables"]["appSettings"]["value"]
    return settings


def platform_settings() -> dict[str, Any]:
    """Settings the Function App module adds itself (telemetry wiring)."""
    settings: dict[str, Any] = module("functionapp")["variables"]["platformSettings"]["value"]
    return settings


def setting_names_the_code_reads() -> set[str]:
    return {str(field.alias) for field in Settings.model_fields.values()}


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(BICEP)))
def test_every_bicep_file_parses(path: Path) -> None:
    assert parse(path)["resources" if "main" not in path.name else "modules"]


class TestAppSettings:
    def test_every_setting_the_code_reads_is_provided(self) -> None:
        wanted = setting_names_the_code_reads() - LOCAL_ONLY_SETTINGS
        missing = wanted - set(app_settings()) - set(platform_settings())
        assert not missing, f"add to appSettings in bicep/main.bicep: {sorted(missing)}"

    def test_no_setting_is_provided_that_the_code_does_not_read(self) -> None:
        unknown = set(app_settings()) - setting_names_the_code_reads()
        assert not unknown, f"no field of shared/config.py reads {sorted(unknown)}"

    def test_the_app_and_the_platform_do_not_both_set_a_setting(self) -> None:
        assert not set(app_settings()) & set(platform_settings())

    def test_the_local_only_settings_are_still_settings_of_the_code(self) -> None:
        assert setting_names_the_code_reads() >= LOCAL_ONLY_SETTINGS

    def test_secrets_are_key_vault_references_and_nothing_else_is(self) -> None:
        secret = SECRET_SETTINGS | {
            str(field.alias) for field in Settings.model_fields.values() if not field.repr
        }
        secret_names = parse(BICEP / "main.bicep")["variables"]["secretNames"]["value"]
        for name, value in app_settings().items():
            found = _KEY_VAULT_REF.fullmatch(value) if isinstance(value, str) else None
            assert bool(found) == (name in secret), name
            if found:
                assert found.group(1) in secret_names, name

    def test_key_vault_references_use_the_documented_syntax(self) -> None:
        variables = parse(BICEP / "main.bicep")["variables"]
        assert variables["vaultRef"]["value"] == (
            "@Microsoft.KeyVault(VaultName=${vaultName};SecretName="
        )
        vault = parse(BICEP / "main.bicep")["modules"]["keyVault"]["config"]["params"]
        assert vault["name"] == "vaultName", "the references must name the vault deployed"

    def test_the_function_app_takes_its_settings_from_that_one_list(self) -> None:
        params = parse(BICEP / "main.bicep")["modules"]["functionApp"]["config"]["params"]
        assert params["appSettings"] == "appSettings"
        site = only(module("functionapp"), "Microsoft.Web/sites")
        loop = site["properties"]["siteConfig"]["appSettings"]
        assert "appSettings" in set(strings(loop))


class TestContainersAndQueues:
    def test_every_container_the_code_uses_is_provisioned(self) -> None:
        declared = parse(BICEP / "main.bicep")["parameters"]["containers"]["default"]
        assert sorted(declared) == sorted(CONTAINERS)
        containers = module("storage")["resources"]["blobContainers"]["config"]
        assert "containers" in set(strings(containers["loop_type"]))
        assert containers["config"]["properties"] == {"publicAccess": "None"}

    def test_the_bicep_queues_are_the_queues_the_code_defines(self) -> None:
        declared = json.loads((BICEP / "queues.json").read_text())
        assert declared == queues_json(), "run `make queues` to regenerate bicep/queues.json"
        assert [q["name"] for q in declared] == list(QUEUES)

    def test_service_bus_states_every_queue_property(self) -> None:
        tree = module("servicebus")
        loaded = tree["variables"]["queues"]["value"]["function"]
        assert loaded["type"] == "load_json_content"
        assert "../queues.json" in set(strings(loaded))
        properties = tree["resources"]["queueResources"]["config"]["config"]["properties"]
        for name in queues_json()[0]:
            if name != "name":
                assert name in properties, name

    def test_iso_durations_are_written_as_arm_expects(self) -> None:
        assert [iso_duration(s) for s in (60, 600, 14 * 86400, 90, 3661, 0)] == [
            "PT1M",
            "PT10M",
            "P14D",
            "PT1M30S",
            "PT1H1M1S",
            "PT0S",
        ]


class TestTransportAndAccess:
    def test_storage_refuses_anonymous_access_keys_and_old_tls(self) -> None:
        props = only(module("storage"), "Microsoft.Storage/storageAccounts")["properties"]
        assert props["minimumTlsVersion"] == "TLS1_2"
        assert props["supportsHttpsTrafficOnly"] is True
        assert props["allowBlobPublicAccess"] is False
        assert props["allowSharedKeyAccess"] is False

    def test_service_bus_refuses_keys_and_old_tls(self) -> None:
        props = only(module("servicebus"), "Microsoft.ServiceBus/namespaces")["properties"]
        assert props["disableLocalAuth"] is True
        assert props["minimumTlsVersion"] == "1.2"

    def test_function_app_is_https_only_on_flex_consumption_with_its_own_identity(self) -> None:
        tree = module("functionapp")
        plan = only(tree, "Microsoft.Web/serverfarms")
        assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
        site = only(tree, "Microsoft.Web/sites")
        assert site["identity"] == {"type": "SystemAssigned"}
        props = site["properties"]
        assert props["httpsOnly"] is True
        assert props["siteConfig"]["minTlsVersion"] == "1.2"
        assert props["siteConfig"]["ftpsState"] == "Disabled"
        config = props["functionAppConfig"]
        assert config["runtime"] == {"name": "python", "version": "3.11"}
        assert config["deployment"]["storage"]["authentication"] == {
            "type": "SystemAssignedIdentity"
        }
        assert tree["parameters"]["siteUpdateStrategy"]["default"] == "RollingUpdate"

    def test_function_app_uses_identity_based_connections(self) -> None:
        settings = app_settings()
        assert "AzureWebJobsStorage__accountName" in settings
        assert "ServiceBusConnection__fullyQualifiedNamespace" in settings
        assert not LOCAL_ONLY_SETTINGS & set(settings)

    def test_key_vault_uses_rbac_soft_delete_and_purge_protection(self) -> None:
        props = only(module("keyvault"), "Microsoft.KeyVault/vaults")["properties"]
        assert props["enableRbacAuthorization"] is True
        assert props["enableSoftDelete"] is True
        assert props["enablePurgeProtection"] is True

    def test_document_intelligence_takes_no_keys(self) -> None:
        account = only(module("docintel"), "Microsoft.CognitiveServices/accounts")
        assert account["kind"] == "FormRecognizer"
        assert account["properties"]["disableLocalAuth"] is True

    def test_postgres_uses_entra_and_makes_backups_ha_and_network_parameters(self) -> None:
        tree = module("postgres")
        props = only(tree, "Microsoft.DBforPostgreSQL/flexibleServers")["properties"]
        assert props["authConfig"]["activeDirectoryAuth"] == "Enabled"
        assert props["backup"]["backupRetentionDays"] == "backupRetentionDays"
        assert "highAvailability" in set(strings(props["highAvailability"]))
        assert "privateAccess" in set(strings(props["network"]))
        password = tree["parameters"]["administratorLoginPassword"]
        assert {"type": "secure"} in password["decorators"]
        assert password["default"] is None

    def test_front_door_is_optional_and_its_waf_blocks_and_rate_limits(self) -> None:
        main = parse(BICEP / "main.bicep")["modules"]["frontDoor"]["config"]
        assert main["condition"] == "enableFrontDoor"
        waf_type = "Microsoft.Network/FrontDoorWebApplicationFirewallPolicies"
        waf = only(module("frontdoor"), waf_type)
        assert waf["properties"]["policySettings"]["mode"] == "Prevention"
        rule_sets = waf["properties"]["managedRules"]["managedRuleSets"]
        assert "Microsoft_DefaultRuleSet" in {r["ruleSetType"] for r in rule_sets}
        rules = waf["properties"]["customRules"]["rules"]
        assert [r["ruleType"] for r in rules] == ["RateLimitRule"]
        route = only(module("frontdoor"), "Microsoft.Cdn/profiles/afdEndpoints/routes")
        assert route["properties"]["supportedProtocols"] == ["Https"]


class TestSecretsAndRoles:
    @pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(BICEP)))
    def test_no_output_carries_a_secret(self, path: Path) -> None:
        tree = parse(path)
        secure = {
            name
            for name, param in tree.get("parameters", {}).items()
            if {"type": "secure"} in param["decorators"]
        }
        for name, output in tree.get("outputs", {}).items():
            words = set(strings(output["value"])) | {name}
            assert not words & secure, f"output {name} exposes a @secure() parameter"
            leaks = [w for w in words if _SECRET_WORDS.search(w)]
            assert not leaks, f"output {name} looks like a secret: {leaks}"

    def test_the_app_identity_gets_the_data_plane_roles_and_no_other(self) -> None:
        tree = module("roles")
        ids = tree["variables"]["roles"]["value"]
        granted = set()
        for symbol, type_, config in resources(tree):
            assert type_ == "Microsoft.Authorization/roleAssignments", symbol
            assert config["scope"] in SCOPES, f"{symbol} is not scoped to one resource"
            assert config["properties"]["principalType"] == "ServicePrincipal"
            loop = tree["resources"][symbol]["config"].get("loop_type")
            names = set(strings(loop)) if loop else set(strings(config["properties"]))
            if loop and "storageRoles" in names:
                names |= set(strings(tree["variables"]["storageRoles"]["value"]))
            granted |= {ids[n] for n in names if n in ids}
        assert {DATA_PLANE_ROLES[role] for role in granted} == set(DATA_PLANE_ROLES.values())

    def test_every_secret_the_app_reads_can_be_stored_and_expires(self) -> None:
        tree = module("keyvault")
        written = [c for _, t, c in resources(tree) if t == "Microsoft.KeyVault/vaults/secrets"]
        secret_names = parse(BICEP / "main.bicep")["variables"]["secretNames"]["value"]
        names = {c["name"]["operator"]["operands"]["operand_2"] for c in written}
        assert names == set(secret_names)
        for config in written:
            assert config["properties"]["contentType"] == "text/plain"
            assert config["properties"]["attributes"]["exp"] == "expires"
        assert "date_time_add" in set(strings(tree["variables"]["expires"]))


class TestMonitoring:
    @pytest.mark.parametrize("path", sorted((BICEP / "modules").glob("*.bicep")), ids=str)
    def test_every_resource_sends_diagnostics_to_log_analytics(self, path: Path) -> None:
        tree = parse(path)
        declared = {symbol: type_ for symbol, type_, _ in resources(tree)}
        scoped = {
            config["scope"]
            for _, type_, config in resources(tree)
            if type_ == "Microsoft.Insights/diagnosticSettings"
            and "workspaceId" in config["properties"]
        }
        for symbol, type_ in declared.items():
            if type_ in MONITORED_TYPES:
                assert symbol in scoped, f"{path.name}: {symbol} has no diagnostic setting"

    def test_alerts_cover_dead_letters_failures_burn_rate_and_postgres(self) -> None:
        tree = module("alerts")
        text = json.dumps(tree)
        assert '"metricName": "DeadletteredMessages"' in text
        assert '"metricName": "requests/failed"' in text
        assert tree["parameters"]["availabilityTarget"]["default"] == "0.999"
        metrics = {item["metric"] for item in tree["variables"]["postgresLimits"]["value"]}
        assert metrics == {"storage_percent", "cpu_percent"}
        dead = tree["resources"]["deadLetters"]["config"]["properties"]["criteria"]["allOf"][0]
        assert (dead["operator"], dead["threshold"]) == ("GreaterThan", 0)
        assert only(tree, "Microsoft.Insights/actionGroups")


class TestWiring:
    def test_every_module_gets_the_parameters_it_needs_and_no_others(self) -> None:
        for symbol, declared in parse(BICEP / "main.bicep")["modules"].items():
            config = declared["config"].get("config", declared["config"])
            tree = parse(BICEP / declared["detail"]["path"])
            params = tree.get("parameters", {})
            given = set(config["params"])
            assert given <= set(params), f"{symbol}: unknown {sorted(given - set(params))}"
            required = {name for name, p in params.items() if p.get("default") is None}
            assert required <= given, f"{symbol}: missing {sorted(required - given)}"

    @pytest.mark.parametrize("env", ["dev", "prod"])
    def test_parameter_files_set_what_main_requires(self, env: str) -> None:
        text = (BICEP / f"{env}.bicepparam").read_text()
        assert text.startswith("using 'main.bicep'")
        assigned = set(re.findall(r"^param (\w+) =", text, re.M))
        params = parse(BICEP / "main.bicep")["parameters"]
        assert assigned <= set(params)
        assert {n for n, p in params.items() if p.get("default") is None} <= assigned
        assert re.search(r"^param environmentName = '" + env + "'$", text, re.M)
        assert "readEnvironmentVariable('POSTGRES_ADMIN_PASSWORD'" in text


def test_every_checkov_skip_gives_its_reason() -> None:
    lines = (BICEP.parent / ".checkov.yaml").read_text().splitlines()
    start = lines.index("skip-check:")
    skips = [(i, line.strip()[2:]) for i, line in enumerate(lines) if line.startswith("  - CKV")]
    assert skips, "no skipped checks listed"
    for index, check in skips:
        # The reason is the comment above the check, or above the run of checks it belongs to.
        above = index - 1
        while lines[above].startswith("  - CKV"):
            above -= 1
        assert above > start and lines[above].strip().startswith("#"), check
