// The whole service in one resource group: `azd up` (azure.yaml at the repository root) or
// `az deployment group create -g <rg> -f infra/bicep/main.bicep -p infra/bicep/main.parameters.<env>.json`.
// The Terraform flavour (infra/terraform) declares the same resources and role assignments.
targetScope = 'resourceGroup'

@minLength(1)
@maxLength(16)
@description('The environment\'s name (azd: AZURE_ENV_NAME): part of every resource name.')
param environmentName string
param location string = resourceGroup().location
@description('Login-server domain: a request for <registry>.<registryDomain> goes to registry <registry>.')
param registryDomain string
@description('The registry that a request on the bare host name belongs to.')
param defaultRegistry string = 'default'
@description('Replica regions for Premium geo-replication: a Blob Storage account each, and Cosmos DB regions.')
param replicaRegions array = []
@description('Geo-replication: JSON {"<region>": "<Blob endpoint>"} of the home and every replica region (the app\'s REGION_STORAGE; the REPLICA_BLOB_ENDPOINTS output lists the replica accounts). Empty: one region.')
param regionStorage string = ''
@allowed([ 'serverless', 'autoscale' ])
param cosmosCapacityMode string = 'serverless'
param cosmosAutoscaleMaxThroughput int = 4000
@description('Always-ready instances of the HTTP functions (Flex Consumption; 0 scales from zero).')
param alwaysReadyHttp int = 0
param maximumInstanceCount int = 100
@allowed([ 512, 2048, 4096 ])
param instanceMemoryMB int = 2048
@description('Extra Service Bus queues (none by default: events use the topic, task runs a Storage queue).')
param serviceBusQueues array = []
@description('Extra Storage queues in the home account (the task runs queue, TASKS_QUEUE of infra/app-settings.json, is always provisioned).')
param storageQueues array = []
@description('The Tasks runner\'s container image; empty: no Container Apps job.')
param taskRunnerImage string = ''
param logRetentionDays int = 30
@description('Per-environment values that replace the shared tunables of infra/app-settings.json.')
param appSettingsOverrides object = {}
@description('The deploying principal (azd: AZURE_PRINCIPAL_ID), made Key Vault Secrets Officer to seed the key rings.')
param deployerPrincipalId string = ''

var token = uniqueString(subscription().id, resourceGroup().id, environmentName)
var namePrefix = toLower('${environmentName}-${take(token, 6)}')
var tags = { 'azd-env-name': environmentName, service: 'acr-serverless' }
var tunables = loadJsonContent('../app-settings.json')
var deploymentContainer = 'app-package'
// ADVISORY_DB=blob:advisories: upload osv.dev's archives there to update every instance's scanner.
var advisoriesContainer = 'advisories'

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: { name: 'id-${namePrefix}', location: location, tags: tags }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: { namePrefix: namePrefix, location: location, tags: tags, retentionInDays: logRetentionDays }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'st${take(token, 13)}'
    location: location
    tags: tags
    principalId: identity.outputs.principalId
    workspaceId: monitoring.outputs.workspaceId
    containers: [ deploymentContainer, advisoriesContainer ]
    queues: union(storageQueues, [ tunables.TASKS_QUEUE ])
    home: true
  }
}

module replicaStorage 'modules/storage.bicep' = [
  for region in replicaRegions: {
    name: 'storage-${region}'
    params: {
      name: 'st${take(uniqueString(token, region), 13)}'
      location: region
      tags: tags
      principalId: identity.outputs.principalId
      workspaceId: monitoring.outputs.workspaceId
      home: false
    }
  }
]

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    name: 'cosmos-${namePrefix}'
    location: location
    tags: tags
    principalId: identity.outputs.principalId
    workspaceId: monitoring.outputs.workspaceId
    databaseName: tunables.COSMOS_DATABASE
    capacityMode: cosmosCapacityMode
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    extraRegions: replicaRegions
  }
}

module servicebus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  params: {
    name: 'sb-${namePrefix}'
    location: location
    tags: tags
    principalId: identity.outputs.principalId
    workspaceId: monitoring.outputs.workspaceId
    topicName: tunables.BUS_TOPIC
    subscriptions: json(tunables.BUS_SUBSCRIPTIONS)
    maxDeliveryCount: int(tunables.BUS_MAX_DELIVERIES)
    queues: serviceBusQueues
  }
}

module keyvault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: 'kv-${take(token, 13)}'
    location: location
    tags: tags
    principalId: identity.outputs.principalId
    workspaceId: monitoring.outputs.workspaceId
    deployerPrincipalId: deployerPrincipalId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    name: 'func-${namePrefix}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    deploymentContainer: deploymentContainer
    cosmosEndpoint: cosmos.outputs.endpoint
    serviceBusNamespace: servicebus.outputs.fullyQualifiedNamespace
    keyVaultName: keyvault.outputs.name
    insightsConnectionString: monitoring.outputs.connectionString
    workspaceId: monitoring.outputs.workspaceId
    registryDomain: registryDomain
    defaultRegistry: defaultRegistry
    regionStorage: regionStorage
    alwaysReadyHttp: alwaysReadyHttp
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    appSettingsOverrides: appSettingsOverrides
  }
}

module taskRunner 'modules/taskrunner.bicep' = if (!empty(taskRunnerImage)) {
  name: 'taskrunner'
  params: {
    namePrefix: namePrefix
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    workspaceId: monitoring.outputs.workspaceId
    image: taskRunnerImage
    storageAccountName: storage.outputs.name
    queueName: tunables.TASKS_QUEUE
    replicaTimeoutSeconds: 29400 // the longest run timeout (8 h, ACR's) and a margin
    maxExecutions: 10
    environmentVariables: {
      BLOB_ACCOUNT_URL: storage.outputs.blobEndpoint
      QUEUE_ACCOUNT_URL: storage.outputs.queueEndpoint
      TASKS_QUEUE: tunables.TASKS_QUEUE
      COSMOS_ENDPOINT: cosmos.outputs.endpoint
      COSMOS_AUTH: 'identity'
      COSMOS_DATABASE: tunables.COSMOS_DATABASE
      SERVICEBUS_NAMESPACE: servicebus.outputs.fullyQualifiedNamespace
      BUS_KIND: 'service-bus'
      // what RUN steps reach: filtered (fails closed where the job has no NET_ADMIN, as in Container Apps)
      TASKS_BUILD_NETWORK: tunables.TASKS_BUILD_NETWORK
      TASKS_BUILD_NETWORK_ALLOW: tunables.TASKS_BUILD_NETWORK_ALLOW
      TASKS_BUILD_NETWORK_DENY: tunables.TASKS_BUILD_NETWORK_DENY
      TASKS_BUILD_DNS: tunables.TASKS_BUILD_DNS
    }
  }
}

output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_HOST string = functionApp.outputs.defaultHostName
output KEY_VAULT_NAME string = keyvault.outputs.name
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output COSMOS_ENDPOINT string = cosmos.outputs.endpoint
output SERVICEBUS_NAMESPACE string = servicebus.outputs.fullyQualifiedNamespace
@description('Each replica region\'s Blob endpoint (geo-replication\'s REGION_STORAGE map).')
output REPLICA_BLOB_ENDPOINTS array = [for (region, i) in replicaRegions: { region: region, blobEndpoint: replicaStorage[i].outputs.blobEndpoint }]
