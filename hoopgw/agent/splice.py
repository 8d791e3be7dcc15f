"""Hand a protocol a real socket whose other end is an agent's stream.

The gateway's protocols expect a Twisted transport that behaves like a TCP connection to the
target: it pauses and resumes, it can start TLS towards the target (PostgreSQL's and MySQL's
``sslmode``, so TLS runs end to end through the agent), and ``send_now`` may write to its
socket. Rather than imitate all of that, :func:`splice` makes a UNIX socket pair: the
protocol gets one end as its transport, and a :class:`~hoopgw.agent.mux.Pipe` on the other end
joins the stream.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import unix
from twisted.internet.protocol import Protocol

from hoopgw.agent.mux import Pipe, Stream
from hoopgw.transport import QuietFactory

__all__ = ["splice"]


class _UpstreamEnd(unix.Server):
    """The protocol's end of the pair: TLS started on it acts as the client (as on a TCP
    connection the gateway made), not as the server an adopted socket defaults to."""

    _tlsClientDefault = True


def splice(reactor: Any, stream: Stream, proto: Protocol) -> Protocol:
    """Connect ``proto`` to ``stream`` through a socket pair; return ``proto`` (connected).

    :param reactor: a reactor that can adopt sockets (``IReactorSocket``).
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for end in (ours, theirs):
            end.setblocking(False)
        pipe = Pipe()
        reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, QuietFactory(pipe))
        stream.attach(pipe)
        _UpstreamEnd._fromConnectedSocket(theirs.fileno(), QuietFactory(proto), reactor)
    finally:
        # Adopting duplicates the descriptors; these originals are not needed any more.
        ours.close()
        theirs.close()
    return proto
