# Log Analytics workspace and workspace-based Application Insights.
variable "name_prefix" { type = string }
variable "resource_group_name" { type = string }
variable "location" { type = string }
variable "tags" { type = map(string) }
variable "retention_in_days" { type = number }

resource "azurerm_log_analytics_workspace" "workspace" {
  name                = "log-${var.name_prefix}"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
  sku                 = "PerGB2018"
  retention_in_days   = var.retention_in_days
}

resource "azurerm_application_insights" "insights" {
  name                = "appi-${var.name_prefix}"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
  application_type    = "web"
  workspace_id        = azurerm_log_analytics_workspace.workspace.id
}

output "workspace_id" { value = azurerm_log_analytics_workspace.workspace.id }
output "connection_string" {
  value     = azurerm_application_insights.insights.connection_string
  sensitive = true
}
