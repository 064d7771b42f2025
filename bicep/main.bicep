// AdvisorOS infrastructure. One module per resource family; this file wires them together and
// holds the app settings, listed once, below.

@description('Environment name, used in resource names (dev, prod).')
@allowed(['dev', 'prod'])
param environmentName string

@description('Azure region for every resource.')
param location string = resourceGroup().location

@description('Blob containers the app reads and writes; the same names as shared/config.py.')
param containers array = [
  'ledger-imports'
  'ledger-reports'
  'ledger-quarantine'
  'documents'
  'documents-quarantine'
]

@description('Address the alerts are sent to.')
param alertEmail string

@description('Put Azure Front Door with a WAF policy in front of the HTTP API.')
param enableFrontDoor bool = false

@description('Postgres compute size and tier.')
param postgresSkuName string = 'Standard_B2ms'
@allowed(['Burstable', 'GeneralPurpose', 'MemoryOptimized'])
param postgresSkuTier string = 'Burstable'

@description('A zone-redundant standby for Postgres.')
param postgresHighAvailability bool = false

@description('Days of Postgres point-in-time restore.')
param postgresBackupRetentionDays int = 14

@description('Keep Postgres backups in the paired region as well.')
param postgresGeoRedundantBackup bool = false

@description('Subnet delegated to Postgres for private access; empty for public access limited to Azure services.')
param postgresDelegatedSubnetId string = ''

@description('Private DNS zone for Postgres private access.')
param postgresPrivateDnsZoneId string = ''

@description('Password of the Postgres administrator (from the deploying environment).')
@secure()
param postgresAdminPassword string

@description('Object id and name of the Microsoft Entra group that administers Postgres.')
param postgresEntraAdminObjectId string = ''
param postgresEntraAdminName string = ''

@description('Whether a Stripe event with livemode true is accepted (prod) or refused (dev).')
param stripeLivemode bool = false

@description('The deployment\'s own Stripe account id (acct_...), or empty.')
param stripeAccountId string = ''

@description('Id of the Document Intelligence custom classifier; empty to use the prebuilt tax model.')
param docIntelClassifierId string = ''

@description('The Intuit app\'s OAuth client id (its secret goes in Key Vault by hand).')
param quickbooksClientId string = ''

@description('Public URL of /api/quickbooks/callback, as registered with the Intuit app.')
param quickbooksRedirectUri string = ''

@description('JSON list of the identity providers whose tokens the portal API takes (Entra ID, Okta): each {"name", "issuer", "audience", "jwks_url"}.')
param portalIdentityProviders string = '[]'

@description('The firm that SCIM provisioning creates users in.')
param scimFirmId string = ''

var suffix = uniqueString(resourceGroup().id)
var stem = 'advisoros-${environmentName}-${take(suffix, 6)}'
var deploymentContainer = 'app-package'

// Key Vault secret names; the app settings below refer to them.
var secretNames = {
  databaseUrl: 'database-url'
  stripeWebhookSecrets: 'stripe-webhook-secrets'
  quickbooksVerifierTokens: 'quickbooks-webhook-verifier-tokens'
  quickbooksClientSecret: 'quickbooks-client-secret'
  documentsFieldKey: 'documents-field-key'
  stripeApiKey: 'stripe-api-key'
  portalDatabaseUrl: 'portal-database-url'
  scimBearerTokens: 'scim-bearer-tokens'
}

var vaultName = 'kv-aos-${environmentName}-${take(suffix, 8)}'
// QuickBooks refresh tokens rotate, so the app writes them: they live in a vault of their
// own, where the app may write, while the vault of its settings stays read-only to it.
var tokenVaultName = 'kv-aot-${environmentName}-${take(suffix, 8)}'
// A Key Vault reference is this prefix, the secret name and ')'.
var vaultRef = '@Microsoft.KeyVault(VaultName=${vaultName};SecretName='

