"""`python -m services.management webhook ...`: webhooks from the command line.

    webhook create <registry> <name> --uri URI [--action push ...] [--header K=V ...] [--scope S]
                   [--disabled] [--signing-secret S] [--cloudevents]
    webhook update <registry> <name> [same options]
    webhook list|show|delete|ping|events|config <registry> [<name>]
    webhook redeliver <registry> <name> [--event ID ...]     dead-lettered deliveries (or the events named)

Custom headers are never printed in full.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Literal

from services.events.models import ALL_ACTIONS
from services.management.webhooks_api import callback_config, event_rows, webhook_resource
from services.platform.cosmos import Cosmos
from services.platform.settings import Settings
from services.webhooks import resources
from services.webhooks.delivery import WebhookDispatcher, delivery_key
from services.webhooks.store import WebhookStore


def add_commands(groups: Any) -> None:
    webhook = groups.add_parser("webhook", help="create, change, list, ping and redeliver webhooks")
    commands = webhook.add_subparsers(dest="command", required=True)
    for verb in ("create", "update"):
        command = commands.add_parser(verb)
        command.add_argument("registry")
        command.add_argument("name")
        command.add_argument("--uri", required=verb == "create", help="the service URI (http or https)")
        command.add_argument("--action", action="append", choices=ALL_ACTIONS, help="repeat for several")
        command.add_argument("--header", action="append", default=None, help="custom header K=V (repeat)")
        command.add_argument("--scope", default=None, help="repo:tag, repo:* or empty (all)")
        command.add_argument("--disabled", action="store_true", default=None)
        command.add_argument("--enabled", dest="disabled", action="store_false")
        command.add_argument("--signing-secret", default=None)
        command.add_argument("--cloudevents", action="store_true", default=None)
    for verb in ("show", "delete", "ping", "events", "config", "redeliver"):
        command = commands.add_parser(verb)
        command.add_argument("registry")
        command.add_argument("name")
        if verb == "redeliver":
            command.add_argument("--event", action="append", default=None, help="event id (repeat)")
    listing = commands.add_parser("list")
    listing.add_argument("registry")


def _changes(args: argparse.Namespace) -> resources.WebhookChanges:
    headers = None
    if args.header is not None:
        headers = dict(item.split("=", 1) for item in args.header)
    status: Literal["enabled", "disabled"] | None = None
    if args.disabled is not None:
        status = "disabled" if args.disabled else "enabled"
    return resources.WebhookChanges(
        service_uri=args.uri,
        custom_headers=headers,
        actions=args.action or (["push"] if args.command == "create" else None),
        status=status,
        scope=args.scope,
        signing_secret=args.signing_secret,
        payload_format="cloudevents" if args.cloudevents else None,
    )


async def run(args: argparse.Namespace, settings: Settings, metadata: Cosmos) -> int:
    sub, rg = "local", "local"
    registry = args.registry
    if args.command == "create":
        doc, _ = await resources.put_webhook(metadata, registry, args.name, _changes(args))
        _print(webhook_resource(doc, sub, rg))
    elif args.command == "update":
        _print(webhook_resource(await resources.update_webhook(metadata, registry, args.name, _changes(args)), sub, rg))
    elif args.command == "list":
        for doc in await resources.list_webhooks(metadata, registry):
            print(f"{doc.name}\t{doc.status}\t{','.join(doc.actions)}\t{doc.scope or '*'}\t{doc.serviceUri}")
    elif args.command == "show":
        _print(webhook_resource(await resources.get_webhook(metadata, registry, args.name), sub, rg))
    elif args.command == "config":
        _print(callback_config(await resources.get_webhook(metadata, registry, args.name)))
    elif args.command == "delete":
        if not await resources.delete_webhook(metadata, registry, args.name):
            raise resources.WebhookNotFound(args.name)
        print(f"deleted {args.name}")
    elif args.command == "events":
        await resources.get_webhook(metadata, registry, args.name)
        for delivery in await WebhookStore(metadata).list_deliveries(delivery_key(registry, args.name)):
            for row in event_rows(delivery):
                status = row["eventResponseMessage"]["statusCode"] or row["eventResponseMessage"]["reasonPhrase"]
                print(f"{row['timestamp']}\t{row['eventId']}\t#{row['attempt']}\t{status}\t{row['deliveryState']}")
    else:
        doc = await resources.get_webhook(metadata, registry, args.name)
        dispatcher = WebhookDispatcher(settings, metadata)
        try:
            if args.command == "ping":
                print(await dispatcher.ping(doc))
            else:
                done = await dispatcher.redeliver(doc, args.event)
                for delivery in done:
                    print(f"{delivery.eventId}\t{delivery.state}\t{len(delivery.attempts)} attempt(s)")
                if any(d.state != "delivered" for d in done):
                    return 1
        finally:
            await dispatcher.close()
    return 0


def _print(values: dict[str, Any]) -> None:
    print(json.dumps(values, indent=2))
