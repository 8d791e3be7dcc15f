"""``hoopgw run`` and ``hoopgw config check``: the gateway in the foreground, and its config
checked without starting it (``--online``: with a login to each target)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from hoopgw.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, error, out
from hoopgw.errors import ConfigError

if TYPE_CHECKING:
    from hoopgw.config.load import Config


def register(
    commands: Any, with_config: argparse.ArgumentParser, with_json: argparse.ArgumentParser
) -> None:
    """Add ``run``, ``config check`` and ``reload`` to the ``hoopgw`` command line."""
    run = commands.add_parser(
        "run", parents=[with_config], help="run the gateway in the foreground"
    )
    run.set_defaults(handler=_run)

    config = commands.add_parser("config", help="work with the config file")
    config_commands = config.add_subparsers(metavar="COMMAND", required=True)
    check = config_commands.add_parser(
        "check", parents=[with_config, with_json], help="validate the config file"
    )
    check.add_argument(
        "--online",
        action="store_true",
        help="also log in to each target with its stored credential and warn about that login"
        " (a superuser behind a read-only connection)",
    )
    check.set_defaults(handler=_config_check)

    reload = commands.add_parser(
        "reload",
        parents=[with_json],
        help="make the running gateway read its config file again and apply it without"
        " dropping the sessions it still allows (admin role; audited), through the admin API"
        " (HOOPGW_URL, HOOPGW_TOKEN); an invalid config is refused with its errors",
    )
    reload.set_defaults(handler=_reload)


def _reload(args: argparse.Namespace) -> int:
    from hoopgw.cli.api import api_request
    from hoopgw.cli.common import EXIT_OK, out, out_json

    changes = api_request("POST", "/api/reload", {})
    if args.json:
        out_json(changes)
        return EXIT_OK
    changed = changes["changed"]
    for what, names in (("added", changes["added"]), ("removed", changes["removed"])):
        out(f"{what}: {', '.join(names) or 'none'}")
    out("changed: " + (", ".join(f"{n} ({', '.join(k)})" for n, k in changed.items()) or "none"))
    out(f"sessions ended: {len(changes['ended_sessions'])}")
    workers = changes.get("workers")
    if workers is not None:  # [gateway] workers: who applied it, who was restarted to
        out(f"workers applied: {', '.join(map(str, workers['applied']))}")
        for worker, why in workers["refused"].items():
            out(f"worker {worker} refused ({why}): restarted with the new config")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from hoopgw.config.gateway import resolve_store_url
    from hoopgw.config.load import load_config
    from hoopgw.runtime.logs import start_logging

    config = load_config(args.config)
    # Before anything opens it: a store others may read or change is refused, not used.
    from hoopgw.store import check_store_private

    check_store_private(resolve_store_url(config.gateway.store, base_dir=config.base_dir))
    start_logging(config.gateway.log_format, config.gateway.log_level)
    # Imported here: the gateway pulls in the reactor and protocols, which other commands
    # do not need.
    from hoopgw.runtime.worker import WorkerLink

    worker = WorkerLink.from_env()
    if worker is None and config.gateway.workers > 1:
        from hoopgw.runtime.workers import run_supervisor

        return run_supervisor(config, str(args.config))
    from hoopgw.runtime.gateway import run_gateway

    return run_gateway(config, worker)


def _config_check(args: argparse.Namespace) -> int:
    from hoopgw.config.load import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        if not args.json:
            raise
        problem = {"ok": False, "error": str(exc), "key": exc.key, "connection": exc.connection}
        out(json.dumps(problem))
        return EXIT_USAGE
    facts = {
        c.name: {**_protocol_facts(c), **({"via": f"agent {c.via}"} if c.via else {})}
        for c in config.connections
    }
    if args.online:
        return _online_check(config, facts, as_json=args.json)
    if args.json:
        summary = [
            {
                "name": c.name,
                "protocol": c.protocol,
                "listen": c.listen,
                "target": c.target,
                "plugins": list(c.plugins),
                **({"facts": facts[c.name]} if facts[c.name] else {}),
            }
            for c in config.connections
        ]
        out(json.dumps({"ok": True, "connections": summary}))
        return EXIT_OK
    names = [c.name for c in config.connections]
    noun = "connection" if len(names) == 1 else "connections"
    listed = f" ({', '.join(names)})" if names else ""
    out(f"ok: {len(names)} {noun}{listed}")
    for name, described in facts.items():
        for key, value in described.items():
            out(f"  {name}: {key}: {value}")
    return EXIT_OK


def _online_check(config: Config, facts: dict[str, dict[str, str]], *, as_json: bool) -> int:
    """``config check --online``: what each connection requires of its target, and whether its
    stored credential logs in and is fit for that (warnings are not failures; a failed login
    or a requirement the protocol cannot enforce is)."""
    from twisted.internet.task import Clock

    from hoopgw.protocol import load_protocol
    from hoopgw.runtime.connections import build_chain, login_warnings, upstream_options

    results = []
    for connection in config.connections:
        spec = load_protocol(connection.protocol)
        result: dict[str, Any] = {
            "name": connection.name,
            "checked": spec.inspect_login is not None,
            "warnings": [],
            "error": "",
        }
        try:
            chain = build_chain(connection, reactor=Clock(), approval_timeout=1.0)
            options = upstream_options(connection, chain, spec)
            result["read_only"] = options.read_only
            if connection.via is not None:
                # Only the agent reaches the target: the gateway's host cannot log in to it.
                result["checked"] = False
            else:
                result["warnings"] = login_warnings(connection, spec, options)
        except ConfigError as exc:
            result["error"] = str(exc)
        except Exception as exc:  # the login failed: the client library says why
            result["error"] = f"connection {connection.name!r}: cannot log in to the target: {exc}"
        results.append(result)
    failed = any(r["error"] for r in results)
    if as_json:
        for result in results:
            if facts[result["name"]]:
                result["facts"] = facts[result["name"]]
        out(json.dumps({"ok": not failed, "connections": results}))
        return EXIT_FAILED if failed else EXIT_OK
    for result in results:
        name = result["name"]
        for key, value in facts[name].items():
            out(f"  {name}: {key}: {value}")
        if result["error"]:
            error(result["error"])
            continue
        mode = "read-only" if result.get("read_only") else "read-write"
        login = "ok" if result["checked"] else "not checked (its protocol has no check)"
        if "via" in facts[name]:
            login = f"not checked (reached through {facts[name]['via']})"
        out(f"  {name}: upstream login {login} ({mode} sessions)")
        for warning in result["warnings"]:
            error(f"warning: {warning}")
    names = ", ".join(r["name"] for r in results)
    if failed:
        error(f"failed: {sum(1 for r in results if r['error'])} of {len(results)} connections")
        return EXIT_FAILED
    out(f"ok: {len(results)} {'connection' if len(results) == 1 else 'connections'} ({names})")
    return EXIT_OK


def _protocol_facts(connection: Any) -> dict[str, str]:
    from hoopgw.protocol import load_protocol

    describe = load_protocol(connection.protocol).describe
    return {} if describe is None else describe(connection)
