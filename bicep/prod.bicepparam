using 'main.bicep'

param environmentName = 'prod'
param alertEmail = 'ops@advisoros.example'
param enableFrontDoor = true
param postgresSkuName = 'Standard_D2ds_v5'
param postgresSkuTier = 'GeneralPurpose'
param postgresHighAvailability = true
param postgresBackupRetentionDays = 35
param postgresGeoRedundantBackup = true
param stripeLivemode = true
// The deploying workflow reads it from the environment's secrets; never written here.
param postgresAdminPassword = readEnvironmentVariable('POSTGRES_ADMIN_PASSWORD', '')
