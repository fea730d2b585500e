"""The local host: `python -m services.devhost run|serve`.

    run    start Azurite and the Cosmos DB emulator (state under .local/, kept across restarts), create the
           default registry, and serve the API on 127.0.0.1:5000. Ctrl-C stops everything.
    serve  serve the API only, against the emulators named by the environment (used by the tests).

Ports and paths come from options or the environment: API_PORT (5000), AZURITE_BLOB_PORT (10000),
AZURITE_QUEUE_PORT (the blob port + 1), AZURITE_TABLE_PORT (the blob port + 2), COSMOS_PORT (8081),
STATE_DIR (.local).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import uvicorn

ROOT = Path(__file__).resolve().parents[2]


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


class EmulatorPorts(NamedTuple):
    blob: int
    queue: int
    table: int
    cosmos: int


def emulator_ports(env: Mapping[str, str]) -> EmulatorPorts:
    """The emulators' ports: moving the blob port moves the queue and table ports with it (as the README
    says), so a second `make run AZURITE_BLOB_PORT=...` does not collide with the first one's queue."""
    blob = int(env.get("AZURITE_BLOB_PORT", 10000))
    return EmulatorPorts(
        blob=blob,
        queue=int(env.get("AZURITE_QUEUE_PORT", blob + 1)),
        table=int(env.get("AZURITE_TABLE_PORT", blob + 2)),
        cosmos=int(env.get("COSMOS_PORT", 8081)),
    )


