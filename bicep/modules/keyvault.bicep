// Key Vault for the app's secrets: RBAC only (no access policies), soft delete and purge
// protection on. The app reads secrets through Key Vault references in its app settings.
//
// Limitation: Key Vault rotates keys on a policy but not secrets; the Stripe webhook
// secrets, QuickBooks verifier tokens and the database URL are rotated by hand (see
// docs/operations.md). Each secret has an expiry, so a forgotten rotation raises Key Vault's
// near-expiry event 30 days ahead.

@description('Vault name (3-24 letters, digits and hyphens).')
@maxLength(24)
param name string

param location string

@description('Log Analytics workspace that receives the diagnostic settings.')
param workspaceId string

@description('Names of the secrets the app reads (see main.bicep).')
param secretNames object

// Values to store, each optional: an empty value writes nothing and the secret is set by hand
// (`az keyvault secret set`, docs/operations.md), so no value need live in a parameter file.
@secure()
param databaseUrl string = ''
@secure()
param stripeWebhookSecrets string = ''
@secure()
param quickbooksVerifierTokens string = ''
@secure()
param quickbooksClientSecret string = ''
@secure()
param documentsFieldKey string = ''
@secure()
param stripeApiKey string = ''
@secure()
param portalDatabaseUrl string = ''
@secure()
param scimBearerTokens string = ''

@description('Days until a stored secret expires and must be rotated.')
param secretLifetimeDays int = 180

@description('Deployment time, to date the expiry of the secrets this deployment writes.')
param now string = utcNow()

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    // The Flex Consumption app resolves its references over the public endpoint unless the
    // app is joined to a virtual network; Azure services are let through, nothing else.
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Deny', bypass: 'AzureServices' }
  }
}

var expires = dateTimeToEpoch(dateTimeAdd(now, 'P${secretLifetimeDays}D'))

resource databaseUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(databaseUrl)) {
  parent: vault
  name: secretNames.databaseUrl
  properties: {
    value: databaseUrl
    contentType: 'text/plain'
    attributes: { enabled: true, exp: expires }
  }
}

resource stripeSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(stripeWebhookSecrets)) {
  parent: vault
  name: secretNames.stripeWebhookSecrets
  properties: {
    value: stripeWebhookSecrets
    contentType: 'text/plain'
    attributes: { enabled: true, exp: expires }
  }
}

resource quickbooksSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(quickbooksVerifierTokens)) {
  parent: vault
  name: secretNames.quickbooksVerifierTokens
  properties: {
    value: quickbooksVerifierTokens
    contentType: 'text/plain'
    attributes: { enabled: true, exp: expires }
  }
}

resource quickbooksClientSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(quickbooksClientSecret)) {
  parent: vault
  name: secretNames.quickbooksClientSecret
  properties: {
    value: quickbooksClientSecret
    contentType: 'text/plain'
    attributes: { enabled: true, exp: expires }
  }
}

resource documentsFieldKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(documentsFieldKey)) {
  parent: vault
  name: secretNames.documentsFieldKey
  properties: {
    value: documentsFieldKey
    contentType: 'text/plain'
    attributes: { enabled: true, exp: expires }
  }
}

resource stripeApiKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(stripeApiKey)) {
  parent: vault
  name: secretNames.stripeApiKey
  properties: {
    value: stripeApiKey
    contentType: 'text/plain'
    attributes: { enabled: true, exp: expires }
  }
}

resource portalDatabaseUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(portalDatabaseUrl)) {
  parent: vault
  name: secretNames.portalDatabaseUrl
  properties: {
    value: portalDatabaseUrl
    contentType: 'text/plain'
    attributes: { enabled: true, exp: expires }
  }
}

resource scimBearerTokensSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(scimBearerTokens)) {
  parent: vault
  name: secretNames.scimBearerTokens
  properties: {
    value: scimBearerTokens
    contentType: 'text/plain'
    attributes: { enabled: true, exp: expires }
  }
}

resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [{ categoryGroup: 'audit', enabled: true }, { categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
