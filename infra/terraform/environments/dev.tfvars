environment_name       = "dev"
resource_group_name    = "rg-acr-serverless-dev"
location               = "swedencentral"
registry_domain        = "dev.azurecr.example.com"
cosmos_capacity_mode   = "serverless"
always_ready_http      = 0
maximum_instance_count = 20
log_retention_days     = 30