async def _prepare_default_registry() -> str:
    from services.management.access import update_registry
    from services.management.registries import RegistryChanges, create_registry
    from services.platform.blobs import BlobStore
    from services.platform.cosmos import Cosmos
    from services.platform.settings import get_settings

    settings = get_settings()
    metadata, blobs = Cosmos(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    try:
        home = RegistryChanges(location=settings.region) if settings.region else None  # make run REGIONS=...
        doc, _ = await create_registry(metadata, blobs, settings, settings.default_registry, "Premium", changes=home)
        if os.environ.get("DEFAULT_REGISTRY_AUTH_DISABLED", "").lower() in ("1", "true", "yes"):
            # Test devhosts only (tests/conftest.py): the data-plane suites run without credentials.
            doc = await update_registry(metadata, settings.default_registry, auth_disabled=True)
    finally:
        await metadata.close()
        await blobs.close()
    return doc.loginServer


async def _first_login(state_dir: Path, address: str) -> dict[str, str]:
    """`make run`: the default registry's admin user, enabled, with a password in .local/credentials.json.

    A password already in the file is kept while it still works (so a restart changes nothing);
    otherwise password1 is made anew. Deployed registries keep the admin user off (ACR's default).
    """
    from services.auth.passwords import verify_password
    from services.auth.store import AccessStore
    from services.management.access import enable_admin_user, regenerate_admin_password
    from services.platform.cosmos import Cosmos
    from services.platform.settings import get_settings

    settings = get_settings()
    path = state_dir / "credentials.json"
    metadata = Cosmos(settings)
    await metadata.open()
    try:
        name = settings.default_registry
        made = await enable_admin_user(metadata, name)
        password = made[0].value if made else ""
        if not password and path.is_file():
            saved = json.loads(path.read_text()).get("password", "")
            admin = await AccessStore(metadata).admin_user(name)
            if saved and admin is not None and any(verify_password(p.hash, saved) for p in admin.passwords):
                password = saved
        if not password:
            password = (await regenerate_admin_password(metadata, name, "password1")).value
    finally:
        await metadata.close()
    credentials = {"registry": name, "loginServer": address, "username": name, "password": password}
    path.write_text(json.dumps(credentials, indent=2) + "\n")
    path.chmod(0o600)
    return credentials


async def _management_login(state_dir: Path, address: str) -> None:
    """`make run`: the local developer (services/management/dev_issuer.py) is Owner of the default registry,
    and `.local/credentials.json` gets what a management client needs under `"arm"` (a token for a day)."""
    from services.auth.store import AccessStore
    from services.management import dev_issuer
    from services.management.access import assign_role, assign_scope_role
    from services.platform.cosmos import Cosmos
    from services.platform.settings import get_settings

    settings = get_settings()
    issuer = dev_issuer.load_or_create(state_dir / "auth" / "dev-issuer.json")
    metadata = Cosmos(settings)
    await metadata.open()
    try:
        name = settings.default_registry
        assignments = await AccessStore(metadata).role_assignments(name)
        if not any(a.principalId == issuer.principal and a.role == "Owner" for a in assignments):
            await assign_role(metadata, name, issuer.principal, "Owner", tenant=issuer.tenant)
        # ... and of the local subscription, so that they can create registries through the management API
        subscription = f"/subscriptions/{dev_issuer.LOCAL_SUBSCRIPTION}"
        await assign_scope_role(metadata, subscription, issuer.principal, "Owner", tenant=issuer.tenant)
    finally:
        await metadata.close()
    path = state_dir / "credentials.json"
    credentials = json.loads(path.read_text())
    credentials["arm"] = {
        "endpoint": f"http://{address}",
        "subscriptionId": dev_issuer.LOCAL_SUBSCRIPTION,
        "resourceGroup": dev_issuer.LOCAL_RESOURCE_GROUP,
        "token": issuer.token(),
    }
    path.write_text(json.dumps(credentials, indent=2) + "\n")
    path.chmod(0o600)


def serve(host: str, port: int) -> None:
    """Serve the function table: in this process, or in `FUNCTIONS_WORKER_PROCESS_COUNT` forked worker
    processes sharing the port (services/devhost/workers.py), with HTTPS beside HTTP when API_TLS_PORT is
    set. Everything is imported before the workers fork, so they share those pages and start at once."""
    import function_app
    from services.platform.settings import get_settings

    asyncio.run(_prepare_default_registry())
    settings = get_settings()
    tls_port = _env_int("API_TLS_PORT", 0)
    workers = max(1, settings.functions_worker_process_count)
    if workers == 1:
        _serve_worker(function_app.app, host, port, tls_port, 0, reuse_port=False)
        return
    from services.devhost.workers import Supervisor

    ports = [(host, port), *([(host, tls_port)] if tls_port else [])]
    serving = Supervisor(workers, lambda index: _serve_worker(function_app.app, host, port, tls_port, index), ports)
    code = serving.run()
    if code:
        sys.exit(code)


def _serve_worker(app_table: Any, host: str, port: int, tls_port: int, index: int, reuse_port: bool = True) -> None:
    """One worker: the HTTP functions on `port` (and `tls_port`) and the bus triggers; worker 0 also runs the
    timer triggers."""
    from services.devhost.protocol import FrontEndLimits, limited_protocol
    from services.devhost.server import build_app
    from services.devhost.triggers import TriggerRunner
    from services.platform.lifecycle import close_all
    from services.platform.settings import get_settings

    settings = get_settings()
    triggers = TriggerRunner(settings, timers=index == 0)  # timers in worker 0; every worker consumes the bus

    async def shutdown() -> None:
        await triggers.stop()
        await close_all()

    app = build_app(app_table, on_shutdown=shutdown, on_startup=triggers.start)
    limits = FrontEndLimits(
        max_header_bytes=settings.devhost_max_header_bytes,
        idle_timeout=settings.devhost_idle_timeout_seconds,
        header_timeout=settings.devhost_header_timeout_seconds,
        body_timeout=settings.devhost_body_timeout_seconds,
    )
    # One set of server options for HTTP and HTTPS: uvloop, httptools with a front end's limits, keep-alive.
    options: dict[str, Any] = {
        "host": host,
        "loop": "uvloop",
        "http": limited_protocol(limits),
        "log_level": os.environ.get("LOG_LEVEL", "warning").lower(),
        "access_log": bool(os.environ.get("ACCESS_LOG")),
        "timeout_keep_alive": limits.idle_timeout,
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 and hand the app a forged client address,
        # which decides IP rules and rate-limit buckets: only TRUSTED_PROXIES (services/auth/network.py) may.
        "proxy_headers": False,
    }
    servers = [(uvicorn.Server(uvicorn.Config(app, port=port, **options)), port)]
    if tls_port:
        from services.devhost.stack import ensure_certificate

        # HTTPS beside plain HTTP, with the locally made certificate (its own CA: .local/tls/cert.pem). Python's
        # server context refuses anything older than TLS 1.2, ACR's minimum. Only the HTTP server runs the
        # app's lifespan (startup and shutdown happen once).
        cert, key = ensure_certificate(Path(os.environ.get("STATE_DIR", ROOT / ".local")))
        tls = uvicorn.Config(
            app, port=tls_port, ssl_certfile=str(cert), ssl_keyfile=str(key), lifespan="off", **options
        )
        servers.append((uvicorn.Server(tls), tls_port))
    if not reuse_port and len(servers) == 1:
        servers[0][0].run()
        return
    import uvloop

    uvloop.run(_serve_all(servers, host, reuse_port))


async def _serve_all(servers: list[tuple[uvicorn.Server, int]], host: str, reuse_port: bool) -> None:
    """Run the servers until any of them stops (a signal stops them all). With `reuse_port`, each listens
    on a socket of its own bound with SO_REUSEPORT (the worker processes share the port)."""
    from services.devhost.workers import reuse_port_socket

    def start(server: uvicorn.Server, port: int) -> asyncio.Task[None]:
        sockets = [reuse_port_socket(host, port, listen=True)] if reuse_port else None
        return asyncio.create_task(server.serve(sockets=sockets))

    tasks = [start(server, port) for server, port in servers]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server, _ in servers:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)


