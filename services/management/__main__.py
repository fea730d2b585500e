"""Command line for the control plane, until the management API exists.

    python -m services.management registry create myregistry --sku Premium
    python -m services.management registry list
    python -m services.management registry delete myregistry
    python -m services.management dev-token     # a management token of the local developer (make run)

Identity and access (groups access, admin, scope-map, token, role): see access_commands.py.
Webhooks (group webhook: create, update, list, show, delete, ping, events, config, redeliver): see
webhooks_cli.py.

It reads the same settings as the app (environment variables; `make run` prints them in
`.local/env` for the local stack).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from services.management import access_commands, dev_issuer, webhooks_cli
from services.management.access import AccessError
from services.management.registries import RegistryNameInvalid, create_registry, delete_registry
from services.management.store import RegistryStore
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from services.platform.settings import get_settings
from services.webhooks.resources import RegistryNotFound, WebhookNotFound
from services.webhooks.rules import WebhookInvalid


async def _run(args: argparse.Namespace) -> int:
    settings = get_settings()
    metadata, blobs = Cosmos(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    try:
        if args.group in access_commands.GROUPS:
            return await access_commands.run(args, metadata)
        if args.group == "webhook":
            return await webhooks_cli.run(args, settings, metadata)
        if args.command == "create":
            doc, created = await create_registry(metadata, blobs, settings, args.name, args.sku)
            print(json.dumps(doc.to_item() | {"created_now": created}, indent=2))
        elif args.command == "list":
            for doc in await RegistryStore(metadata).list_registries():
                print(f"{doc.registry}\t{doc.sku}\t{doc.loginServer}\t{doc.created}")
        elif args.command == "delete":
            if not await delete_registry(metadata, blobs, args.name):
                print(f"registry {args.name!r} does not exist", file=sys.stderr)
                return 1
            print(f"deleted {args.name}")
    finally:
        await metadata.close()
        await blobs.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.management")
    groups = parser.add_subparsers(dest="group", required=True)
    registry = groups.add_parser("registry", help="create, list and delete registries")
    commands = registry.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create")
    create.add_argument("name")
    create.add_argument("--sku", choices=["Basic", "Standard", "Premium"], default="Standard")
    commands.add_parser("list")
    delete = commands.add_parser("delete")
    delete.add_argument("name")
    access_commands.add_parsers(groups)  # access, admin, scope-map, token, role
    webhooks_cli.add_commands(groups)  # webhook
    groups.add_parser("dev-token", help="print a management token of the local developer (make run)")
    args = parser.parse_args(argv)
    if args.group == "dev-token":
        path = Path(os.environ.get("STATE_DIR", ".local")) / "auth" / "dev-issuer.json"
        if not path.is_file():
            print(f"{path} does not exist: start `make run` once first", file=sys.stderr)
            return 1
        print(dev_issuer.load_or_create(path).token())
        return 0
    try:
        return asyncio.run(_run(args))
    except (RegistryNameInvalid, AccessError, WebhookInvalid) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (RegistryNotFound, WebhookNotFound) as exc:
        print(f"not found: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