// The app's settings: every field of shared/config.py's Settings, by its alias. Secrets are
// Key Vault references only. A new setting in the code is one new line here (a test checks).
// The connection-string forms (AzureWebJobsStorage, ServiceBusConnection) are for local runs
// only: in Azure the identity-based forms below are used.
var appSettings = {
  DATABASE_URL: '${vaultRef}${secretNames.databaseUrl})'
  AzureWebJobsStorage__accountName: storage.outputs.name
  ServiceBusConnection__fullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
  STRIPE_WEBHOOK_SECRETS: '${vaultRef}${secretNames.stripeWebhookSecrets})'
  QUICKBOOKS_WEBHOOK_VERIFIER_TOKENS: '${vaultRef}${secretNames.quickbooksVerifierTokens})'
  STRIPE_WEBHOOK_TOLERANCE_S: '300'
  STRIPE_LIVEMODE: string(stripeLivemode)
  STRIPE_ACCOUNT_ID: stripeAccountId
  WEBHOOK_MAX_BYTES: '1048576'
  OUTBOX_RELAY_SCHEDULE: '*/30 * * * * *'
  LEDGER_IMPORT_MAX_BYTES: '268435456'
  LEDGER_DRY_RUN_MAX_BYTES: '52428800'
  DB_POOL_MAX_SIZE: '4'
  DB_STATEMENT_TIMEOUT_S: '600'
  DB_POOL_TIMEOUT_S: '30'
  LOG_LEVEL: 'INFO'
  DOCUMENTS_MAX_BYTES: '52428800'
  DOCUMENTS_MAX_PAGES: '200'
  DOCUMENTS_REVIEW_THRESHOLD: '0.8'
  DOCUMENTS_FIELD_KEY: '${vaultRef}${secretNames.documentsFieldKey})'
  DOCINTEL_ENDPOINT: docIntel.outputs.endpoint
  DOCINTEL_CLASSIFIER_ID: docIntelClassifierId
  DOCINTEL_TIMEOUT_S: '120'
  QUICKBOOKS_CLIENT_ID: quickbooksClientId
  QUICKBOOKS_CLIENT_SECRET: '${vaultRef}${secretNames.quickbooksClientSecret})'
  QUICKBOOKS_REDIRECT_URI: quickbooksRedirectUri
  QUICKBOOKS_OAUTH_DISCOVERY: environmentName == 'prod' ? 'production' : 'sandbox'
  QUICKBOOKS_API_URL: ''
  QUICKBOOKS_MAX_REQUESTS_PER_WINDOW: '500'
  QUICKBOOKS_RATE_WINDOW_S: '60'
  QUICKBOOKS_MAX_CONCURRENT: '10'
  QUICKBOOKS_TIMEOUT_S: '30'
  QUICKBOOKS_BATCH_MAX_ITEMS: '30'
  QUICKBOOKS_MAX_ATTEMPTS: '6'
  QUICKBOOKS_BACKOFF_FIRST_S: '1'
  QUICKBOOKS_BREAKER_FAILURES: '5'
  QUICKBOOKS_BREAKER_OPEN_S: '60'
  KEY_VAULT_URL: tokenVault.outputs.uri
  ENGAGEMENT_REMINDER_INTERVAL_S: '259200'
  ENGAGEMENT_DUNNING_INTERVAL_S: '604800'
  ENGAGEMENT_EVENT_RELAY_SCHEDULE: '*/5 * * * * *'
  STRIPE_API_KEY: '${vaultRef}${secretNames.stripeApiKey})'
  STRIPE_API_BASE: 'https://api.stripe.com'
  // Every Azure environment refuses the local development issuer, dev included.
  APP_ENVIRONMENT: 'production'
  PORTAL_DATABASE_URL: '${vaultRef}${secretNames.portalDatabaseUrl})'
  PORTAL_IDENTITY_PROVIDERS: portalIdentityProviders
  PORTAL_JWT_ALGORITHMS: 'RS256'
  PORTAL_JWT_LEEWAY_S: '60'
  PORTAL_JWKS_CACHE_S: '3600'
  PORTAL_APP_SERVICE_AUTH: 'false'
  PORTAL_LOCAL_ISSUER: 'false'
  PORTAL_RATE_LIMIT_PER_MIN: '600'
  PORTAL_MAX_BODY_BYTES: '65536'
  PORTAL_MAX_PAGE_SIZE: '500'
  SCIM_BEARER_TOKENS: '${vaultRef}${secretNames.scimBearerTokens})'
  SCIM_FIRM_ID: scimFirmId
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    name: stem
    location: location
    retentionDays: environmentName == 'prod' ? 365 : 30
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'advisoros${environmentName}${suffix}'
    location: location
    containers: containers
    deploymentContainer: deploymentContainer
    workspaceId: monitoring.outputs.workspaceId
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  params: {
    name: 'advisoros-${environmentName}-${suffix}'
    location: location
    workspaceId: monitoring.outputs.workspaceId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: vaultName
    location: location
    secretNames: secretNames
    workspaceId: monitoring.outputs.workspaceId
  }
}

