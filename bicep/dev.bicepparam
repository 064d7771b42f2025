using 'main.bicep'

param environmentName = 'dev'
param alertEmail = 'ops-dev@advisoros.example'
param enableFrontDoor = false
param postgresHighAvailability = false
param postgresBackupRetentionDays = 7
// The deploying workflow reads it from the environment's secrets; never written here.
param postgresAdminPassword = readEnvironmentVariable('POSTGRES_ADMIN_PASSWORD', '')
