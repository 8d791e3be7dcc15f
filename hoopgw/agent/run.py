"""``hoopgw agent``: run an :class:`~hoopgw.agent.client.AgentClient` until SIGTERM."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from hoopgw.agent.client import AgentClient
from hoopgw.agent.config import AgentConfig

log = Logger(namespace="hoopgw.agent")


def run_agent(config: AgentConfig) -> int:
    """Run the agent in the foreground until SIGTERM or SIGINT; return the exit status."""
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    client = AgentClient(config, reactor)

    def start() -> None:
        log.info(
            "agent dialling the gateway at {host}:{port}",
            host=config.gateway_host,
            port=config.gateway_port,
        )
        client.start()

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", client.stop)
    reactor.run()
    return 0
