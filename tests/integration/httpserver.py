"""A real HTTP API for the ``http`` protocol's integration tests: Twisted Web in a process of
its own, on a free loopback port, over TLS when asked (with client certificates required when
given a CA for them).

Tests start it with :func:`start`, which runs
``python httpserver.py --log FILE [--tls CERT KEY] [--client-ca CA]``; it prints its port on the
first line of standard output once it listens. Every request it receives is
appended to ``--log`` as one JSON line (method, path, headers, body size), so a test can tell
what reached it, and what did not.

Routes:

- ``GET /echo...``: the request as JSON (method, path, query, headers, body);
- ``GET /people``: JSON with personal data for masking (e-mail address, card number);
- ``GET /text``: the same as ``text/plain``;
- ``GET /big?size=N``: N bytes of ``application/octet-stream``, streamed chunked;
- ``POST /upload``: the size of the body received, as JSON;
- ``GET /ws``: a WebSocket (Twisted's own) that answers each text message ``echo: <message>``
  and a message ``token`` with the ``Authorization`` the handshake carried;
- anything else: the request as JSON, status 200 (``DELETE``: 204).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs

PEOPLE = {
    "people": [
        {"name": "Ada", "email": "ada.lovelace@example.com", "card": "4111 1111 1111 1111"},
        {"name": "Alan", "email": "alan.turing@example.org", "card": 4012888888881881},
    ],
    "count": 2,
}
CHUNK = 64 * 1024


@attrs.define(kw_only=True)
class HttpServer:
    """A running test API."""

    port: int
    """Its loopback port."""
    log_path: Path
    """One JSON line per request it received."""
    process: subprocess.Popen[str]
    tls: Any = None
    """The ``TlsFiles`` whose CA the gateway trusts for it, or None for plain HTTP."""

    def requests(self) -> list[dict[str, Any]]:
        """Every request it received so far, in order."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def stop(self) -> None:
        """Stop the process."""
        self.process.terminate()
        self.process.wait(10)


def start(folder: Path, *, tls: Any = None, client_ca: Path | None = None) -> HttpServer:
    """Start the test API in ``folder``: over TLS with ``tls``'s server certificate when
    given, requiring client certificates signed by ``client_ca`` when given."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "requests.jsonl"
    args = [sys.executable, __file__, "--log", str(log_path)]
    if tls is not None:
        args += ["--tls", str(tls.server_cert), str(tls.server_key)]
    if client_ca is not None:
        args += ["--client-ca", str(client_ca)]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip().isdigit():
        process.kill()
        raise RuntimeError(f"the test HTTP server did not start: {line!r}")
    return HttpServer(port=int(line), log_path=log_path, process=process, tls=tls)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--client-ca")
    args = parser.parse_args()

    from twisted.internet import reactor, ssl
    from twisted.internet.interfaces import IPullProducer
    from twisted.web import resource, server
    from twisted.web.websocket import WebSocketResource, WebSocketTransport
    from zope.interface import implementer

    log_path = Path(args.log)

    @implementer(IPullProducer)
    class Zeros:
        def __init__(self, request: Any, size: int) -> None:
            self.request = request
            self.left = size

        def resumeProducing(self) -> None:
            if self.left <= 0:
                self.request.unregisterProducer()
                self.request.finish()
                return
            piece = min(CHUNK, self.left)
            self.left -= piece
            self.request.write(b"z" * piece)

        def stopProducing(self) -> None:
            self.left = 0

    class Echo:
        def __init__(self, authorization: str) -> None:
            self.authorization = authorization
            self.transport: WebSocketTransport | None = None

        def negotiationStarted(self, transport: WebSocketTransport) -> None:
            self.transport = transport

        def negotiationFinished(self) -> None:
            pass

        def textMessageReceived(self, message: str) -> None:
            assert self.transport is not None
            answer = self.authorization if message == "token" else f"echo: {message}"
            self.transport.sendTextMessage(answer)

        def bytesMessageReceived(self, data: bytes) -> None:
            assert self.transport is not None
            self.transport.sendBytesMessage(bytes(data))

        def pongReceived(self, payload: bytes) -> None:
            pass

        def connectionLost(self, reason: Any) -> None:
            pass

    class EchoFactory:
        def buildProtocol(self, request: Any) -> Echo:
            value = request.getHeader(b"authorization") or b""
            return Echo(value.decode("latin-1"))

    websocket = WebSocketResource(EchoFactory())

    class Api(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> Any:
            body = request.content.read()
            path = request.path.decode("latin-1")
            headers = {
                k.decode("latin-1").lower(): v[0].decode("latin-1")
                for k, v in request.requestHeaders.getAllRawHeaders()
            }
            entry = {
                "method": request.method.decode(),
                "path": path,
                "uri": request.uri.decode("latin-1"),
                "headers": headers,
                "body_bytes": len(body),
            }
            with log_path.open("a") as log:
                log.write(json.dumps(entry) + "\n")
            if path == "/ws":
                return websocket.render(request)
            if path == "/people":
                request.setHeader(b"content-type", b"application/json")
                return json.dumps(PEOPLE).encode()
            if path == "/text":
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                return b"contact ada.lovelace@example.com, card 4111 1111 1111 1111\n"
            if path == "/big":
                size = int(request.args.get(b"size", [b"0"])[0])
                request.setHeader(b"content-type", b"application/octet-stream")
                request.registerProducer(Zeros(request, size), False)
                return server.NOT_DONE_YET
            if path == "/upload":
                request.setHeader(b"content-type", b"application/json")
                return json.dumps({"bytes": len(body)}).encode()
            if request.method == b"DELETE":
                request.setResponseCode(204)
                return b""
            request.setHeader(b"content-type", b"application/json")
            echoed = {**entry, "body": body.decode("utf-8", "replace")}
            return json.dumps(echoed).encode()

    site = server.Site(Api())
    site.noisy = False
    if args.tls:
        cert = ssl.PrivateCertificate.loadPEM(
            Path(args.tls[0]).read_bytes() + Path(args.tls[1]).read_bytes()
        )
        if args.client_ca:
            ca = ssl.Certificate.loadPEM(Path(args.client_ca).read_bytes())
            options = cert.options(ca)
        else:
            options = cert.options()
        port = reactor.listenSSL(0, site, options, interface="127.0.0.1")  # type: ignore[attr-defined]
    else:
        port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    print(port.getHost().port, flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