def _exit_on_sigterm() -> None:
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default SIGTERM
    # action the process would die on the spot and orphan the emulators. SystemExit unwinds instead.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def _regions(value: str) -> list[str]:
    """`make run REGIONS=westeurope,eastus`: the regions to serve from (the first is this instance's)."""
    from services.replication.rules import ReplicationInvalid, check_region

    regions: list[str] = []
    for name in filter(None, (part.strip() for part in value.split(","))):
        try:
            region = check_region(name)
        except ReplicationInvalid as error:
            raise SystemExit(f"REGIONS: {error}") from error
        if region not in regions:
            regions.append(region)
    return regions


def _region_lines(regions: tuple[str, ...]) -> list[str]:
    from services.devhost.stack import region_accounts

    if not regions:
        return []
    accounts = ", ".join(f"{region} (account {account})" for region, account in region_accounts(regions).items())
    return [f"Regions            {accounts}; this instance serves {regions[0]}"]


def run(host: str, port: int) -> None:
    from services.devhost.stack import LocalStack

    _exit_on_sigterm()

    state_dir = Path(os.environ.get("STATE_DIR", ROOT / ".local")).resolve()
    ports = emulator_ports(os.environ)
    stack = LocalStack(
        state_dir,
        azurite_blob_port=ports.blob,
        azurite_queue_port=ports.queue,
        azurite_table_port=ports.table,
        cosmos_port=ports.cosmos,
        node_modules=ROOT / "node_modules",
        regions=_regions(os.environ.get("REGIONS", "")),
    )
    print(f"starting Azurite and the Cosmos DB emulator (state in {state_dir}) ...", flush=True)
    with stack:
        env = stack.env() | stack.region_env()
        os.environ.update(env)
        from services.management import dev_issuer

        # The management API takes Entra tokens only: trust the local issuer (made on first run) too.
        issuer = dev_issuer.load_or_create(state_dir / "auth" / "dev-issuer.json")
        os.environ["ENTRA_ISSUERS"] = dev_issuer.with_issuer(os.environ.get("ENTRA_ISSUERS", ""), issuer)
        (state_dir / "env").write_text("".join(f"export {k}='{v}'\n" for k, v in sorted(env.items())))
        address = f"{host}:{port}"
        os.environ.setdefault("API_TLS_PORT", "5443")  # HTTPS beside HTTP (serve() reads both)
        os.environ.setdefault("METRICS_ENDPOINT", "true")  # GET /metrics for a local scraper (loopback only)
        # One worker process per core, as a Functions instance runs several (services/devhost/workers.py).
        os.environ.setdefault("FUNCTIONS_WORKER_PROCESS_COUNT", str(min(4, os.cpu_count() or 1)))
        os.environ["STATE_DIR"] = str(state_dir)  # where serve() finds the certificate
        from services.platform import audit

        audit.write_to(state_dir / "audit.log")  # the audit records, besides stderr (services/platform/audit.py)
        tls_address = f"{host}:{os.environ['API_TLS_PORT']}"
        asyncio.run(_prepare_default_registry())
        login = asyncio.run(_first_login(state_dir, address))
        asyncio.run(_management_login(state_dir, address))
        user, creds_file = login["username"], state_dir / "credentials.json"
        # python3 is on every machine that runs this; jq may not be.
        read_password = f"python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"password\"])' {creds_file}"
        print(
            "\n".join(
                [
                    "",
                    f"Registry API       http://{address}  (default registry "
                    f"{os.environ.get('DEFAULT_REGISTRY', 'local')!r})",
                    f"Login server       {address}",
                    f"HTTPS (TLS >= 1.2) https://{tls_address}  (certificate: {state_dir / 'tls' / 'cert.pem'})",
                    f"Admin user         {user}",
                    # Not printed: a terminal's scrollback and a redirected `make run` are logs.
                    f"Password           in the credentials file (below), or: {read_password}",
                    f"Credentials        {creds_file}  (registry, loginServer, username, password)",
                    f"Settings           source {state_dir / 'env'}  (for python -m services.management)",
                    f"Management API     http://{address}/subscriptions/...  (token: python -m services.management "
                    'dev-token; also in the credentials file under "arm")',
                    *_region_lines(stack.regions),
                    "",
                    "Log in once (the client keeps the credentials):",
                    f"  {read_password} | podman login --tls-verify=false -u {user} --password-stdin {address}",
                    f"  {read_password} | docker login -u {user} --password-stdin {address}",
                    "or pass them with each command:",
                    f'  skopeo list-tags --tls-verify=false --creds "{user}:$({read_password})" '
                    f"docker://{address}/alpine",
                    "",
                    "Push an image (plain HTTP on loopback):",
                    f"  skopeo copy --dest-tls-verify=false docker://docker.io/library/alpine:latest "
                    f"docker://{address}/alpine:latest",
                    f"  podman push --tls-verify=false <image> {address}/<repository>:<tag>",
                    "Pull it back:",
                    f"  skopeo copy --src-tls-verify=false docker://{address}/alpine:latest oci:./alpine:latest",
                    "",
                    "Ctrl-C stops the registry and the emulators.",
                    "",
                ]
            ),
            flush=True,
        )
        # One task runner (services/tasks/runner.py) builds the default registry's runs, reaching it here.
        os.environ.setdefault("TASKS_REGISTRY_ADDRESS", address)
        os.environ.setdefault("TASKS_WORK_DIR", str(state_dir / "tasks"))
        import subprocess

        runner = subprocess.Popen([sys.executable, "-m", "services.tasks", "runner"], cwd=ROOT)
        try:
            serve(host, port)
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            runner.terminate()
            try:
                runner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait()
    print("stopped: registry and emulators.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.devhost")
    parser.add_argument("command", choices=["run", "serve"])
    parser.add_argument("--host", default=os.environ.get("API_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=_env_int("API_PORT", 5000))
    args = parser.parse_args(argv)
    # A local host: webhooks to loopback and private addresses are allowed (refused by default in Azure).
    os.environ.setdefault("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDKs log every request at INFO
    if args.command == "run":
        run(args.host, args.port)
    else:
        serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
