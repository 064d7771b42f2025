// PostgreSQL Flexible Server and the app's database: Microsoft Entra authentication on,
// backups kept and high availability and private access chosen per environment.

@description('Server name (3-63 lower-case letters, digits and hyphens).')
param name string

param location string

@description('Log Analytics workspace that receives the diagnostic settings.')
param workspaceId string

@description('Compute size, such as Standard_B2ms (Burstable) or Standard_D2ds_v5 (GeneralPurpose).')
param skuName string = 'Standard_B2ms'

@allowed(['Burstable', 'GeneralPurpose', 'MemoryOptimized'])
param skuTier string = 'Burstable'

@description('Storage size in GiB; it grows on its own when nearly full.')
param storageSizeGB int = 32

@description('Days of point-in-time restore (7-35).')
@minValue(7)
@maxValue(35)
param backupRetentionDays int = 14

@description('Keep backups in the paired region as well.')
param geoRedundantBackup bool = false

@description('A standby in another availability zone that takes over on failure.')
param highAvailability bool = false

@description('Subnet delegated to Microsoft.DBforPostgreSQL/flexibleServers; empty for public access restricted to Azure services.')
param delegatedSubnetId string = ''

@description('Private DNS zone (privatelink.postgres.database.azure.com) for private access.')
param privateDnsZoneId string = ''

@description('Login of the server administrator that runs the migrations.')
param administratorLogin string = 'advisoros_admin'

@description('Password of that administrator, from the deploying environment; never stored in the repository.')
@secure()
param administratorLoginPassword string

@description('Object id of the Microsoft Entra group that administers the server; empty for none.')
param entraAdminObjectId string = ''

@description('Display name of that group.')
param entraAdminName string = ''

var privateAccess = !empty(delegatedSubnetId)
var privateNetwork = {
  delegatedSubnetResourceId: delegatedSubnetId
  privateDnsZoneArmResourceId: privateDnsZoneId
  publicNetworkAccess: 'Disabled'
}
var publicNetwork = { publicNetworkAccess: 'Enabled' }

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: name
  location: location
  sku: { name: skuName, tier: skuTier }
  properties: {
    version: '16'
    administratorLogin: administratorLogin
    administratorLoginPassword: administratorLoginPassword
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      // Limitation: the app connects with the DATABASE_URL secret (a password), so
      // password authentication stays on until the app asks Entra for tokens itself.
      passwordAuth: 'Enabled'
      tenantId: subscription().tenantId
    }
    storage: { storageSizeGB: storageSizeGB, autoGrow: 'Enabled' }
    backup: {
      backupRetentionDays: backupRetentionDays
      geoRedundantBackup: geoRedundantBackup ? 'Enabled' : 'Disabled'
    }
    highAvailability: { mode: highAvailability ? 'ZoneRedundant' : 'Disabled' }
    network: privateAccess ? privateNetwork : publicNetwork
  }
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: server
  name: 'advisoros'
  properties: { charset: 'UTF8', collation: 'en_US.utf8' }
}

// With public access, only Azure services (the Function App) may connect.
resource allowAzure 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = if (!privateAccess) {
  parent: server
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: { startIpAddress: '0.0.0.0', endIpAddress: '0.0.0.0' }
}

resource entraAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = if (!empty(entraAdminObjectId)) {
  parent: server
  name: empty(entraAdminObjectId) ? 'none' : entraAdminObjectId
  properties: {
    principalType: 'Group'
    principalName: entraAdminName
    tenantId: subscription().tenantId
  }
}

resource logConnections 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: server
  name: 'log_connections'
  properties: { value: 'on', source: 'user-override' }
}

resource serverDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: server
  properties: {
    workspaceId: workspaceId
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output id string = server.id
output name string = server.name
output host string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
