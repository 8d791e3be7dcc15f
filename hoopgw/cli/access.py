"""``hoopgw access request|list|revoke``: just-in-time access to connections with
``access = "jit"``, through the gateway's admin API (``HOOPGW_URL``, ``HOOPGW_TOKEN``).

A request becomes a review that approvers decide with ``hoopgw reviews approve|deny``; its
approval creates a grant. ``docs/approvals.md`` walks through it.
"""

from __future__ import annotations

import argparse
import urllib.parse

from hoopgw.cli.api import api_request
from hoopgw.cli.common import EXIT_OK, error, iso_time, out, out_json, parse_duration, table


def register(
    commands: argparse._SubParsersAction,
    audit_commands: argparse._SubParsersAction,
    with_config: argparse.ArgumentParser,
    with_json: argparse.ArgumentParser,
) -> None:
    """Add ``hoopgw access ...`` to ``commands``."""
    access = commands.add_parser(
        "access", help="request, list and revoke just-in-time access (HOOPGW_URL, HOOPGW_TOKEN)"
    )
    sub = access.add_subparsers(metavar="COMMAND", required=True)
    request = sub.add_parser(
        "request", parents=[with_json], help="ask for time-bound access; prints the review id"
    )
    request.add_argument("--connection", required=True, metavar="NAME", help="the connection")
    request.add_argument(
        "--duration",
        required=True,
        type=parse_duration,
        metavar="DURATION",
        help="how long, such as 30m or 2h (at most the connection's jit_max_duration)",
    )
    request.add_argument("--reason", required=True, help="why (approvers are shown it)")
    request.set_defaults(handler=_request)
    listing = sub.add_parser(
        "list",
        parents=[with_json],
        help="grants (yours, those you approve; all for auditors and admins)",
    )
    listing.add_argument("--all", action="store_true", help="also expired and revoked grants")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.set_defaults(handler=_list)
    revoke = sub.add_parser("revoke", parents=[with_json], help="end a grant and its sessions now")
    revoke.add_argument("grant_id", metavar="GRANT_ID")
    revoke.add_argument("--reason", default="", help="why, for the record")
    revoke.set_defaults(handler=_revoke)


def _request(args: argparse.Namespace) -> int:
    review = api_request(
        "POST",
        "/api/access/requests",
        {"connection": args.connection, "duration": args.duration, "reason": args.reason},
    )
    if args.json:
        out_json(review)
        return EXIT_OK
    out(review["id"])
    error(
        f"access request {review['id']} is pending; members of"
        f" {', '.join(review['approvers'])} decide it with: hoopgw reviews approve {review['id']}"
    )
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    query = {"limit": str(args.limit), **({} if args.all else {"active": "1"})}
    grants = api_request("GET", "/api/access/grants?" + urllib.parse.urlencode(query))["grants"]
    if args.json:
        out_json(grants)
        return EXIT_OK
    rows = [
        (
            g["id"],
            g["identity"],
            g["connection"],
            g["status"],
            iso_time(g["expires_at"]),
            ",".join(g["approved_by"]),
            g["reason"],
        )
        for g in grants
    ]
    out(table(("ID", "IDENTITY", "CONNECTION", "STATUS", "EXPIRES", "APPROVED BY", "REASON"), rows))
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    grant_id = urllib.parse.quote(args.grant_id, safe="")
    grant = api_request("POST", f"/api/access/grants/{grant_id}/revoke", {"reason": args.reason})
    if args.json:
        out_json(grant)
        return EXIT_OK
    error(f"grant {grant['id']} revoked; its sessions were ended")
    return EXIT_OK
