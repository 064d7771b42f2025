// Data-plane roles for the app's identity, each on the one resource it is needed for, and
// nothing at resource-group or subscription scope.

@description('Object id of the Function App\'s system-assigned identity.')
param principalId string

param storageAccountName string
param serviceBusName string
param keyVaultName string

@description('Vault of the QuickBooks refresh tokens, which the app rotates and so writes.')
param tokenVaultName string
param docIntelName string
param appInsightsName string

// Built-in role definition ids (the same in every tenant).
var roles = {
  // Read and write blobs: the app's containers, the host's leases and the deployment package.
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  // The blob trigger's poison queue and Durable Functions' task hub queues and tables.
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2552a39e'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  // Read and write secrets, on the token vault only.
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  cognitiveServicesUser: 'a97b65f3-24c7-4388-baec-2e87135dc908'
  // Entra-authenticated telemetry ingestion into Application Insights.
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// Blob Data Contributor covers blob leases too; Blob Data Owner would add only the right to
// change ACLs on a hierarchical-namespace account, which this one is not.
var storageRoles = [
  roles.storageBlobDataContributor
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: serviceBusName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource tokenVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: tokenVaultName
}

resource docIntel 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: docIntelName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource storageAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in storageRoles: {
    name: guid(storage.id, principalId, role)
    scope: storage
    properties: {
      principalId: principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    }
  }
]

resource serviceBusAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in [roles.serviceBusDataSender, roles.serviceBusDataReceiver]: {
    name: guid(serviceBus.id, principalId, role)
    scope: serviceBus
    properties: {
      principalId: principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    }
  }
]

resource keyVaultAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, principalId, roles.keyVaultSecretsUser)
  scope: keyVault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

resource tokenVaultAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(tokenVault.id, principalId, roles.keyVaultSecretsOfficer)
  scope: tokenVault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
  }
}

resource docIntelAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(docIntel.id, principalId, roles.cognitiveServicesUser)
  scope: docIntel
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.cognitiveServicesUser)
  }
}

resource telemetryAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}
