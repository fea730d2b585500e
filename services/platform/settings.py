"""Every setting the services read, in one pydantic-settings model.

Locally the values come from environment variables (the devhost exports them from
`local.settings.json`, whose template is `local.settings.example.json`); in Azure they are app settings.
The environment variable of a field is its upper-case name, e.g. `BLOB_CONNECTION_STRING`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The public, documented Azurite development account (not a secret).
AZURITE_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# The public, documented Cosmos DB emulator key (not a secret).
COSMOS_EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nkZ9V8j8KKmQNRhZMTbgwsmGXx6OVIdi00nHTQ=="


def azurite_connection_string(
    blob_port: int = 10000, host: str = "127.0.0.1", account: str = "devstoreaccount1"
) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={account};"
        f"AccountKey={AZURITE_ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{account};"
    )


def azurite_queue_connection_string(queue_port: int = 10001, host: str = "127.0.0.1") -> str:
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_ACCOUNT_KEY};"
        f"QueueEndpoint=http://{host}:{queue_port}/devstoreaccount1;"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    # Blob Storage: a connection string locally; in Azure an account URL plus managed identity.
    blob_connection_string: str = Field(default_factory=azurite_connection_string)
    blob_account_url: str = ""
    # Geo-replication (services/replication): this instance's region, and every region's storage account as
    # JSON {"<region>": "<connection string or account URL>"} (one Blob Storage account per region). Empty:
    # one region, the account above. The account of `region` is the account above.
    region: str = ""
    region_storage: str = ""

    # Cosmos DB (NoSQL API).
    cosmos_endpoint: str = "https://127.0.0.1:8081"
    cosmos_key: str = COSMOS_EMULATOR_KEY
    # "key": COSMOS_KEY (the emulator); "identity": Entra ID through the managed identity (AZURE_CLIENT_ID),
    # as in Azure, where the account allows no keys.
    cosmos_auth: Literal["key", "identity"] = "key"
    cosmos_database: str = "registry"
    # PEM bundle to trust for the Cosmos endpoint (the local emulator's own certificate).
    cosmos_ca_file: str = ""

    # Which registry a request on a bare address (127.0.0.1:5000) belongs to, and the login-server domain:
    # a request for Host "<name>.<registry_domain>" goes to registry <name>.
    default_registry: str = "local"
    registry_domain: str = "azurecr.localhost"

    # Identity and access (services/auth). The token service's signing keys: the key ring as JSON (in
    # Azure an app setting or Key Vault reference), or a file holding it (made on first use locally).
    auth_signing_keys: str = ""
    auth_signing_keys_file: str = ""
    auth_issuer: str = "acr-serverless"
    access_token_seconds: int = 75 * 60
    refresh_token_seconds: int = 3 * 3600
    # How long a verified password (Basic on /v2/, /oauth2/token) and a registry's identity documents are
    # trusted before they are read again: a disabled token or new password takes effect within this.
    auth_cache_seconds: float = 30.0
    # Entra ID issuers whose access tokens /oauth2/exchange accepts: a JSON list of
    # {"issuer", "jwksUri" or "jwks", "audiences": [...]} (the Azure Resource Manager audience by default).
    entra_issuers: str = ""
    # Peers whose X-Forwarded-For is believed (comma-separated addresses or CIDRs); others are the client.
    trusted_proxies: str = ""
    # Request-rate limits (ACR's per-tier table); off for benchmarks that measure the registry alone.
    rate_limits_enabled: bool = True
    # Multiplies every limit of the table (tests use small limits; 1.0 is ACR's).
    rate_limit_scale: float = 1.0

    # Blob downloads: "redirect" answers 307 to a short-lived read-only SAS URL (ACR's behaviour);
    # "proxy" streams the bytes through the API and honours Range.
    blob_download_mode: Literal["redirect", "proxy"] = "redirect"
    sas_ttl_seconds: int = 900

    # Uploads: the smallest chunk we ask clients for, and the size of the blocks we stage.
    # Blob Storage allows 50,000 blocks a blob: asking for chunks of at least 1 MiB keeps 50 GiB blobs possible.
    chunk_min_length: int = 1024 * 1024
    block_size: int = 4 * 1024 * 1024
    upload_concurrency: int = 4

    # Whether the Storage and Cosmos clients read HTTP(S)_PROXY/NO_PROXY from the environment. aiohttp then
    # looks the proxy settings up again on every request, a third of a manifest HEAD's CPU here: off unless
    # the app really runs behind a proxy.
    proxy_from_environment: bool = False

    max_manifest_bytes: int = 4 * 1024 * 1024
    # Manifests at most this big are kept inline in their Cosmos document (one point read per GET).
    inline_manifest_bytes: int = 256 * 1024

    # Events and the bus (services/platform/bus.py): "storage-queues" is one Azure Storage queue per
    # subscription (Azurite locally); "service-bus" is a topic with one subscription per consumer.
    bus_kind: Literal["storage-queues", "service-bus"] = "storage-queues"
    queue_connection_string: str = Field(default_factory=lambda: azurite_queue_connection_string())
    servicebus_connection_string: str = ""
    # In Azure: the namespace's host name (<namespace>.servicebus.windows.net), reached with the managed
    # identity instead of a connection string (the namespace allows no keys).
    servicebus_namespace: str = ""
    bus_topic: str = "registry-events"
    bus_subscriptions: list[str] = Field(default_factory=lambda: ["webhooks", "scanning", "replication", "tasks"])
    bus_max_deliveries: int = 5  # then the message goes to the poison / dead-letter queue
    bus_visibility_timeout_seconds: int = 300  # how long a received queue message stays invisible
    # The outbox relay republishes events committed but still unpublished after this long.
    outbox_relay_after_seconds: float = 5.0
    outbox_published_ttl_seconds: int = 24 * 3600
    # Fault injection for tests only: SIGKILL the process between the commit of an event and its publish.
    fault_kill_before_publish: bool = False
    # Fault injection for tests only: SIGKILL the replication worker after its first blob copy of an image
    # into a region, before the rest (services/replication/worker.py).
    fault_kill_mid_copy: bool = False

    # Image scanning (services/scanning): the OSV advisory database (a directory, a zip file, or
    # "blob:<container>[/<prefix>]" in the storage account; empty: no advisories), images one instance scans
    # at once (each streams its layers one at a time), how long a claimed scan may run before another
    # instance may take it over, and the uncompressed size one layer may reach.
    advisory_db: str = ""
    # Off: this instance does no scanning work (pushes, rescans asked for, re-matches are left to instances
    # where it is on). The test suites turn it off except where scanning is tested: their devhosts share
    # one Cosmos DB, and no other test should see referrers it did not push.
    scanner_enabled: bool = True
    scan_concurrency: int = 2
    scan_lease_seconds: int = 900
    scan_max_layer_bytes: int = 16 * 1024**3
    # External scanners (Harbor's adapter API, a registry's policies.externalScanner): how long one may take,
    # and whether it may be at a private, loopback or link-local address (local runs).
    external_scanner_timeout_seconds: float = 600.0
    external_scanner_allow_private_targets: bool = False

    # Webhook delivery: per-attempt timeout, attempts, exponential backoff with jitter between them.
    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 5
    webhook_backoff_base_seconds: float = 1.0
    webhook_backoff_max_seconds: float = 30.0
    # Deliveries to private, loopback and link-local addresses are refused unless this is set (local runs).
    webhook_allow_private_targets: bool = False
    # Secrets kept at rest (webhook custom headers and signing secrets) are sealed with this key ring
    # (services/platform/secrets.py): JSON [{"kid", "key": base64 of 32 bytes}], the first seals; in Azure a
    # Key Vault reference. Or a file holding it, made on first use (locally .local/auth/secrets-keys.json).
    secrets_keys: str = ""
    secrets_keys_file: str = ""
    # Failed sign-ins (services/auth/failures.py): how many wrong passwords a client address, and a username
    # of a registry, may send per minute (burst: a minute's worth) before further attempts are refused with
    # 429 and Retry-After without hashing anything; a right password does not count. 0 turns a limit off.
    # Per instance, in memory. The per-username budget is the larger, so that one address alone cannot spend
    # a name's budget and lock its owner out.
    auth_failures_per_address_per_minute: int = 20
    auth_failures_per_username_per_minute: int = 30
    # Threads that verify passwords (argon2id, ~30 ms of CPU and 19 MiB each) off the event loop.
    password_verify_workers: int = 2
    # Worker processes per instance (the Functions host's setting; the devhost forks this many, each on the
    # same port: services/devhost/workers.py). `make run` uses one per CPU core.
    functions_worker_process_count: int = 1
    # Point reads for pulls (tags, manifests, blob links, repository attributes) kept by each worker process
    # (services/platform/readcache.py): never stale for writes made through the same instance (its worker
    # processes share change marks in READ_CACHE_MARKS_FILE, default: a file in the temp directory); another
    # instance's write is seen within this many seconds. 0 turns the cache off.
    read_cache_seconds: float = 1.0
    read_cache_marks_file: str = ""
    # The manifest cache of each instance (services/registry/app.py ManifestCache), in bytes, and the
    # largest manifest it keeps (larger ones are read from Blob Storage each time; the default is the
    # largest manifest kept inline in Cosmos, `inline_manifest_bytes`).
    manifest_cache_bytes: int = 64 * 1024 * 1024
    manifest_cache_max_manifest_bytes: int = 256 * 1024

    # Cosmos DB or Blob Storage unreachable, hanging or throttling (services/platform/availability.py). One
    # call is retried at most dependency_retry_total times (connection failures, timeouts, 408/5xx), each
    # attempt waiting at most the connect and read timeouts (Storage's is longer: it moves 4 MiB blocks), and
    # Cosmos 429s at most cosmos_throttle_wait_seconds in all; then the API answers 503 with Retry-After. The
    # SDKs' defaults held a request for 80 s (refused Storage) to minutes (hung endpoints).
    dependency_retry_total: int = 2
    dependency_retry_backoff_seconds: float = 0.5
    dependency_connect_timeout_seconds: float = 5.0
    cosmos_read_timeout_seconds: float = 10.0
    storage_read_timeout_seconds: float = 30.0
    cosmos_throttle_wait_seconds: float = 5.0
    # How long /health/ready reuses its answer: a flood of probes costs each dependency one read per this.
    health_cache_seconds: float = 2.0
    # The most entries a manifest's `layers` and `manifests` may hold together (more: 400 MANIFEST_INVALID);
    # each is a read before the push is accepted. See services/registry/manifest.py for why 1,000.
    max_manifest_descriptors: int = 1000
    # The devhost's front end (services/devhost/protocol.py), the limits Azure's front end keeps in front of
    # the Functions host: request line and headers at most this many bytes (431); a connection without a
    # request in progress is closed after the idle timeout; headers must be complete this long after their
    # first byte (408); a request body may stall at most this long while the server is reading it.
    devhost_max_header_bytes: int = 64 * 1024
    devhost_idle_timeout_seconds: float = 30.0
    devhost_header_timeout_seconds: float = 30.0
    devhost_body_timeout_seconds: float = 60.0
    # Uploads one instance stages at once (PATCH, and PUT or POST with a body); more are answered 503 with
    # Retry-After. Each holds up to `upload_concurrency` + 2 buffers of `block_size` (24 MiB by default),
    # reused from upload to upload: 16 uploads hold at most 384 MiB.
    max_concurrent_uploads: int = 16
    # Garbage collection (services/registry/collector.py): a blob nothing references is deleted once it has
    # been so for the grace period (a push uploads its layers before its manifest: they are unreferenced
    # until then); a collector that died holding a blob is taken over after the lease; blobs looked at once.
    gc_grace_seconds: float = 3600.0
    gc_lease_seconds: float = 300.0
    gc_concurrency: int = 16
    # Upload sessions idle (no chunk) longer than this are removed with their staged blocks.
    upload_expiry_seconds: float = 24 * 3600.0

    @field_validator("region_storage")
    @classmethod
    def _region_storage_is_a_map(cls, value: str) -> str:
        parse_region_storage(value)  # a deployment with a broken map does not start
        return value

    def region_accounts(self) -> dict[str, str]:
        """Each region's storage account (connection string or account URL), by normalized region name;
        empty in a single-region deployment."""
        return parse_region_storage(self.region_storage)

    # Telemetry (services/platform/telemetry.py), off unless one of these is set: Application Insights (in
    # Azure), else an OTLP collector (`http://host:4318`), else spans and metrics printed to stdout.
    applicationinsights_connection_string: str = ""
    otel_exporter_otlp_endpoint: str = ""
    otel_service_name: str = "acr-serverless"
    telemetry_console: bool = False
    # The share of traces kept (0..1), decided once per trace at its root (a push's request) and followed by
    # every span of it downstream, so a trace is whole or absent. Metrics always count every request.
    telemetry_sampling_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    # GET /metrics (Prometheus text), for local use: off by default (in Azure metrics go to Azure Monitor).
    # With METRICS_TOKEN set it answers only `Authorization: Bearer <token>`; without it, only loopback callers.
    metrics_endpoint: bool = False
    metrics_token: str = ""

    # Tasks (services/tasks): the storage queue of runs to execute, and the runner's limits. A runner reaches
    # each registry's /v2/ at its login server over HTTPS, or at TASKS_REGISTRY_ADDRESS (host:port, plain
    # HTTP) when set: the devhost's address, whose default registry the local runner builds for.
    tasks_queue: str = "task-runs"
    # In Azure: the home account's queue endpoint (https://<account>.queue.core.windows.net), reached with the
    # managed identity; empty: QUEUE_CONNECTION_STRING (Azurite locally).
    queue_account_url: str = ""
    tasks_registry_address: str = ""
    tasks_work_dir: str = ""
    tasks_concurrency: int = 2  # runs one runner executes at once
    tasks_max_context_bytes: int = 100 * 1024 * 1024  # an uploaded context, compressed
    tasks_max_unpacked_bytes: int = 512 * 1024 * 1024
    tasks_log_retention_days: int = 30  # run logs and uploaded sources older than this are deleted (daily)
    tasks_relay_after_seconds: float = 5.0
    tasks_poll_seconds: float = 1.0  # how often a running run's cancel flag is read
    # Agent pools (services/tasks/pools.py): the vCPUs a registry's standard (S1-S3) and isolated (I6) pools
    # may hold together (ACR's default quotas: 16 and 0), and how long a run waiting for a slot of its pool
    # stays out of sight before a runner looks at it again.
    tasks_pool_vcpu_quota: int = 16
    tasks_pool_isolated_vcpu_quota: int = 0
    tasks_pool_wait_seconds: int = 5
    # Git contexts (services/tasks/gitsource.py): how long a fetch may take, and whether the repository may
    # be at a private, loopback or link-local address (local runs; refused by default, as webhook targets).
    tasks_git_timeout_seconds: float = 300.0
    tasks_allow_private_sources: bool = False
    # Other registries a task's credentials name, reached over plain HTTP (comma-separated login servers;
    # local runs and tests only), and the local stand-in for Key Vault: a JSON file mapping Key Vault secret
    # URIs to values (services/tasks/credentials.py).
    tasks_insecure_registries: str = ""
    tasks_vault_secrets_file: str = ""
    # What a build's RUN steps and cmd steps reach (services/tasks/network.py): `filtered` (a network
    # namespace NATed out, refusing the metadata address, the wireserver, the host itself and the DENY ranges;
    # needs CAP_NET_ADMIN + CAP_SYS_ADMIN, else every run ends Error), `none` (no network), `host` (the
    # runner's own network, unfiltered: only by explicit choice). ALLOW: comma-separated IPv4 ranges reachable
    # all the same (e.g. an internal mirror); DNS: the resolvers builds use (default: the host's own).
    tasks_build_network: Literal["filtered", "none", "host"] = "filtered"
    tasks_build_network_allow: str = ""
    tasks_build_network_deny: str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10"
    tasks_build_dns: str = ""


def parse_region_storage(value: str) -> dict[str, str]:
    if not value.strip():
        return {}
    try:
        raw = json.loads(value)
    except ValueError as error:
        raise ValueError("REGION_STORAGE must be a JSON object of region -> account") from error
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValueError("REGION_STORAGE must be a JSON object of region -> account")
    return {key.replace(" ", "").lower(): account for key, account in raw.items()}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
