# The Function App on the Flex Consumption plan (Python 3.11), running as the user-assigned identity. Its
# app settings: the tunables shared with the Bicep flavour (../../app-settings.json), then what this
# deployment computes (azure_settings: endpoints and identity-based connections, no keys), then overrides.
variable "name" { type = string }
variable "resource_group_name" { type = string }
variable "location" { type = string }
variable "tags" { type = map(string) }
variable "identity_id" { type = string }
variable "identity_client_id" { type = string }
variable "storage_account_name" { type = string }
variable "blob_endpoint" { type = string }
variable "queue_endpoint" {
  description = "The home account's queue endpoint: the task runs queue, reached with the identity."
  type        = string
}
variable "deployment_container" { type = string }
variable "cosmos_endpoint" { type = string }
variable "service_bus_namespace" { type = string }
variable "key_vault_name" { type = string }
variable "insights_connection_string" {
  type      = string
  sensitive = true
}
variable "workspace_id" { type = string }
variable "registry_domain" { type = string }
variable "default_registry" { type = string }
variable "always_ready_http" {
  description = "Always-ready instances of the HTTP functions (0: scale from zero)."
  type        = number
}
variable "maximum_instance_count" { type = number }
variable "instance_memory_mb" { type = number }
variable "region_storage" {
  description = "Geo-replication: every region's Blob endpoint as JSON {\"<region>\": \"<endpoint>\"} (REGION_STORAGE); empty: one region."
  type        = string
}
variable "app_settings_overrides" {
  description = "Per-environment values that replace the shared tunables (e.g. RATE_LIMIT_SCALE)."
  type        = map(string)
}

locals {
  key_vault_reference = "VaultName=${var.key_vault_name};SecretName="
  azure_settings = {
    AzureWebJobsStorage__accountName                      = var.storage_account_name
    AzureWebJobsStorage__credential                       = "managedidentity"
    AzureWebJobsStorage__clientId                         = var.identity_client_id
    APPLICATIONINSIGHTS_CONNECTION_STRING                 = var.insights_connection_string
    AZURE_CLIENT_ID                                       = var.identity_client_id
    BLOB_ACCOUNT_URL                                      = var.blob_endpoint
    QUEUE_ACCOUNT_URL                                     = var.queue_endpoint
    COSMOS_ENDPOINT                                       = var.cosmos_endpoint
    SERVICEBUS_NAMESPACE                                  = var.service_bus_namespace
    SERVICEBUS_CONNECTION_STRING__fullyQualifiedNamespace = var.service_bus_namespace
    SERVICEBUS_CONNECTION_STRING__credential              = "managedidentity"
    SERVICEBUS_CONNECTION_STRING__clientId                = var.identity_client_id
    AUTH_SIGNING_KEYS                                     = "@Microsoft.KeyVault(${local.key_vault_reference}auth-signing-keys)"
    SECRETS_KEYS                                          = "@Microsoft.KeyVault(${local.key_vault_reference}secrets-keys)"
    REGISTRY_DOMAIN                                       = var.registry_domain
    DEFAULT_REGISTRY                                      = var.default_registry
    REGION                                                = var.location
    REGION_STORAGE                                        = var.region_storage
  }
  settings = merge(jsondecode(file("${path.module}/../../../app-settings.json")), local.azure_settings, var.app_settings_overrides)
}

resource "azurerm_service_plan" "plan" {
  name                = "plan-${var.name}"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
  os_type             = "Linux"
  sku_name            = "FC1"
}

resource "azurerm_function_app_flex_consumption" "site" {
  name                              = var.name
  resource_group_name               = var.resource_group_name
  location                          = var.location
  tags                              = var.tags
  service_plan_id                   = azurerm_service_plan.plan.id
  https_only                        = true
  client_certificate_enabled        = false
  public_network_access_enabled     = true
  storage_container_type            = "blobContainer"
  storage_container_endpoint        = "${var.blob_endpoint}${var.deployment_container}"
  storage_authentication_type       = "UserAssignedIdentity"
  storage_user_assigned_identity_id = var.identity_id
  runtime_name                      = "python"
  runtime_version                   = "3.11"
  maximum_instance_count            = var.maximum_instance_count
  instance_memory_in_mb             = var.instance_memory_mb
  app_settings                      = local.settings

  identity {
    type         = "UserAssigned"
    identity_ids = [var.identity_id]
  }

  dynamic "always_ready" {
    for_each = var.always_ready_http > 0 ? [var.always_ready_http] : []
    content {
      name           = "http"
      instance_count = always_ready.value
    }
  }

  site_config {
    minimum_tls_version = "1.2"
    http2_enabled       = true
  }
}

# The Flex Consumption resource of azurerm has no key_vault_reference_identity_id: Key Vault references
# resolve with the user-assigned identity only when the site says so (Bicep: keyVaultReferenceIdentity).
resource "azapi_update_resource" "key_vault_reference_identity" {
  type        = "Microsoft.Web/sites@2024-04-01"
  resource_id = azurerm_function_app_flex_consumption.site.id
  body = {
    properties = {
      keyVaultReferenceIdentity = var.identity_id
    }
  }
}

resource "azurerm_monitor_diagnostic_setting" "site" {
  name                       = "to-log-analytics"
  target_resource_id         = azurerm_function_app_flex_consumption.site.id
  log_analytics_workspace_id = var.workspace_id

  enabled_log {
    category = "FunctionAppLogs"
  }
  enabled_metric {
    category = "AllMetrics"
  }
}

output "name" { value = azurerm_function_app_flex_consumption.site.name }
output "default_hostname" { value = azurerm_function_app_flex_consumption.site.default_hostname }
