"""The config's own parser of ``listen`` strings (tcp, tcp6, unix) against Twisted's
``serverFromString``: the same endpoint or the same error for every description (issue 18: the
parser exists so that loading a config does not import Twisted's TLS stack)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import endpoints
from twisted.internet.testing import MemoryReactor

from hoopgw.config import listeners

DESCRIPTIONS = [
    # what configs say
    "tcp:5432",
    "tcp:0",
    "tcp:5432:interface=127.0.0.1",
    "tcp:5432:interface=0.0.0.0",
    "tcp:8080:interface=10.0.0.5:backlog=10",
    "tcp6:5432",
    "tcp6:5432:interface=\\:\\:1",
    "tcp6:port=5432:interface=fe80\\:\\:1",
    "unix:/run/hoopgw/pg.sock",
    "unix:/run/hoopgw/pg.sock:mode=600:lockfile=0",
    "unix:relative.sock:backlog=5",
    # parameters by name, odd spellings Python's int() accepts
    "tcp:port=5432",
    "tcp:interface=127.0.0.1:port=5432",
    "tcp: 5432",
    "tcp:54_32",
    "tcp:99999",
    "tcp:-1",
    "tcp:8\\0",
    "tcp:5432:interface=a=b",
    # errors
    "tcp:abc",
    "tcp:1:bogus=1",
    "tcp",
    "tcp:",
    "tcp:80:",
    "tcp:80::",
    "tcp:=80",
    "tcp:80:backlog=x",
    "tcp:80:factory=1",
    "tcp:80:port=81",
    "tcp:80:interface=::1",
    "tcp:80:81",
    "tcp:80\\",
    "tcp:80:\u00e9=1",
    "tcp6",
    "tcp6:abc",
    "tcp6:80:backlog=x",
    "tcp6:80:bogus=1",
    "tcp6:80:self=1",
    "tcp6:80:reactor=1",
    "tcp6:80:81:82:83",
    "unix",
    "unix:/tmp/a.sock:mode=9",
    "unix:/tmp/a.sock:lockfile=x",
    "unix:/tmp/a.sock:address=/tmp/b.sock",
    "unix:/tmp/a.sock:/tmp/b.sock:1:2:3:4",
    # other types: Twisted itself answers
    "15432",
    "",
    ":",
    "TCP:80",
    "TCP6:80",
    "Unix:/tmp/a.sock",
    "ssl:5432:privateKey=k.pem",
    "stdio:",
    "nonsense:1",
]


def _twisted(description: str) -> tuple[Any, ...]:
    try:
        endpoint = endpoints.serverFromString(MemoryReactor(), description)
    except Exception as exc:
        return ("error", type(exc), str(exc))
    if isinstance(endpoint, endpoints.UNIXServerEndpoint):
        return ("unix", endpoint._address, 0)
    if isinstance(endpoint, endpoints.TCP4ServerEndpoint | endpoints.TCP6ServerEndpoint):
        return ("tcp", endpoint._interface, endpoint._port)
    return ("other", "", 0)


def _ours(description: str) -> tuple[Any, ...]:
    try:
        return listeners._server_endpoint(description)
    except Exception as exc:
        return ("error", type(exc), str(exc))


@pytest.mark.parametrize("description", DESCRIPTIONS)
def test_listen_strings_parse_as_twisted_parses_them(description: str) -> None:
    assert _ours(description) == _twisted(description)
