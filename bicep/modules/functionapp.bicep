// The Function App on the Flex Consumption plan (Python 3.11, Linux) with a system-assigned
// identity. It reaches storage, Service Bus, Key Vault and Application Insights with that
// identity; the app settings come from main.bicep, where they are listed in one place.

param name string

param location string

@description('Log Analytics workspace that receives the diagnostic settings.')
param workspaceId string

@description('Storage account holding the deployment package container.')
param storageAccountName string

@description('Blob endpoint of that account (https://<name>.blob.core.windows.net/).')
param blobEndpoint string

@description('Container the plan deploys the app package from.')
param deploymentContainer string

@description('Application Insights component the app reports to.')
param appInsightsName string

@description('The app\'s own settings (name to value); secrets are Key Vault references.')
param appSettings object

@description('Most instances the app may scale out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([2048, 4096])
param instanceMemoryMB int = 2048

@description('How a code or settings change reaches running instances: RollingUpdate drains and replaces instances in batches (no downtime); Recreate restarts them all.')
@allowed(['RollingUpdate', 'Recreate'])
param siteUpdateStrategy string = 'RollingUpdate'

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Settings the platform needs, beside the app's own: telemetry with Entra authentication.
var platformSettings = {
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${name}'
  location: location
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource site 'Microsoft.Web/sites@2024-11-01' = {
  name: name
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertMode: 'Optional'
    keyVaultReferenceIdentity: 'SystemAssigned'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainer}'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: { name: 'python', version: '3.11' }
      siteUpdateStrategy: { type: siteUpdateStrategy }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        for setting in items(union(appSettings, platformSettings)): {
          name: setting.key
          value: setting.value
        }
      ]
    }
  }
}

// Publishing with basic (user name and password) credentials is off: deploys use Entra.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: { allow: false }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: { allow: false }
}

resource siteDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: workspaceId
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output name string = site.name
output id string = site.id
output principalId string = site.identity.principalId
output defaultHostName string = site.properties.defaultHostName
output storageAccountName string = storageAccountName
