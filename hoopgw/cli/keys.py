"""``hoopgw keys create|list|revoke``: API keys, stored hashed, shown once."""

from __future__ import annotations

import argparse
import time
from typing import Any

from hoopgw.cli import ssh_keys
from hoopgw.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    add_identity_options,
    error,
    iso_time,
    opened_store,
    out,
    out_listing,
    out_revoked,
    parse_duration,
)


def register(
    commands: Any, with_config: argparse.ArgumentParser, with_json: argparse.ArgumentParser
) -> None:
    """Add ``keys`` (API keys, and SSH keys from :mod:`hoopgw.cli.ssh_keys`)."""
    keys = commands.add_parser("keys", help="manage API keys")
    keys_commands = keys.add_subparsers(metavar="COMMAND", required=True)
    create = keys_commands.add_parser(
        "create", parents=[with_config], help="create an API key and print it (shown once)"
    )
    add_identity_options(create, identity_help="identity the key authenticates as")
    create.add_argument(
        "--expires",
        type=parse_duration,
        metavar="DURATION",
        help="lifetime such as 90s, 30m, 12h, 30d (default: never expires)",
    )
    create.set_defaults(handler=_keys_create)
    listing = keys_commands.add_parser(
        "list", parents=[with_config, with_json], help="list API keys (never their secrets)"
    )
    listing.set_defaults(handler=_keys_list)
    revoke = keys_commands.add_parser("revoke", parents=[with_config], help="revoke an API key")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(handler=_keys_revoke)
    ssh_keys.register(keys_commands, with_config, with_json)


def _keys_create(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config
    from hoopgw.identity.keys import KeyService
    from hoopgw.identity.oidc import token_prefix_of

    config = load_config(args.config)
    prefix = token_prefix_of(args.identity, config.identity.oidc)
    if prefix is not None:
        error(f"identity {args.identity!r} starts with {prefix!r}, reserved for an issuer's tokens")
        return EXIT_USAGE
    with opened_store(config) as store:
        try:
            secret, record = KeyService(store).create(
                args.identity, tuple(args.groups), expires_in=args.expires, now=time.time()
            )
        except ValueError as exc:  # an identity or group name the key service refuses
            error(str(exc))
            return EXIT_USAGE
    out(secret)
    error(
        f"created key {record.key_id} for identity {record.identity!r}"
        f" (groups: {', '.join(record.groups)}; expires: {iso_time(record.expires_at) or 'never'})."
        " The key is shown only this once."
    )
    return EXIT_OK


def _keys_list(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config
    from hoopgw.identity.keys import KeyService

    with opened_store(load_config(args.config)) as store:
        records = KeyService(store).list()
    # Named fields only: a record may also carry the key's hash, which is never shown.
    out_listing(
        records,
        [
            ("KEY ID", "key_id"),
            ("IDENTITY", "identity"),
            ("GROUPS", "groups"),
            ("CREATED", "created_at"),
            ("EXPIRES", "expires_at"),
            ("REVOKED", "revoked_at"),
            ("LAST USED", "last_used_at"),
        ],
        as_json=args.json,
    )
    return EXIT_OK


def _keys_revoke(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config
    from hoopgw.identity.keys import KeyService

    with opened_store(load_config(args.config)) as store:
        revoked = KeyService(store).revoke(args.key_id)
    return out_revoked(
        revoked, missing=f"no active key with id {args.key_id!r}", done=f"revoked key {args.key_id}"
    )
