# A Blob Storage account of the registry: the home account (registry content, uploads in progress, the
# Functions host's own storage and the deployment package) or a replica region's account (content only).
# One container per registry (reg-<registry>) is made by the app itself when a registry is created.
variable "name" { type = string }
variable "resource_group_name" { type = string }
variable "location" { type = string }
variable "tags" { type = map(string) }
variable "principal_id" { type = string }
variable "workspace_id" { type = string }
variable "containers" {
  description = "Containers to create up front (the home account: the Flex Consumption deployment container)."
  type        = list(string)
  default     = []
}
variable "queues" {
  description = "Storage queues the app uses (the home account)."
  type        = list(string)
  default     = []
}
variable "staged_upload_days" {
  description = "Days after which a committed upload left under uploads/ (tagged stage=upload) is deleted."
  type        = number
  default     = 7
}
variable "replication" {
  type    = string
  default = "ZRS"
}
variable "home" {
  description = "The home account (the Functions host and the queues live there): the identity also gets Storage Queue Data Contributor."
  type        = bool
  default     = false
}

resource "azurerm_storage_account" "account" {
  name                            = var.name
  resource_group_name             = var.resource_group_name
  location                        = var.location
  tags                            = var.tags
  account_tier                    = "Standard"
  account_kind                    = "StorageV2"
  account_replication_type        = var.replication
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true
  public_network_access_enabled   = true

  network_rules {
    default_action = "Allow"
    bypass         = ["AzureServices"]
  }

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_container" "containers" {
  for_each              = toset(var.containers)
  name                  = each.value
  storage_account_id    = azurerm_storage_account.account.id
  container_access_type = "private"
}

resource "azurerm_storage_queue" "queues" {
  for_each           = toset(var.queues)
  name               = each.value
  storage_account_id = azurerm_storage_account.account.id
}

# Uploads are staged as uncommitted blocks under reg-<registry>/uploads/ (Storage drops those after 7 days);
# an upload committed but not yet moved to its content address carries the index tag stage=upload.
resource "azurerm_storage_management_policy" "lifecycle" {
  storage_account_id = azurerm_storage_account.account.id

  rule {
    name    = "staged-uploads"
    enabled = true
    filters {
      blob_types = ["blockBlob"]
      match_blob_index_tag {
        name      = "stage"
        operation = "=="
        value     = "upload"
      }
    }
    actions {
      base_blob {
        delete_after_days_since_modification_greater_than = var.staged_upload_days
      }
    }
  }
}

resource "azurerm_role_assignment" "blob" {
  scope                = azurerm_storage_account.account.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = var.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "queue" {
  count                = var.home ? 1 : 0
  scope                = azurerm_storage_account.account.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = var.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_monitor_diagnostic_setting" "blob" {
  name                       = "to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.account.id}/blobServices/default"
  log_analytics_workspace_id = var.workspace_id

  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
  enabled_metric {
    category = "Transaction"
  }
}

output "id" { value = azurerm_storage_account.account.id }
output "name" { value = azurerm_storage_account.account.name }
output "blob_endpoint" { value = azurerm_storage_account.account.primary_blob_endpoint }
output "queue_endpoint" { value = azurerm_storage_account.account.primary_queue_endpoint }
