"""Network agents: ``hoopgw agent`` runs inside a private network, dials out to the gateway
and opens the TCP streams the gateway asks for, to the targets on its own allow-list.

- :mod:`~hoopgw.agent.tokens`: agent tokens (``hoopgw agents create|list|revoke``);
- :mod:`~hoopgw.agent.wire`: the hello exchange and the stream requests (sans-io);
- :mod:`~hoopgw.agent.mux`: TCP streams carried over one HTTP/2 connection, with flow control;
- :mod:`~hoopgw.agent.hub`: the gateway's side (accepts agents, routes ``via`` connections);
- :mod:`~hoopgw.agent.client`: the agent's side (dials, reconnects, checks the allow-list);
- :mod:`~hoopgw.agent.allowlist`, :mod:`~hoopgw.agent.backoff`, :mod:`~hoopgw.agent.config`.

docs/network-agent.md describes the design and how to run it.
"""
