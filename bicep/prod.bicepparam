using 'main.bicep'

param environmentName = 'prod'
