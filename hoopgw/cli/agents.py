"""``hoopgw agents create|list|revoke`` (the gateway's register of network agents) and
``hoopgw agent`` (run one). See docs/network-agent.md."""

from __future__ import annotations

import argparse
import time

from hoopgw.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    error,
    opened_store,
    out,
    out_listing,
    out_revoked,
)

__all__ = ["ONLINE_WITHIN", "agent_status", "register"]

ONLINE_WITHIN = 35.0
"""Seconds after a gateway last recorded an agent online during which it counts as online (a
gateway records its agents every 10 s; a gateway that stopped cannot say they went away)."""


def register(
    commands: argparse._SubParsersAction,
    with_config: argparse.ArgumentParser,
    with_json: argparse.ArgumentParser,
) -> None:
    """Add ``hoopgw agents`` and ``hoopgw agent``."""
    agents = commands.add_parser("agents", help="register and list network agents")
    agents_commands = agents.add_subparsers(metavar="COMMAND", required=True)
    create = agents_commands.add_parser(
        "create", parents=[with_config], help="register an agent and print its token (once)"
    )
    create.add_argument("name", help="the agent's name, which connections name in via")
    create.set_defaults(handler=_create)
    listing = agents_commands.add_parser(
        "list", parents=[with_config, with_json], help="list agents, online or not"
    )
    listing.set_defaults(handler=_list)
    revoke = agents_commands.add_parser(
        "revoke", parents=[with_config], help="revoke an agent's token (its connection drops)"
    )
    revoke.add_argument("name")
    revoke.set_defaults(handler=_revoke)
    agent = commands.add_parser(
        "agent", help="run a network agent in the foreground (dials out to the gateway)"
    )
    agent.add_argument(
        "-c", "--config", required=True, metavar="FILE", help="the agent's TOML config file"
    )
    agent.add_argument(
        "--check", action="store_true", help="only validate the config and print the allow-list"
    )
    agent.set_defaults(handler=_agent)


def agent_status(online: bool, last_seen_at: float | None, *, now: float) -> str:
    """``online`` or ``offline``, as a listing shows an agent's stored state at ``now``."""
    if online and last_seen_at is not None and now - last_seen_at <= ONLINE_WITHIN:
        return "online"
    return "offline"


def _create(args: argparse.Namespace) -> int:
    from hoopgw.agent.tokens import AgentTokens
    from hoopgw.config.load import load_config

    config = load_config(args.config)
    with opened_store(config) as store:
        try:
            token, record = AgentTokens(store).create(args.name, now=time.time())
        except ValueError as exc:
            error(str(exc))
            return EXIT_USAGE
    out(token)
    error(
        f"registered agent {record.name!r} (token id {record.token_id}); the token above is"
        ' shown once: put it in the agent\'s config (token = "file:..." or "env:...")'
    )
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config

    with opened_store(load_config(args.config)) as store:
        records = store.list_agents()
    now = time.time()
    out_listing(
        [
            {
                "name": r.name,
                "token_id": r.token_id,
                "status": "revoked"
                if r.revoked_at is not None
                else agent_status(r.online, r.last_seen_at, now=now),
                "last_seen_at": r.last_seen_at,
                "address": r.address,
                "created_at": r.created_at,
                "revoked_at": r.revoked_at,
            }
            for r in records
        ],
        [
            ("NAME", "name"),
            ("TOKEN ID", "token_id"),
            ("STATUS", "status"),
            ("LAST SEEN", "last_seen_at"),
            ("FROM", "address"),
            ("CREATED", "created_at"),
        ],
        as_json=args.json,
        also=("revoked_at",),
    )
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config

    with opened_store(load_config(args.config)) as store:
        revoked = store.revoke_agent(args.name, when=time.time())
    return out_revoked(
        revoked,
        missing=f"no active agent {args.name!r}",
        done=f"revoked the token of agent {args.name!r}; gateways drop its connection within 10 s",
    )


def _agent(args: argparse.Namespace) -> int:
    from hoopgw.agent.config import load_agent_config
    from hoopgw.runtime.logs import register_secret, start_logging

    config = load_agent_config(args.config)
    if args.check:
        out(f"gateway {config.gateway_host}:{config.gateway_port}")
        for rule in config.allow.rules:
            out(f"allow {rule.text}")
        return EXIT_OK
    register_secret(config.token.reveal())
    start_logging(config.log_format, config.log_level)
    from hoopgw.agent.run import run_agent

    return run_agent(config)
