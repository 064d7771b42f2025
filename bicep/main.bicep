// AdvisorOS infrastructure. One module per resource family; this file wires them together.
// Storage and Service Bus are declared so far; the other families join as their capabilities
// land.

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

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'advisoros${environmentName}${uniqueString(resourceGroup().id)}'
    location: location
    containers: containers
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  params: {
    name: 'advisoros-${environmentName}-${uniqueString(resourceGroup().id)}'
    location: location
  }
}

output storageAccountName string = storage.outputs.name
output serviceBusNamespace string = serviceBus.outputs.fullyQualifiedNamespace
