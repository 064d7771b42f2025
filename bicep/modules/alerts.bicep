// Alerts to one action group: dead letters, function failures, the availability SLO's error
// budget burning too fast, and Postgres storage and CPU.

param name string

param location string

@description('Address the action group emails.')
param alertEmail string

param serviceBusId string
param appInsightsId string
param postgresId string

@description('Availability objective over a 30-day month, as a fraction.')
param availabilityTarget string = '0.999'

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${name}'
  location: 'global'
  properties: {
    groupShortName: take('aos${name}', 12)
    enabled: true
    emailReceivers: [
      { name: 'ops', emailAddress: alertEmail, useCommonAlertSchema: true }
    ]
  }
}

var action = [{ actionGroupId: actionGroup.id }]

resource deadLetters 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'dead-letters-${name}'
  location: 'global'
  properties: {
    description: 'A message was dead-lettered: see docs/operations.md, "Dead letters".'
    severity: 2
    enabled: true
    scopes: [serviceBusId]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'dead-lettered'
          metricName: 'DeadletteredMessages'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          dimensions: [{ name: 'EntityName', operator: 'Include', values: ['*'] }]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    actions: action
  }
}

resource functionFailures 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'function-failures-${name}'
  location: 'global'
  properties: {
    description: 'Function invocations are failing.'
    severity: 2
    enabled: true
    scopes: [appInsightsId]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'failed-requests'
          metricName: 'requests/failed'
          metricNamespace: 'microsoft.insights/components'
          operator: 'GreaterThan'
          threshold: 5
          timeAggregation: 'Count'
        }
      ]
    }
    actions: action
  }
}

// Burn rate = error rate / (1 - target). Over a month, burning at 14.4 for one hour spends
// 2% of the budget, and at 6 for six hours 5%: the two multi-window pages of the SRE book.
var burnWindows = [
  { name: 'fast', window: 'PT1H', hours: 1, threshold: 14, severity: 1 }
  { name: 'slow', window: 'PT6H', hours: 6, threshold: 6, severity: 2 }
]

resource burnRate 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [
  for burn in burnWindows: {
    name: 'slo-burn-${burn.name}-${name}'
    location: location
    properties: {
      description: 'Availability error budget (${availabilityTarget} monthly) burning at over ${burn.threshold}x.'
      severity: burn.severity
      enabled: true
      scopes: [appInsightsId]
      evaluationFrequency: 'PT5M'
      windowSize: burn.window
      criteria: {
        allOf: [
          {
            query: 'requests | where timestamp > ago(${burn.hours}h) | summarize total = count(), failed = countif(success == false) | extend burn = iff(total == 0, 0.0, todouble(failed) / total / (1.0 - ${availabilityTarget}))'
            timeAggregation: 'Maximum'
            metricMeasureColumn: 'burn'
            operator: 'GreaterThan'
            threshold: burn.threshold
            failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
          }
        ]
      }
      actions: { actionGroups: [actionGroup.id] }
    }
  }
]

var postgresLimits = [
  { metric: 'storage_percent', threshold: 85, description: 'Postgres storage is over 85% full.' }
  { metric: 'cpu_percent', threshold: 80, description: 'Postgres CPU is over 80%.' }
]

resource postgresAlerts 'Microsoft.Insights/metricAlerts@2018-03-01' = [
  for limit in postgresLimits: {
    name: 'postgres-${replace(limit.metric, '_', '-')}-${name}'
    location: 'global'
    properties: {
      description: limit.description
      severity: 2
      enabled: true
      scopes: [postgresId]
      evaluationFrequency: 'PT5M'
      windowSize: 'PT15M'
      criteria: {
        'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
        allOf: [
          {
            criterionType: 'StaticThresholdCriterion'
            name: limit.metric
            metricName: limit.metric
            metricNamespace: 'Microsoft.DBforPostgreSQL/flexibleServers'
            operator: 'GreaterThan'
            threshold: limit.threshold
            timeAggregation: 'Average'
          }
        ]
      }
      actions: action
    }
  }
]

output actionGroupId string = actionGroup.id
