"""``hoopgw keys add-ssh``, ``keys list-ssh`` and ``keys revoke-ssh``: SSH public keys that
identities log in to SSH connections with (``docs/protocols/ssh.md``).

Only the public key is stored, found by its ``SHA256:...`` fingerprint; the private key never
leaves its owner.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import time
from pathlib import Path

from hoopgw.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    add_identity_options,
    error,
    opened_store,
    out,
    out_listing,
    out_revoked,
)

__all__ = ["parse_public_key", "register"]


def register(
    keys_commands: argparse._SubParsersAction,
    with_config: argparse.ArgumentParser,
    with_json: argparse.ArgumentParser,
) -> None:
    """Add the SSH key commands to ``hoopgw keys``."""
    add = keys_commands.add_parser(
        "add-ssh", parents=[with_config], help="register an SSH public key for an identity"
    )
    add_identity_options(add, identity_help="identity the key logs in as")
    add.add_argument(
        "--public-key",
        required=True,
        metavar="FILE",
        help="the public key file (one OpenSSH line, such as id_ed25519.pub)",
    )
    add.set_defaults(handler=_add)
    listing = keys_commands.add_parser(
        "list-ssh", parents=[with_config, with_json], help="list registered SSH keys"
    )
    listing.set_defaults(handler=_list)
    revoke = keys_commands.add_parser(
        "revoke-ssh", parents=[with_config], help="revoke an SSH key by its fingerprint"
    )
    revoke.add_argument("fingerprint", metavar="SHA256:...")
    revoke.set_defaults(handler=_revoke)


def parse_public_key(line: str) -> tuple[str, str, str]:
    """Check one OpenSSH public key line.

    :return: its fingerprint (``SHA256:...``), the key without comment, and the comment.
    :raises ValueError: saying what is wrong with it, a DSA key or an RSA key below
        :data:`hoopgw.records.MIN_RSA_BITS` included.
    """
    # Imported here: cryptography takes long to load and only this command needs it.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    from hoopgw.records import weak_key_reason

    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise ValueError("expected one line: KEY-TYPE BASE64 [COMMENT]")
    kind, encoded = parts[0], parts[1]
    if kind == "ssh-dss":
        raise ValueError(weak_key_reason("DSA", 0))
    try:
        blob = base64.b64decode(encoded, validate=True)
        key = load_ssh_public_key(f"{kind} {encoded}".encode("ascii"))
    except (binascii.Error, ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        raise ValueError(f"not a usable {kind} public key ({exc})") from None
    weak = weak_key_reason("RSA", key.key_size) if isinstance(key, rsa.RSAPublicKey) else None
    if weak is not None:
        raise ValueError(weak)
    digest = hashlib.sha256(blob).digest()
    fingerprint = "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
    return fingerprint, f"{kind} {encoded}", parts[2] if len(parts) > 2 else ""


def _add(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config
    from hoopgw.identity.keys import _check_name as check_name
    from hoopgw.identity.oidc import token_prefix_of
    from hoopgw.records import SshKeyRecord

    try:
        text = Path(args.public_key).read_text(encoding="utf-8")
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) != 1:
            raise ValueError("expected exactly one key line")
        fingerprint, public_key, comment = parse_public_key(lines[0])
        check_name("identity", args.identity)
        for group in args.groups:
            check_name("group", group)
    except OSError as exc:
        error(f"cannot read {args.public_key}: {exc.strerror}")
        return EXIT_USAGE
    except (ValueError, UnicodeDecodeError) as exc:
        error(f"{args.public_key}: {exc}")
        return EXIT_USAGE
    record = SshKeyRecord(
        fingerprint=fingerprint,
        identity=args.identity,
        groups=tuple(sorted(set(args.groups))),
        public_key=public_key,
        comment=comment,
        created_at=time.time(),
    )
    config = load_config(args.config)
    prefix = token_prefix_of(args.identity, config.identity.oidc)
    if prefix is not None:
        error(f"identity {args.identity!r} starts with {prefix!r}, reserved for an issuer's tokens")
        return EXIT_USAGE
    with opened_store(config) as store:
        store.add_ssh_key(record)
    out(fingerprint)
    error(
        f"registered SSH key {fingerprint} for identity {record.identity!r}"
        f" (groups: {', '.join(record.groups)})"
    )
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config

    with opened_store(load_config(args.config)) as store:
        records = store.list_ssh_keys()
    out_listing(
        records,
        [
            ("FINGERPRINT", "fingerprint"),
            ("IDENTITY", "identity"),
            ("GROUPS", "groups"),
            ("COMMENT", "comment"),
            ("CREATED", "created_at"),
            ("REVOKED", "revoked_at"),
            ("LAST USED", "last_used_at"),
        ],
        as_json=args.json,
    )
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config

    with opened_store(load_config(args.config)) as store:
        revoked = store.revoke_ssh_key(args.fingerprint, when=time.time())
    return out_revoked(
        revoked,
        missing=f"no active SSH key {args.fingerprint!r}",
        done=f"revoked SSH key {args.fingerprint}",
    )
