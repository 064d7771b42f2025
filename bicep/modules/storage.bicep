// Storage account for the Functions runtime and the app's blob containers.

@description('Storage account name (3-24 lower-case letters and digits).')
@maxLength(24)
param name string

param location string

@description('Private blob containers to create.')
param containers array

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: take(toLower(name), 24)
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 30 }
    isVersioningEnabled: true
  }
}

resource blobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for container in containers: {
    parent: blobService
    name: container
    properties: { publicAccess: 'None' }
  }
]

output name string = account.name
