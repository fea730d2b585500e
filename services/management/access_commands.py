"""Command-line groups for identity and access (until the management API exists):

    python -m services.management access show|update REGISTRY [--anonymous-pull true|false] [--storage-quota BYTES]
                        [--auth-disabled true|false] [--default-action Allow|Deny] [--allow-ip CIDR ...]
    python -m services.management admin enable|disable|show REGISTRY
    python -m services.management admin regenerate REGISTRY --password password1|password2
    python -m services.management scope-map create|update REGISTRY NAME --action repositories/<repo>/<action> ...
    python -m services.management scope-map list REGISTRY | delete REGISTRY NAME
    python -m services.management token create REGISTRY NAME --scope-map MAP [--expiry-days N] [--disabled]
    python -m services.management token update REGISTRY NAME [--scope-map MAP] [--status enabled|disabled]
    python -m services.management token regenerate REGISTRY NAME --password password1|password2 [--expiry-days N]
    python -m services.management token list REGISTRY | delete REGISTRY NAME
    python -m services.management role assign REGISTRY --principal OID --role ROLE [--tenant TID]
                                              [--repositories-equal NAME ... | --repositories-prefix PREFIX ...]
    python -m services.management role list REGISTRY | delete REGISTRY ASSIGNMENT_ID
    python -m services.management signing-key rotate [--keep 2] | list

Passwords are printed once, when made; only their hashes are stored.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Literal

from services.auth.signing import parse_ring, rotate_key_file
from services.management import access
from services.management.store import RegistryStore
from services.platform.cosmos import Cosmos
from services.platform.settings import get_settings

GROUPS = ("access", "admin", "scope-map", "token", "role", "signing-key")


def _bool(text: str) -> bool:
    if text.lower() in ("true", "yes", "on", "1"):
        return True
    if text.lower() in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def add_parsers(groups: Any) -> None:
    group = groups.add_parser("access", help="a registry's access properties (anonymous pull, auth disabled)")
    commands = group.add_subparsers(dest="command", required=True)
    commands.add_parser("show").add_argument("registry")
    update = commands.add_parser("update")
    update.add_argument("registry")
    update.add_argument("--anonymous-pull", type=_bool)
    update.add_argument("--auth-disabled", type=_bool, help="dev/test registries only: no authentication")
    update.add_argument("--default-action", choices=["Allow", "Deny"], help="network rules (Premium)")
    update.add_argument("--allow-ip", action="append", metavar="CIDR", help="replaces the IP allow rules")
    update.add_argument("--clear-ip-rules", action="store_true")
    update.add_argument(
        "--storage-quota", type=int, metavar="BYTES", help="the registry's storage limit (0: the tier's own)"
    )

    group = groups.add_parser("admin", help="the registry's admin user")
    commands = group.add_subparsers(dest="command", required=True)
    for name in ("enable", "disable", "show"):
        commands.add_parser(name).add_argument("registry")
    regenerate = commands.add_parser("regenerate")
    regenerate.add_argument("registry")
    regenerate.add_argument("--password", choices=["password1", "password2"], default="password1")

    group = groups.add_parser("scope-map", help="scope maps: actions per repository pattern")
    commands = group.add_subparsers(dest="command", required=True)
    for name in ("create", "update"):
        put = commands.add_parser(name)
        put.add_argument("registry")
        put.add_argument("name")
        put.add_argument("--action", action="append", required=True, help="repositories/<repo|prefix/*|*>/<action>")
        put.add_argument("--description", default="")
    commands.add_parser("list").add_argument("registry")
    delete = commands.add_parser("delete")
    delete.add_argument("registry")
    delete.add_argument("name")

    group = groups.add_parser("token", help="repository-scoped tokens")
    commands = group.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create")
    create.add_argument("registry")
    create.add_argument("name")
    create.add_argument("--scope-map", required=True)
    create.add_argument("--expiry-days", type=int)
    create.add_argument("--disabled", action="store_true")
    update = commands.add_parser("update")
    update.add_argument("registry")
    update.add_argument("name")
    update.add_argument("--scope-map")
    update.add_argument("--status", choices=["enabled", "disabled"])
    regenerate = commands.add_parser("regenerate")
    regenerate.add_argument("registry")
    regenerate.add_argument("name")
    regenerate.add_argument("--password", choices=["password1", "password2"], default="password1")
    regenerate.add_argument("--expiry-days", type=int)
    commands.add_parser("list").add_argument("registry")
    delete = commands.add_parser("delete")
    delete.add_argument("registry")
    delete.add_argument("name")

    group = groups.add_parser("signing-key", help="the token service's signing keys (AUTH_SIGNING_KEYS_FILE)")
    commands = group.add_subparsers(dest="command", required=True)
    rotate = commands.add_parser("rotate", help="a new signing key first; older keys keep verifying")
    rotate.add_argument("--keep", type=int, default=2, help="keys kept in all, the new one included")
    commands.add_parser("list")

    group = groups.add_parser("role", help="role assignments of Entra ID principals")
    commands = group.add_subparsers(dest="command", required=True)
    assign = commands.add_parser("assign")
    assign.add_argument("registry")
    assign.add_argument("--principal", required=True, help="the principal's object id")
    assign.add_argument("--role", required=True)
    assign.add_argument("--tenant", default="")
    condition = assign.add_mutually_exclusive_group()
    condition.add_argument("--repositories-equal", nargs="+", metavar="NAME")
    condition.add_argument("--repositories-prefix", nargs="+", metavar="PREFIX")
    commands.add_parser("list").add_argument("registry")
    delete = commands.add_parser("delete")
    delete.add_argument("registry")
    delete.add_argument("assignment")


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _passwords(made: list[access.NewPassword]) -> list[dict[str, Any]]:
    return [{"name": p.name, "value": p.value, "expiry": p.expiry} for p in made]


def _signing_keys(args: argparse.Namespace) -> int:
    path = get_settings().auth_signing_keys_file
    if not path:
        raise access.AccessError("AUTH_SIGNING_KEYS_FILE is not set (in Azure, rotate the AUTH_SIGNING_KEYS setting)")
    if args.command == "rotate":
        new = rotate_key_file(Path(path), keep=args.keep)
        print(f"new signing key {new.kid}; running instances pick it up within seconds")
    for key in parse_ring(Path(path).read_text()):
        print(key.kid)
    return 0


async def run(args: argparse.Namespace, metadata: Cosmos) -> int:
    if args.group == "signing-key":
        return _signing_keys(args)
    group, command, registry = args.group, args.command, args.registry
    if group == "access":
        if command == "update":
            await access.update_registry(
                metadata,
                registry,
                anonymous_pull=args.anonymous_pull,
                auth_disabled=args.auth_disabled,
                default_action=args.default_action,
                allow_ips=[] if args.clear_ip_rules else args.allow_ip,
                storage_quota=args.storage_quota,
            )
        doc = await RegistryStore(metadata).get_registry(registry)
        if doc is None:
            raise access.AccessError(f"registry {registry!r} does not exist")
        _print(
            doc.model_dump(
                include={
                    "registry",
                    "sku",
                    "adminUserEnabled",
                    "anonymousPullEnabled",
                    "authDisabled",
                    "networkRuleSet",
                    "storageQuotaBytes",
                }
            )
        )
    elif group == "admin":
        if command == "enable":
            made = await access.enable_admin_user(metadata, registry)
            _print({"username": registry, "enabled": True, "passwords": _passwords(made)})
        elif command == "disable":
            await access.disable_admin_user(metadata, registry)
            _print({"username": registry, "enabled": False})
        elif command == "regenerate":
            _print(
                {
                    "username": registry,
                    "passwords": _passwords(
                        [await access.regenerate_admin_password(metadata, registry, args.password)]
                    ),
                }
            )
        else:
            doc = await RegistryStore(metadata).get_registry(registry)
            _print({"username": registry, "enabled": bool(doc and doc.adminUserEnabled)})
    elif group == "scope-map":
        if command in ("create", "update"):
            _print((await access.put_scope_map(metadata, registry, args.name, args.action, args.description)).to_item())
        elif command == "list":
            _print(
                [
                    {"name": m.name, "description": m.description, "actions": m.actions}
                    for m in await access.list_scope_maps(metadata, registry)
                ]
            )
        elif not await access.delete_scope_map(metadata, registry, args.name):
            raise access.AccessError(f"scope map {args.name!r} does not exist")
    elif group == "token":
        if command == "create":
            status: Literal["enabled", "disabled"] = "disabled" if args.disabled else "enabled"
            token, made = await access.create_token(
                metadata, registry, args.name, args.scope_map, status=status, expiry_days=args.expiry_days
            )
            _print(_token(token) | {"passwords": _passwords(made)})
        elif command == "update":
            _print(
                _token(
                    await access.update_token(
                        metadata, registry, args.name, status=args.status, scope_map=args.scope_map
                    )
                )
            )
        elif command == "regenerate":
            new = await access.regenerate_token_password(metadata, registry, args.name, args.password, args.expiry_days)
            _print({"username": args.name, "passwords": _passwords([new])})
        elif command == "list":
            _print([_token(t) for t in await access.list_tokens(metadata, registry)])
        elif not await access.delete_token(metadata, registry, args.name):
            raise access.AccessError(f"token {args.name!r} does not exist")
    elif group == "role":
        if command == "assign":
            condition: Any = None
            if args.repositories_equal:
                condition = ("equals", args.repositories_equal)
            elif args.repositories_prefix:
                condition = ("prefix", args.repositories_prefix)
            assignment = await access.assign_role(
                metadata, registry, args.principal, args.role, tenant=args.tenant, condition=condition
            )
            _print(assignment.to_item())
        elif command == "list":
            _print([a.to_item() for a in await access.list_role_assignments(metadata, registry)])
        elif not await access.delete_role_assignment(metadata, registry, args.assignment):
            raise access.AccessError(f"role assignment {args.assignment!r} does not exist")
    return 0


def _token(token: Any) -> dict[str, Any]:
    return {
        "name": token.name,
        "username": token.name,
        "scopeMap": token.scopeMap,
        "status": token.status,
        "passwords": [{"name": p.name, "created": p.created, "expiry": p.expiry} for p in token.passwords],
    }
