"""The target's side: TLS options, and a response read as events (no real I/O)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hoopgw_http.settings import HttpOptions, HttpSettings
from hoopgw_http.upstream import UpstreamRequest, client_tls_options, upstream_tls_options
from twisted.internet.testing import StringTransport

from hoopgw.connection import ConnectionConfig, CredentialConfig, UpstreamTlsConfig
from hoopgw.errors import ConfigError
from hoopgw.http1 import Data, End, Event, Head


def _certs() -> Any:
    name = "hoopgw_tests_certs"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "integration" / "certs.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def connection(ca_file: str, options: HttpOptions) -> ConnectionConfig:
    return ConnectionConfig(
        name="api",
        protocol="http",
        listen="tcp:18080:interface=127.0.0.1",
        target="localhost:8443",
        credential=CredentialConfig(user="svc"),
        allow_groups=("agents",),
        upstream_tls=UpstreamTlsConfig(
            sslmode="verify-full", ca_file=ca_file, server_name="localhost"
        ),
        protocol_options=options,
    )


def test_tls_options_trust_every_ca_of_a_bundle_and_present_the_client_certificate(
    tmp_path: Path,
) -> None:
    certs = _certs()
    first = certs.write_tls_files(tmp_path)
    (tmp_path / "second").mkdir()
    second = certs.write_tls_files(tmp_path / "second")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(first.ca_cert.read_bytes() + second.ca_cert.read_bytes())
    client = certs.write_client_tls_files(tmp_path)
    options = HttpOptions(client_cert=str(client.client_cert), client_key=str(client.client_key))
    config = connection(str(bundle), options)
    settings = HttpSettings.of(config)
    assert settings.tls and settings.host_header == "localhost:8443"
    assert upstream_tls_options(config, settings) is not None
    assert client_tls_options(str(first.server_cert), str(first.server_key)) is not None


def test_a_client_certificate_needs_a_verified_target() -> None:
    options = HttpOptions(client_cert="/c.pem", client_key="/k.pem")
    plain = attrs.evolve(
        connection("/ca.pem", options), upstream_tls=UpstreamTlsConfig(sslmode="disable")
    )
    with pytest.raises(ConfigError, match="verify-full") as exc:
        HttpSettings.of(plain)
    assert exc.value.key == "http.client_cert"


def test_a_response_arrives_as_events_and_interim_answers_are_passed_on() -> None:
    events: list[Event] = []
    lost: list[str | None] = []
    upstream = UpstreamRequest("GET", events.append, lost.append)
    upstream.makeConnection(StringTransport())
    upstream.dataReceived(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert [type(e) for e in events] == [Head, End, Head, Data, End]
    upstream.connectionLost()
    assert lost == [None]


def test_a_malformed_response_is_reported_and_the_connection_dropped() -> None:
    lost: list[str | None] = []
    upstream = UpstreamRequest("GET", lambda event: None, lost.append)
    transport = StringTransport()
    upstream.makeConnection(transport)
    upstream.dataReceived(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert lost and "malformed" in (lost[0] or "")


def test_a_switched_connection_passes_bytes_undecoded() -> None:
    events: list[Event] = []
    upstream = UpstreamRequest("GET", events.append, lambda reason: None)
    upstream.allow_switch = True
    upstream.makeConnection(StringTransport())
    upstream.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x01a")
    upstream.dataReceived(b"GET / HTTP/1.1\r\n")  # not HTTP any more: passed as it is
    assert events[1:] == [Data(data=b"\x81\x01a"), Data(data=b"GET / HTTP/1.1\r\n")]
