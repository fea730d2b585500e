# Cosmos DB for NoSQL: database `registry` and the containers the code expects (../../cosmos-containers.json,
# the same list as services/platform/cosmos.py CONTAINERS), serverless or autoscale, extra regions for Premium.
variable "name" { type = string }
variable "resource_group_name" { type = string }
variable "location" { type = string }
variable "tags" { type = map(string) }
variable "principal_id" { type = string }
variable "workspace_id" { type = string }
variable "database_name" { type = string }
variable "capacity_mode" { type = string }
variable "autoscale_max_throughput" {
  description = "Autoscale: the database's maximum RU/s (shared by its containers)."
  type        = number
}
variable "extra_regions" {
  description = "Extra read/write regions (Premium geo-replication). Serverless accounts are single-region."
  type        = list(string)
}

locals {
  containers = { for c in jsondecode(file("${path.module}/../../../cosmos-containers.json")) : c.name => c }
  regions    = concat([var.location], var.extra_regions)
}

resource "azurerm_cosmosdb_account" "account" {
  name                               = var.name
  resource_group_name                = var.resource_group_name
  location                           = var.location
  tags                               = var.tags
  offer_type                         = "Standard"
  kind                               = "GlobalDocumentDB"
  automatic_failover_enabled         = length(var.extra_regions) > 0
  multiple_write_locations_enabled   = false
  local_authentication_disabled      = true
  access_key_metadata_writes_enabled = false
  public_network_access_enabled      = true
  minimal_tls_version                = "Tls12"

  consistency_policy {
    consistency_level = "Session"
  }

  dynamic "geo_location" {
    for_each = local.regions
    content {
      location          = geo_location.value
      failover_priority = geo_location.key
      zone_redundant    = false
    }
  }

  dynamic "capabilities" {
    for_each = var.capacity_mode == "serverless" ? ["EnableServerless"] : []
    content {
      name = capabilities.value
    }
  }

  backup {
    type = "Continuous"
    tier = "Continuous7Days"
  }
}

resource "azurerm_cosmosdb_sql_database" "database" {
  name                = var.database_name
  resource_group_name = var.resource_group_name
  account_name        = azurerm_cosmosdb_account.account.name

  dynamic "autoscale_settings" {
    for_each = var.capacity_mode == "autoscale" ? [var.autoscale_max_throughput] : []
    content {
      max_throughput = autoscale_settings.value
    }
  }
}

resource "azurerm_cosmosdb_sql_container" "containers" {
  for_each              = local.containers
  name                  = each.key
  resource_group_name   = var.resource_group_name
  account_name          = azurerm_cosmosdb_account.account.name
  database_name         = azurerm_cosmosdb_sql_database.database.name
  partition_key_paths   = [each.value.partitionKey]
  partition_key_kind    = "Hash"
  partition_key_version = 2
  default_ttl           = each.value.defaultTtl

  indexing_policy {
    indexing_mode = "consistent"
    included_path {
      path = "/*"
    }
    excluded_path {
      path = "/\"_etag\"/?"
    }
  }
}

# Cosmos DB Built-in Data Contributor, on this account only (a data-plane role: not an ARM role assignment).
resource "azurerm_cosmosdb_sql_role_assignment" "data_contributor" {
  resource_group_name = var.resource_group_name
  account_name        = azurerm_cosmosdb_account.account.name
  role_definition_id  = "${azurerm_cosmosdb_account.account.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002"
  principal_id        = var.principal_id
  scope               = azurerm_cosmosdb_account.account.id
}

resource "azurerm_monitor_diagnostic_setting" "account" {
  name                       = "to-log-analytics"
  target_resource_id         = azurerm_cosmosdb_account.account.id
  log_analytics_workspace_id = var.workspace_id

  enabled_log {
    category = "DataPlaneRequests"
  }
  enabled_log {
    category = "ControlPlaneRequests"
  }
  enabled_metric {
    category = "Requests"
  }
}

output "endpoint" { value = azurerm_cosmosdb_account.account.endpoint }
