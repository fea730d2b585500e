# Service Bus: topic `registry-events` with one subscription per consumer (BUS_SUBSCRIPTIONS), each
# dead-lettering after BUS_MAX_DELIVERIES deliveries and on expiry, and the queues the app uses.
variable "name" { type = string }
variable "resource_group_name" { type = string }
variable "location" { type = string }
variable "tags" { type = map(string) }
variable "principal_id" { type = string }
variable "workspace_id" { type = string }
variable "topic_name" { type = string }
variable "subscriptions" { type = list(string) }
variable "max_delivery_count" { type = number }
variable "queues" {
  description = "Service Bus queues the app uses (the task runs queue of Tasks)."
  type        = list(string)
}
variable "lock_duration" {
  type    = string
  default = "PT5M"
}

resource "azurerm_servicebus_namespace" "namespace" {
  name                          = var.name
  resource_group_name           = var.resource_group_name
  location                      = var.location
  tags                          = var.tags
  sku                           = "Standard"
  local_auth_enabled            = false
  minimum_tls_version           = "1.2"
  public_network_access_enabled = true
}

resource "azurerm_servicebus_topic" "topic" {
  name                                    = var.topic_name
  namespace_id                            = azurerm_servicebus_namespace.namespace.id
  default_message_ttl                     = "P14D"
  requires_duplicate_detection            = true
  duplicate_detection_history_time_window = "PT10M"
}

resource "azurerm_servicebus_subscription" "subscriptions" {
  for_each                                  = toset(var.subscriptions)
  name                                      = each.value
  topic_id                                  = azurerm_servicebus_topic.topic.id
  max_delivery_count                        = var.max_delivery_count
  lock_duration                             = var.lock_duration
  dead_lettering_on_message_expiration      = true
  dead_lettering_on_filter_evaluation_error = true
  default_message_ttl                       = "P14D"
}

resource "azurerm_servicebus_queue" "queues" {
  for_each                             = toset(var.queues)
  name                                 = each.value
  namespace_id                         = azurerm_servicebus_namespace.namespace.id
  max_delivery_count                   = var.max_delivery_count
  lock_duration                        = var.lock_duration
  dead_lettering_on_message_expiration = true
  default_message_ttl                  = "P14D"
}

resource "azurerm_role_assignment" "sender" {
  scope                = azurerm_servicebus_namespace.namespace.id
  role_definition_name = "Azure Service Bus Data Sender"
  principal_id         = var.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "receiver" {
  scope                = azurerm_servicebus_namespace.namespace.id
  role_definition_name = "Azure Service Bus Data Receiver"
  principal_id         = var.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_monitor_diagnostic_setting" "namespace" {
  name                       = "to-log-analytics"
  target_resource_id         = azurerm_servicebus_namespace.namespace.id
  log_analytics_workspace_id = var.workspace_id

  enabled_log {
    category = "OperationalLogs"
  }
  enabled_metric {
    category = "AllMetrics"
  }
}

output "id" { value = azurerm_servicebus_namespace.namespace.id }
output "name" { value = azurerm_servicebus_namespace.namespace.name }
output "fully_qualified_namespace" { value = "${azurerm_servicebus_namespace.namespace.name}.servicebus.windows.net" }
