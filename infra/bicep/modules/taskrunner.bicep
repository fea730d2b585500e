// The Tasks runner: an event-driven Azure Container Apps job that starts an execution per message on the
// Storage queue of task runs (TASKS_QUEUE in the home account), as the same user-assigned identity (no keys:
// KEDA's azure-queue scaler authenticates with the identity). Each execution runs `python -m services.tasks
// runner --once`: it takes runs until the queue is empty, then exits. Deployed only when a runner image is
// given (an image of this repository with buildah installed).
param namePrefix string
param location string
param tags object
param identityId string
param identityClientId string
param workspaceId string
param image string
param storageAccountName string
param queueName string
param replicaTimeoutSeconds int
param maxExecutions int
@description('App settings the runner shares with the Function App (endpoints, identity).')
param environmentVariables object

var sharedEnvironment = [for item in items(environmentVariables): { name: item.key, value: item.value }]

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: last(split(workspaceId, '/'))
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: 'cae-${namePrefix}'
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        sharedKey: workspace.listKeys().primarySharedKey
      }
    }
  }
}

resource job 'Microsoft.App/jobs@2024-03-01' = {
  name: 'job-${namePrefix}-tasks'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    environmentId: environment.id
    configuration: {
      triggerType: 'Event'
      replicaTimeout: replicaTimeoutSeconds
      replicaRetryLimit: 0
      eventTriggerConfig: {
        parallelism: 1
        replicaCompletionCount: 1
        scale: {
          minExecutions: 0
          maxExecutions: maxExecutions
          pollingInterval: 10
          rules: [
            {
              name: 'task-runs'
              type: 'azure-queue'
              metadata: { accountName: storageAccountName, queueName: queueName, queueLength: '1' }
              identity: identityId
            }
          ]
        }
      }
    }
    template: {
      containers: [
        {
          name: 'runner'
          image: image
          command: [ 'python', '-m', 'services.tasks', 'runner', '--once' ]
          resources: { cpu: json('1.0'), memory: '2Gi' }
          env: concat([ { name: 'AZURE_CLIENT_ID', value: identityClientId } ], sharedEnvironment)
        }
      ]
    }
  }
}

output jobName string = job.name
