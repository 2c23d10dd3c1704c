"""``price-platform keys create|revoke|list``: API keys of the prediction API."""

from __future__ import annotations

import argparse

from price_platform.settings import get_settings
from serving.app import platform_dsn
from serving.auth import ROLES, create_key, list_keys, revoke_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--role", choices=ROLES, default="predict")
    create.add_argument("--description", default="")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    actions.add_parser("list", help="list keys (ids, roles, dates; never the keys)")


def run(args: argparse.Namespace) -> int:
    dsn = platform_dsn(get_settings())
    if args.action == "create":
        key_id, key = create_key(dsn, args.role, args.description)
        print(f"key id: {key_id}\nrole:   {args.role}\nkey:    {key}\n(store it now: only its hash is kept)")
        return 0
    if args.action == "revoke":
        if revoke_key(dsn, args.key_id):
            print(f"revoked {args.key_id}")
            return 0
        print(f"no active key with id {args.key_id!r}")
        return 1
    for row in list_keys(dsn):
        state = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "active"
        print(f"{row['key_id']}  {row['role']:<8} {state:<24} {row['created_at']:%Y-%m-%d %H:%M}  {row['description']}")
    return 0
