// Azure AI Document Intelligence account, reached only with Microsoft Entra identities.

@description('Account name; also its custom subdomain, which Entra authentication needs.')
param name string

param location string

@description('Log Analytics workspace that receives the diagnostic settings.')
param workspaceId string

@allowed(['F0', 'S0'])
param skuName string = 'S0'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  kind: 'FormRecognizer'
  sku: { name: skuName }
  identity: { type: 'SystemAssigned' }
  properties: {
    customSubDomainName: name
    // No keys: the app calls it with its managed identity (Cognitive Services User).
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource accountDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: account
  properties: {
    workspaceId: workspaceId
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output id string = account.id
output name string = account.name
output endpoint string = account.properties.endpoint
