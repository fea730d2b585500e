"""The local host: `python -m services.devhost run|serve`.

    run    start Azurite and the Cosmos DB emulator (state under .local/, kept across restarts), create the
           default registry, and serve the API on 127.0.0.1:5000. Ctrl-C stops everything.
    serve  serve the API only, against the emulators named by the environment (used by the tests).

Ports and paths come from options or the environment: API_PORT (5000), AZURITE_BLOB_PORT (10000),
AZURITE_QUEUE_PORT (10001), AZURITE_TABLE_PORT (10002), COSMOS_PORT (8081), STATE_DIR (.local).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parents[2]


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


async def _prepare_default_registry() -> str:
    from services.management.registries import create_registry
    from services.platform.blobs import BlobStore
    from services.platform.metadata import MetadataStore
    from services.platform.settings import get_settings

    settings = get_settings()
    metadata, blobs = MetadataStore(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    try:
        doc, _ = await create_registry(metadata, blobs, settings, settings.default_registry, "Premium")
    finally:
        await metadata.close()
        await blobs.close()
    return doc.loginServer


def serve(host: str, port: int) -> None:
    import function_app
    from services.devhost.server import build_app
    from services.registry.app import registry_api

    asyncio.run(_prepare_default_registry())
    app = build_app(function_app.app, on_shutdown=registry_api().close)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level=os.environ.get("LOG_LEVEL", "warning").lower(),
        access_log=bool(os.environ.get("ACCESS_LOG")),
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run()


def _exit_on_sigterm() -> None:
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default SIGTERM
    # action the process would die on the spot and orphan the emulators. SystemExit unwinds instead.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def run(host: str, port: int) -> None:
    from services.devhost.stack import LocalStack

    _exit_on_sigterm()

    state_dir = Path(os.environ.get("STATE_DIR", ROOT / ".local")).resolve()
    stack = LocalStack(
        state_dir,
        azurite_blob_port=_env_int("AZURITE_BLOB_PORT", 10000),
        azurite_queue_port=_env_int("AZURITE_QUEUE_PORT", 10001),
        azurite_table_port=_env_int("AZURITE_TABLE_PORT", 10002),
        cosmos_port=_env_int("COSMOS_PORT", 8081),
        node_modules=ROOT / "node_modules",
    )
    print(f"starting Azurite and the Cosmos DB emulator (state in {state_dir}) ...", flush=True)
    with stack:
        env = stack.env()
        os.environ.update(env)
        (state_dir / "env").write_text("".join(f"export {k}='{v}'\n" for k, v in sorted(env.items())))
        address = f"{host}:{port}"
        print(
            "\n".join(
                [
                    "",
                    f"Registry API       http://{address}  (default registry "
                    f"{os.environ.get('DEFAULT_REGISTRY', 'local')!r})",
                    f"Login server       {address}",
                    f"Settings           source {state_dir / 'env'}  (for python -m services.management)",
                    "",
                    "Push an image (plain HTTP on loopback):",
                    f"  skopeo copy --dest-tls-verify=false docker://docker.io/library/alpine:latest "
                    f"docker://{address}/alpine:latest",
                    f"  podman push --tls-verify=false <image> {address}/<repository>:<tag>",
                    "Pull it back:",
                    f"  skopeo copy --src-tls-verify=false docker://{address}/alpine:latest "
                    "oci:./alpine:latest",
                    "",
                    "Ctrl-C stops the registry and the emulators.",
                    "",
                ]
            ),
            flush=True,
        )
        try:
            serve(host, port)
        except (KeyboardInterrupt, SystemExit):
            pass
    print("stopped: registry and emulators.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.devhost")
    parser.add_argument("command", choices=["run", "serve"])
    parser.add_argument("--host", default=os.environ.get("API_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=_env_int("API_PORT", 5000))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDKs log every request at INFO
    if args.command == "run":
        run(args.host, args.port)
    else:
        serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
