// The Function App on the Flex Consumption plan (Python 3.11), running as the user-assigned identity. Its
// app settings: the tunables shared with the Terraform flavour (../../app-settings.json), then what this
// deployment computes (azureSettings: endpoints and identity-based connections, no keys), then overrides.
param name string
param location string
param tags object
param identityId string
param identityClientId string
param storageAccountName string
param blobEndpoint string
@description('The home account\'s queue endpoint: the task runs queue, reached with the identity.')
param queueEndpoint string
param deploymentContainer string
param cosmosEndpoint string
param serviceBusNamespace string
param keyVaultName string
param insightsConnectionString string
param workspaceId string
param registryDomain string
param defaultRegistry string
@description('Geo-replication: every region\'s Blob endpoint as JSON {"<region>": "<endpoint>"} (REGION_STORAGE); empty: one region.')
param regionStorage string
@description('Always-ready instances of the HTTP functions (0: scale from zero).')
param alwaysReadyHttp int
param maximumInstanceCount int
@allowed([ 512, 2048, 4096 ])
param instanceMemoryMB int
@description('Per-environment values that replace the shared tunables (e.g. RATE_LIMIT_SCALE).')
param appSettingsOverrides object

var keyVaultReference = 'VaultName=${keyVaultName};SecretName='
var azureSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: insightsConnectionString
  AZURE_CLIENT_ID: identityClientId
  BLOB_ACCOUNT_URL: blobEndpoint
  QUEUE_ACCOUNT_URL: queueEndpoint
  COSMOS_ENDPOINT: cosmosEndpoint
  SERVICEBUS_NAMESPACE: serviceBusNamespace
  SERVICEBUS_CONNECTION_STRING__fullyQualifiedNamespace: serviceBusNamespace
  SERVICEBUS_CONNECTION_STRING__credential: 'managedidentity'
  SERVICEBUS_CONNECTION_STRING__clientId: identityClientId
  AUTH_SIGNING_KEYS: '@Microsoft.KeyVault(${keyVaultReference}auth-signing-keys)'
  SECRETS_KEYS: '@Microsoft.KeyVault(${keyVaultReference}secrets-keys)'
  REGISTRY_DOMAIN: registryDomain
  DEFAULT_REGISTRY: defaultRegistry
  REGION: location
  REGION_STORAGE: regionStorage
}
var settings = union(loadJsonContent('../../app-settings.json'), azureSettings, appSettingsOverrides)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${name}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: identityId
    publicNetworkAccess: 'Enabled'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainer}'
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: identityId }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReadyHttp > 0 ? [ { name: 'http', instanceCount: alwaysReadyHttp } ] : []
      }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [for item in items(settings): { name: item.key, value: item.value }]
    }
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: site
  name: 'to-log-analytics'
  properties: {
    workspaceId: workspaceId
    logs: [ { category: 'FunctionAppLogs', enabled: true } ]
    metrics: [ { category: 'AllMetrics', enabled: true } ]
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
