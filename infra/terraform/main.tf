# The whole service in one resource group; the Bicep flavour (infra/bicep) declares the same resources and
# role assignments. `terraform apply -var-file=environments/<env>.tfvars`, then zip deploy (README).
data "azurerm_client_config" "current" {}

data "azurerm_resource_group" "main" {
  name = var.resource_group_name
}


locals {
  token                = substr(sha1("${data.azurerm_client_config.current.subscription_id}/${data.azurerm_resource_group.main.id}/${var.environment_name}"), 0, 13)
  name_prefix          = lower("${var.environment_name}-${substr(local.token, 0, 6)}")
  tags                 = { "azd-env-name" = var.environment_name, service = "acr-serverless" }
  tunables             = jsondecode(file("${path.module}/../app-settings.json"))
  deployment_container = "app-package"
  # ADVISORY_DB=blob:advisories: upload osv.dev's archives there to update every instance's scanner.
  advisories_container = "advisories"
}

module "identity" {
  source              = "./modules/identity"
  name                = "id-${local.name_prefix}"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = local.tags
}

module "monitoring" {
  source              = "./modules/monitoring"
  name_prefix         = local.name_prefix
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = local.tags
  retention_in_days   = var.log_retention_days
}

module "storage" {
  source              = "./modules/storage"
  name                = "st${local.token}"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = local.tags
  principal_id        = module.identity.principal_id
  workspace_id        = module.monitoring.workspace_id
  containers          = [local.deployment_container, local.advisories_container]
  queues              = distinct(concat(var.storage_queues, [local.tunables.TASKS_QUEUE]))
  home                = true
}

module "replica_storage" {
  source              = "./modules/storage"
  for_each            = toset(var.replica_regions)
  name                = "st${substr(sha1("${local.token}/${each.value}"), 0, 13)}"
  resource_group_name = var.resource_group_name
  location            = each.value
  tags                = local.tags
  principal_id        = module.identity.principal_id
  workspace_id        = module.monitoring.workspace_id
  home                = false
}

module "cosmos" {
  source                   = "./modules/cosmos"
  name                     = "cosmos-${local.name_prefix}"
  resource_group_name      = var.resource_group_name
  location                 = var.location
  tags                     = local.tags
  principal_id             = module.identity.principal_id
  workspace_id             = module.monitoring.workspace_id
  database_name            = local.tunables.COSMOS_DATABASE
  capacity_mode            = var.cosmos_capacity_mode
  autoscale_max_throughput = var.cosmos_autoscale_max_throughput
  extra_regions            = var.replica_regions
}

module "servicebus" {
  source              = "./modules/servicebus"
  name                = "sb-${local.name_prefix}"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = local.tags
  principal_id        = module.identity.principal_id
  workspace_id        = module.monitoring.workspace_id
  topic_name          = local.tunables.BUS_TOPIC
  subscriptions       = jsondecode(local.tunables.BUS_SUBSCRIPTIONS)
  max_delivery_count  = tonumber(local.tunables.BUS_MAX_DELIVERIES)
  queues              = var.service_bus_queues
}

module "keyvault" {
  source                = "./modules/keyvault"
  name                  = "kv-${local.token}"
  resource_group_name   = var.resource_group_name
  location              = var.location
  tags                  = local.tags
  tenant_id             = data.azurerm_client_config.current.tenant_id
  principal_id          = module.identity.principal_id
  workspace_id          = module.monitoring.workspace_id
  deployer_principal_id = var.deployer_principal_id
}

module "functionapp" {
  source                     = "./modules/functionapp"
  name                       = "func-${local.name_prefix}"
  resource_group_name        = var.resource_group_name
  location                   = var.location
  tags                       = local.tags
  identity_id                = module.identity.id
  identity_client_id         = module.identity.client_id
  storage_account_name       = module.storage.name
  blob_endpoint              = module.storage.blob_endpoint
  queue_endpoint             = module.storage.queue_endpoint
  deployment_container       = local.deployment_container
  cosmos_endpoint            = module.cosmos.endpoint
  service_bus_namespace      = module.servicebus.fully_qualified_namespace
  key_vault_name             = module.keyvault.name
  insights_connection_string = module.monitoring.connection_string
  workspace_id               = module.monitoring.workspace_id
  registry_domain            = var.registry_domain
  default_registry           = var.default_registry
  region_storage             = var.region_storage
  always_ready_http          = var.always_ready_http
  maximum_instance_count     = var.maximum_instance_count
  instance_memory_mb         = var.instance_memory_mb
  app_settings_overrides     = var.app_settings_overrides
}

module "taskrunner" {
  source                  = "./modules/taskrunner"
  count                   = var.task_runner_image == "" ? 0 : 1
  name_prefix             = local.name_prefix
  resource_group_name     = var.resource_group_name
  location                = var.location
  tags                    = local.tags
  identity_id             = module.identity.id
  identity_client_id      = module.identity.client_id
  workspace_id            = module.monitoring.workspace_id
  image                   = var.task_runner_image
  storage_account_name    = module.storage.name
  queue_name              = local.tunables.TASKS_QUEUE
  replica_timeout_seconds = 29400 # the longest run timeout (8 h, ACR's) and a margin
  max_executions          = 10
  environment_variables = {
    BLOB_ACCOUNT_URL     = module.storage.blob_endpoint
    QUEUE_ACCOUNT_URL    = module.storage.queue_endpoint
    TASKS_QUEUE          = local.tunables.TASKS_QUEUE
    COSMOS_ENDPOINT      = module.cosmos.endpoint
    COSMOS_AUTH          = "identity"
    COSMOS_DATABASE      = local.tunables.COSMOS_DATABASE
    SERVICEBUS_NAMESPACE = module.servicebus.fully_qualified_namespace
    BUS_KIND             = "service-bus"
    # what RUN steps reach: filtered (fails closed where the job has no NET_ADMIN, as in Container Apps)
    TASKS_BUILD_NETWORK       = local.tunables.TASKS_BUILD_NETWORK
    TASKS_BUILD_NETWORK_ALLOW = local.tunables.TASKS_BUILD_NETWORK_ALLOW
    TASKS_BUILD_NETWORK_DENY  = local.tunables.TASKS_BUILD_NETWORK_DENY
    TASKS_BUILD_DNS           = local.tunables.TASKS_BUILD_DNS
  }
}
