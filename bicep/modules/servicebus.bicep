// Service Bus namespace and the app's queues. The queues come from ../queues.json, which
// `make queues` writes from shared/messaging.py, so code, local broker and Azure agree.

@description('Namespace name (6-50 letters, digits and hyphens).')
@minLength(6)
@maxLength(50)
param name string

param location string

@description('Log Analytics workspace that receives the diagnostic settings.')
param workspaceId string

// Sessions and duplicate detection need the Standard tier at least.
@allowed(['Standard', 'Premium'])
param skuName string = 'Standard'

var queues = loadJsonContent('../queues.json')

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: name
  location: location
  sku: { name: skuName, tier: skuName }
  properties: {
    // Managed identity only: no connection strings or SAS keys.
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
  }
}

resource queueResources 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [
  for queue in queues: {
    parent: namespace
    name: queue.name
    properties: {
      requiresSession: queue.requiresSession
      lockDuration: queue.lockDuration
      maxDeliveryCount: queue.maxDeliveryCount
      requiresDuplicateDetection: queue.requiresDuplicateDetection
      duplicateDetectionHistoryTimeWindow: queue.duplicateDetectionHistoryTimeWindow
      defaultMessageTimeToLive: queue.defaultMessageTimeToLive
      deadLetteringOnMessageExpiration: queue.deadLetteringOnMessageExpiration
    }
  }
]

resource namespaceDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: namespace
  properties: {
    workspaceId: workspaceId
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output id string = namespace.id
output name string = namespace.name
@description('The value of the app setting ServiceBusConnection__fullyQualifiedNamespace.')
output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
