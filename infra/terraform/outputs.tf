output "function_app_name" {
  value = module.functionapp.name
}

output "function_app_host" {
  value = module.functionapp.default_hostname
}

output "key_vault_name" {
  value = module.keyvault.name
}

output "storage_account_name" {
  value = module.storage.name
}

output "cosmos_endpoint" {
  value = module.cosmos.endpoint
}

output "servicebus_namespace" {
  value = module.servicebus.fully_qualified_namespace
}

output "replica_blob_endpoints" {
  description = "Each replica region's Blob endpoint (geo-replication's REGION_STORAGE map)."
  value       = [for region in var.replica_regions : { region = region, blobEndpoint = module.replica_storage[region].blob_endpoint }]
}
