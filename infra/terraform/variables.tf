variable "environment_name" {
  description = "The environment's name: part of every resource name."
  type        = string
  validation {
    condition     = length(var.environment_name) >= 1 && length(var.environment_name) <= 16
    error_message = "environment_name: 1 to 16 characters."
  }
}

variable "resource_group_name" {
  description = "An existing resource group to deploy into."
  type        = string
}

variable "location" {
  type = string
}

variable "registry_domain" {
  description = "Login-server domain: a request for <registry>.<registry_domain> goes to registry <registry>."
  type        = string
}

variable "default_registry" {
  description = "The registry that a request on the bare host name belongs to."
  type        = string
  default     = "default"
}

variable "replica_regions" {
  description = "Replica regions for Premium geo-replication: a Blob Storage account each, and Cosmos DB regions."
  type        = list(string)
  default     = []
}

variable "region_storage" {
  description = "Geo-replication: JSON {\"<region>\": \"<Blob endpoint>\"} of the home and every replica region (the app's REGION_STORAGE; the replica_blob_endpoints output lists the replica accounts). Empty: one region."
  type        = string
  default     = ""
}

variable "cosmos_capacity_mode" {
  type    = string
  default = "serverless"
  validation {
    condition     = contains(["serverless", "autoscale"], var.cosmos_capacity_mode)
    error_message = "cosmos_capacity_mode: serverless or autoscale."
  }
}

variable "cosmos_autoscale_max_throughput" {
  type    = number
  default = 4000
}

variable "always_ready_http" {
  description = "Always-ready instances of the HTTP functions (Flex Consumption; 0 scales from zero)."
  type        = number
  default     = 0
}

variable "maximum_instance_count" {
  type    = number
  default = 100
}

variable "instance_memory_mb" {
  type    = number
  default = 2048
  validation {
    condition     = contains([512, 2048, 4096], var.instance_memory_mb)
    error_message = "instance_memory_mb: 512, 2048 or 4096."
  }
}

variable "service_bus_queues" {
  description = "Extra Service Bus queues (none by default: events use the topic, task runs a Storage queue)."
  type        = list(string)
  default     = []
}

variable "storage_queues" {
  description = "Extra Storage queues in the home account (the task runs queue, TASKS_QUEUE of infra/app-settings.json, is always provisioned)."
  type        = list(string)
  default     = []
}

variable "task_runner_image" {
  description = "The Tasks runner's container image; empty: no Container Apps job."
  type        = string
  default     = ""
}

variable "log_retention_days" {
  type    = number
  default = 30
}

variable "app_settings_overrides" {
  description = "Per-environment values that replace the shared tunables of infra/app-settings.json."
  type        = map(string)
  default     = {}
}

variable "deployer_principal_id" {
  description = "The deploying principal, made Key Vault Secrets Officer to seed the key rings. Empty: none."
  type        = string
  default     = ""
}