module tokenVault 'modules/keyvault.bicep' = {
  name: 'tokenvault'
  params: {
    name: tokenVaultName
    location: location
    secretNames: secretNames
    workspaceId: monitoring.outputs.workspaceId
  }
}

module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  params: {
    name: 'psql-${stem}'
    location: location
    workspaceId: monitoring.outputs.workspaceId
    skuName: postgresSkuName
    skuTier: postgresSkuTier
    highAvailability: postgresHighAvailability
    backupRetentionDays: postgresBackupRetentionDays
    geoRedundantBackup: postgresGeoRedundantBackup
    delegatedSubnetId: postgresDelegatedSubnetId
    privateDnsZoneId: postgresPrivateDnsZoneId
    administratorLoginPassword: postgresAdminPassword
    entraAdminObjectId: postgresEntraAdminObjectId
    entraAdminName: postgresEntraAdminName
  }
}

module docIntel 'modules/docintel.bicep' = {
  name: 'docintel'
  params: {
    name: 'di-${stem}'
    location: location
    workspaceId: monitoring.outputs.workspaceId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    name: 'func-${stem}'
    location: location
    workspaceId: monitoring.outputs.workspaceId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    deploymentContainer: deploymentContainer
    appInsightsName: monitoring.outputs.appInsightsName
    appSettings: appSettings
    maximumInstanceCount: environmentName == 'prod' ? 100 : 20
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    principalId: functionApp.outputs.principalId
    storageAccountName: storage.outputs.name
    serviceBusName: serviceBus.outputs.name
    keyVaultName: keyVault.outputs.name
    tokenVaultName: tokenVault.outputs.name
    docIntelName: docIntel.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

module frontDoor 'modules/frontdoor.bicep' = if (enableFrontDoor) {
  name: 'frontdoor'
  params: {
    name: stem
    originHostName: functionApp.outputs.defaultHostName
    workspaceId: monitoring.outputs.workspaceId
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    name: stem
    location: location
    alertEmail: alertEmail
    serviceBusId: serviceBus.outputs.id
    appInsightsId: monitoring.outputs.appInsightsId
    postgresId: postgres.outputs.id
  }
}

output functionAppName string = functionApp.outputs.name
output functionAppHostName string = functionApp.outputs.defaultHostName
output apiHostName string = enableFrontDoor ? frontDoor.outputs.hostName : functionApp.outputs.defaultHostName
output storageAccountName string = storage.outputs.name
output deploymentContainer string = deploymentContainer
output serviceBusNamespace string = serviceBus.outputs.fullyQualifiedNamespace
output keyVaultName string = keyVault.outputs.name
output keyVaultSecretNames object = secretNames
output postgresHost string = postgres.outputs.host
output documentIntelligenceEndpoint string = docIntel.outputs.endpoint
