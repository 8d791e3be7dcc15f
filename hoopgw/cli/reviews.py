"""``hoopgw reviews list|show|approve|deny``: decide held statements and access requests.

These commands talk to the gateway's admin API (:mod:`hoopgw.cli.api`) as the person using
them, never to the store: the gateway holds the waiting statement, so only it can let it run.
``docs/cli.md`` and ``docs/approvals.md`` describe them.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from hoopgw.cli.api import api_request
from hoopgw.cli.common import EXIT_OK, error, iso_time, out, out_json, table


def register(
    commands: argparse._SubParsersAction,
    audit_commands: argparse._SubParsersAction,
    with_config: argparse.ArgumentParser,
    with_json: argparse.ArgumentParser,
) -> None:
    """Add ``hoopgw reviews ...`` to ``commands`` (``audit_commands`` and ``with_config`` are
    unused: these commands need no config, only ``HOOPGW_URL`` and ``HOOPGW_TOKEN``)."""
    reviews = commands.add_parser(
        "reviews", help="list and decide reviews through the admin API (HOOPGW_URL, HOOPGW_TOKEN)"
    )
    sub = reviews.add_subparsers(metavar="COMMAND", required=True)
    listing = sub.add_parser("list", parents=[with_json], help="reviews you may see, newest first")
    listing.add_argument("--pending", action="store_true", help="only pending reviews")
    listing.add_argument(
        "--status",
        choices=("pending", "approved", "denied", "withdrawn", "aborted", "expired"),
        help="only reviews of this status",
    )
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.set_defaults(handler=_list)
    show = sub.add_parser("show", parents=[with_json], help="one review and its votes")
    show.add_argument("review_id", metavar="ID")
    show.set_defaults(handler=_show)
    approve = sub.add_parser("approve", parents=[with_json], help="approve a pending review")
    approve.add_argument("review_id", metavar="ID")
    approve.add_argument("--reason", default="", help="a note for the record")
    approve.set_defaults(handler=_approve)
    deny = sub.add_parser("deny", parents=[with_json], help="deny a pending review")
    deny.add_argument("review_id", metavar="ID")
    deny.add_argument("--reason", required=True, help="why (the requester is shown it)")
    deny.set_defaults(handler=_deny)


def _list(args: argparse.Namespace) -> int:
    status = "pending" if args.pending else args.status
    query = {"limit": str(args.limit), **({"status": status} if status else {})}
    reviews = api_request("GET", "/api/reviews?" + urllib.parse.urlencode(query))["reviews"]
    if args.json:
        out_json(reviews)
        return EXIT_OK
    rows = [
        (
            r["id"],
            r["kind"],
            r["status"],
            r["requester"],
            r["connection"],
            f"{r['approvals']}/{r['required']}",
            iso_time(r["created_at"]),
            _what(r),
        )
        for r in reviews
    ]
    out(table(("ID", "KIND", "STATUS", "REQUESTER", "CONNECTION", "OK", "CREATED", "WHAT"), rows))
    return EXIT_OK


def _what(review: dict[str, Any]) -> str:
    if review["kind"] == "access":
        return f"access for {int(review.get('duration') or 0)}s: {review['reason']}"
    text = " ".join(str(review.get("statement", "")).split())
    return text if len(text) <= 60 else text[:59] + "…"


def shown_parameters(values: list[str | None]) -> str:
    """Parameter values for a person: numbered, quoted, NULL for SQL NULL."""
    return ", ".join(
        f"[{n}] {'NULL' if v is None else repr(v)}" for n, v in enumerate(values, start=1)
    )


def _show(args: argparse.Namespace) -> int:
    review = api_request("GET", f"/api/reviews/{_id(args.review_id)}")
    if args.json:
        out_json(review)
        return EXIT_OK
    _print_review(review)
    return EXIT_OK


def _print_review(review: dict[str, Any]) -> None:
    lines = [
        f"review      {review['id']} ({review['kind']})",
        f"status      {review['status']}",
        f"requester   {review['requester']} ({', '.join(review['requester_groups'])})",
        f"connection  {review['connection']}",
        f"reason      {review['reason']}",
        f"approvers   {', '.join(review['approvers'])} "
        f"({review['approvals']} of {review['required']} approvals)",
        f"created     {iso_time(review['created_at'])}",
    ]
    if review["kind"] == "statement":
        lines.append(f"session     {review.get('session_id', '')} #{review.get('command_seq')}")
        lines.append(f"statement   {review.get('statement', '')}")
        if review.get("parameters"):
            lines.append(f"parameters  {shown_parameters(review['parameters'])}")
    else:
        lines.append(f"duration    {int(review.get('duration') or 0)}s")
    if review.get("decided_at") is not None:
        lines.append(
            f"decided     {iso_time(review['decided_at'])} by {review.get('decided_by') or '-'}"
            f": {review.get('decision_reason') or '-'}"
        )
    if review.get("valid_until") is not None:
        lines.append(f"re-run by   {iso_time(review['valid_until'])}")
    if review.get("grant_id"):
        lines.append(f"grant       {review['grant_id']}")
    for vote in review["votes"]:
        verb = "approved" if vote["approve"] else "denied"
        lines.append(
            f"vote        {vote['identity']} {verb} at {iso_time(vote['decided_at'])}"
            + (f": {vote['reason']}" if vote["reason"] else "")
        )
    out("\n".join(lines))


def _id(review_id: str) -> str:
    return urllib.parse.quote(review_id, safe="")


def _decide(args: argparse.Namespace, action: str) -> int:
    review = api_request(
        "POST", f"/api/reviews/{_id(args.review_id)}/{action}", {"reason": args.reason}
    )
    if args.json:
        out_json(review)
        return EXIT_OK
    if review["status"] == "pending":
        error(
            f"review {review['id']}: your approval is recorded;"
            f" {review['approvals']} of {review['required']} so far"
        )
    else:
        error(f"review {review['id']} {review['status']}")
    return EXIT_OK


def _approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


def _deny(args: argparse.Namespace) -> int:
    return _decide(args, "deny")
