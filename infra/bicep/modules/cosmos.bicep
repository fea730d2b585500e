// Cosmos DB for NoSQL: database `registry` and the containers the code expects (../../cosmos-containers.json,
// the same list as services/platform/cosmos.py CONTAINERS), serverless or autoscale, extra regions for Premium.
param name string
param location string
param tags object
param principalId string
param workspaceId string
param databaseName string
@allowed([ 'serverless', 'autoscale' ])
param capacityMode string
@description('Autoscale: the database\'s maximum RU/s (shared by its containers).')
param autoscaleMaxThroughput int
@description('Extra read/write regions (Premium geo-replication). Serverless accounts are single-region.')
param extraRegions array

var containers = loadJsonContent('../../cosmos-containers.json')
var locations = [for (region, i) in concat([ location ], extraRegions): {
  locationName: region
  failoverPriority: i
  isZoneRedundant: false
}]

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: { defaultConsistencyLevel: 'Session' }
    locations: locations
    enableMultipleWriteLocations: false
    enableAutomaticFailover: !empty(extraRegions)
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    publicNetworkAccess: 'Enabled'
    minimalTlsVersion: 'Tls12'
    capabilities: capacityMode == 'serverless' ? [ { name: 'EnableServerless' } ] : []
    backupPolicy: { type: 'Continuous', continuousModeProperties: { tier: 'Continuous7Days' } }
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: { id: databaseName }
    options: capacityMode == 'autoscale' ? { autoscaleSettings: { maxThroughput: autoscaleMaxThroughput } } : {}
  }
}

resource sqlContainers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [
  for container in containers: {
    parent: database
    name: container.name
    properties: {
      resource: {
        id: container.name
        partitionKey: { paths: [ container.partitionKey ], kind: 'Hash', version: 2 }
        defaultTtl: container.defaultTtl
        indexingPolicy: {
          indexingMode: 'consistent'
          automatic: true
          includedPaths: [ { path: '/*' } ]
          excludedPaths: [ { path: '/"_etag"/?' } ]
        }
      }
    }
  }
]

// Cosmos DB Built-in Data Contributor, on this account only (a data-plane role: not an ARM role assignment).
resource dataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: account
  name: guid(account.id, principalId, '00000000-0000-0000-0000-000000000002')
  properties: {
    principalId: principalId
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002'
    scope: account.id
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: account
  name: 'to-log-analytics'
  properties: {
    workspaceId: workspaceId
    logs: [
      { category: 'DataPlaneRequests', enabled: true }
      { category: 'ControlPlaneRequests', enabled: true }
    ]
    metrics: [ { category: 'Requests', enabled: true } ]
  }
}

output endpoint string = account.properties.documentEndpoint
