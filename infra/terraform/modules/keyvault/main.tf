# Key Vault (RBAC): the token service's signing key ring (AUTH_SIGNING_KEYS) and the key ring that seals
# webhook (and task) secrets at rest (SECRETS_KEYS). The app settings are Key Vault references without a
# version, so a new secret version (a rotated ring) is picked up without redeploying.
# The secret values are not in the configuration: infra/scripts/seed-keyvault.sh makes them once.
variable "name" { type = string }
variable "resource_group_name" { type = string }
variable "location" { type = string }
variable "tags" { type = map(string) }
variable "tenant_id" { type = string }
variable "principal_id" { type = string }
variable "workspace_id" { type = string }
variable "deployer_principal_id" {
  description = "Who runs the deployment: Key Vault Secrets Officer, to seed the rings. Empty: none."
  type        = string
  default     = ""
}

resource "azurerm_key_vault" "vault" {
  name                          = var.name
  resource_group_name           = var.resource_group_name
  location                      = var.location
  tags                          = var.tags
  tenant_id                     = var.tenant_id
  sku_name                      = "standard"
  rbac_authorization_enabled    = true
  soft_delete_retention_days    = 90
  purge_protection_enabled      = true
  public_network_access_enabled = true

  network_acls {
    default_action = "Allow"
    bypass         = "AzureServices"
  }
}

resource "azurerm_role_assignment" "app_secrets_user" {
  scope                = azurerm_key_vault.vault.id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = var.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "deployer_secrets_officer" {
  count                = var.deployer_principal_id == "" ? 0 : 1
  scope                = azurerm_key_vault.vault.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = var.deployer_principal_id
}

resource "azurerm_monitor_diagnostic_setting" "vault" {
  name                       = "to-log-analytics"
  target_resource_id         = azurerm_key_vault.vault.id
  log_analytics_workspace_id = var.workspace_id

  enabled_log {
    category_group = "audit"
  }
  enabled_metric {
    category = "AllMetrics"
  }
}

output "name" { value = azurerm_key_vault.vault.name }
output "uri" { value = azurerm_key_vault.vault.vault_uri }
