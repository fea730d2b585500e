# The Tasks runner: an event-driven Azure Container Apps job that starts an execution per message on the
# Storage queue of task runs (TASKS_QUEUE in the home account), as the same user-assigned identity (no keys:
# KEDA's azure-queue scaler authenticates with the identity). Each execution runs `python -m services.tasks
# runner --once`: it takes runs until the queue is empty, then exits. Deployed only when a runner image is
# given (an image of this repository with buildah installed).
variable "name_prefix" { type = string }
variable "resource_group_name" { type = string }
variable "location" { type = string }
variable "tags" { type = map(string) }
variable "identity_id" { type = string }
variable "identity_client_id" { type = string }
variable "workspace_id" { type = string }
variable "image" { type = string }
variable "storage_account_name" { type = string }
variable "queue_name" { type = string }
variable "replica_timeout_seconds" { type = number }
variable "max_executions" { type = number }
variable "environment_variables" {
  description = "App settings the runner shares with the Function App (endpoints, identity)."
  type        = map(string)
}

resource "azurerm_container_app_environment" "environment" {
  name                       = "cae-${var.name_prefix}"
  resource_group_name        = var.resource_group_name
  location                   = var.location
  tags                       = var.tags
  log_analytics_workspace_id = var.workspace_id
}

resource "azurerm_container_app_job" "job" {
  name                         = "job-${var.name_prefix}-tasks"
  resource_group_name          = var.resource_group_name
  location                     = var.location
  tags                         = var.tags
  container_app_environment_id = azurerm_container_app_environment.environment.id
  replica_timeout_in_seconds   = var.replica_timeout_seconds
  replica_retry_limit          = 0

  identity {
    type         = "UserAssigned"
    identity_ids = [var.identity_id]
  }

  event_trigger_config {
    parallelism              = 1
    replica_completion_count = 1
    scale {
      min_executions              = 0
      max_executions              = var.max_executions
      polling_interval_in_seconds = 10
      rules {
        name             = "task-runs"
        custom_rule_type = "azure-queue"
        metadata = {
          accountName = var.storage_account_name
          queueName   = var.queue_name
          queueLength = "1"
        }
        identity = var.identity_id
      }
    }
  }

  template {
    container {
      name    = "runner"
      image   = var.image
      command = ["python", "-m", "services.tasks", "runner", "--once"]
      cpu     = 1.0
      memory  = "2Gi"
      env {
        name  = "AZURE_CLIENT_ID"
        value = var.identity_client_id
      }
      dynamic "env" {
        for_each = var.environment_variables
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }
}

output "job_name" { value = azurerm_container_app_job.job.name }
