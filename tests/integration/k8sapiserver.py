"""A Kubernetes API server test double that speaks what kubectl and client libraries expect.

HTTPS (HTTP/1.1) with a bearer token, and the parts of the API the tests use, as the API
server answers them:

- discovery: ``/version``, ``/api`` and ``/apis`` (legacy ``APIVersions``/``APIGroupList``, or
  the aggregated ``APIGroupDiscoveryList`` of ``apidiscovery.k8s.io/v2`` when the ``Accept``
  header asks for it, as kubectl does), ``/api/v1`` (``APIResourceList``), ``/openapi/v2`` and
  ``/openapi/v3`` (404: an API server may serve none; kubectl then validates nothing);
- pods, secrets and namespaces: get, list (as a ``meta.k8s.io/v1`` ``Table`` when asked, with
  ``fieldSelector=metadata.name=...``), watch (``?watch=true``: chunked JSON events), create
  and delete;
- ``pods/NAME/log`` (text/plain);
- ``pods/NAME/exec`` over WebSocket with subprotocol ``v5.channel.k8s.io`` or
  ``v4.channel.k8s.io`` (``k8s.io/apimachinery/pkg/util/remotecommand``): the command runs as
  a subprocess in :attr:`ApiServer.workdir` (on a pseudo-terminal with ``tty=true``, whose
  size channel 4 sets); channel 0 stdin, 1 stdout, 2 stderr, 3 the ``Status`` with the exit
  code, 4 resize, 255 (v5) closes stdin. As the API server's
  ``wsstream`` does, an empty message on the first output channel opens the stream.

Every ``Authorization`` header it receives is kept (:attr:`ApiServer.authorizations`), so a
test can prove which tokens reached the cluster. Requests without the cluster's token get 401.
"""

from __future__ import annotations

import base64
import fcntl
import http.server
import json
import os
import pty
import socketserver
import ssl
import struct
import subprocess
import termios
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Ping
from wsproto.utilities import generate_accept_token

SUBPROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
CREATED = "2026-12-01T00:00:00Z"
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_RESOURCES = {
    "pods": ("Pod", "pod", True, ["po"]),
    "secrets": ("Secret", "secret", True, []),
    "namespaces": ("Namespace", "namespace", False, ["ns"]),
}
_SUBRESOURCES = {"pods": ["exec", "log", "attach", "portforward", "status"]}
_AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def pod(name: str, namespace: str = "default") -> dict[str, Any]:
    """A running pod with one container ``main``."""
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "creationTimestamp": CREATED,
        },
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        "status": {"phase": "Running"},
    }


def secret(name: str, data: dict[str, str], namespace: str = "default") -> dict[str, Any]:
    """A secret holding ``data`` (base64-encoded as the API does)."""
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": CREATED},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


class ApiServer:
    """The double: start it, point a gateway's connection at :attr:`target`, stop it."""

    def __init__(
        self, *, cert: Path, key: Path, token: str, workdir: Path, client_ca: Path | None = None
    ) -> None:
        """:param client_ca: also accept clients whose certificate this CA signed (the
        API server's ``--client-ca-file``); their common name is the user."""
        self.token = token
        self.workdir = workdir
        self.authorizations: list[str] = []
        """Every ``Authorization`` header received, in order."""
        self.requests: list[str] = []
        """The method and path of every request, in order."""
        self.exec_commands: list[list[str]] = []
        """Every command an exec ran."""
        self.logs: dict[str, str] = {}
        """Log text of each pod, by name."""
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            "pods": {},
            "secrets": {},
            "namespaces": {("", "default"): _namespace("default")},
        }
        self.lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        context.set_alpn_protocols(["http/1.1"])
        if client_ca is not None:
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(str(client_ca))
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.api = self
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    def add(self, resource: str, obj: dict[str, Any]) -> None:
        """Store ``obj`` as a ``resource`` object."""
        meta = obj["metadata"]
        with self.lock:
            self.objects[resource][(meta.get("namespace", ""), meta["name"])] = obj

    def start(self) -> ApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _namespace(name: str) -> dict[str, Any]:
    return {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": name, "creationTimestamp": CREATED},
        "status": {"phase": "Active"},
    }


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    api: ApiServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that goes away mid-request is not the test's failure


def _resource_list() -> dict[str, Any]:
    resources = []
    for name, (kind, singular, namespaced, short) in _RESOURCES.items():
        resources.append(
            {
                "name": name,
                "singularName": singular,
                "namespaced": namespaced,
                "kind": kind,
                "verbs": _VERBS,
                **({"shortNames": short} if short else {}),
            }
        )
        for sub in _SUBRESOURCES.get(name, []):
            resources.append(
                {
                    "name": f"{name}/{sub}",
                    "singularName": "",
                    "namespaced": namespaced,
                    "kind": "PodExecOptions" if sub == "exec" else kind,
                    "verbs": ["create", "get"],
                }
            )
    return {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}


def _aggregated() -> dict[str, Any]:
    resources = []
    for name, (kind, singular, namespaced, short) in _RESOURCES.items():
        resources.append(
            {
                "resource": name,
                "responseKind": {"group": "", "version": "v1", "kind": kind},
                "scope": "Namespaced" if namespaced else "Cluster",
                "singularResource": singular,
                "verbs": _VERBS,
                **({"shortNames": short} if short else {}),
                "subresources": [
                    {
                        "subresource": sub,
                        "responseKind": {"group": "", "version": "v1", "kind": kind},
                        "verbs": ["create", "get"],
                    }
                    for sub in _SUBRESOURCES.get(name, [])
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": [
            {
                "metadata": {"creationTimestamp": None},
                "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
            }
        ],
    }


def _table(resource: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    columns = [
        {"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}
    ]
    if resource == "pods":
        columns.append(
            {"name": "Status", "type": "string", "format": "", "description": "", "priority": 0}
        )
    rows = []
    for item in items:
        cells: list[Any] = [item["metadata"]["name"]]
        if resource == "pods":
            cells.append(item["status"]["phase"])
        rows.append(
            {
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "1"},
        "columnDefinitions": columns,
        "rows": rows,
    }


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def api(self) -> ApiServer:
        return self.server.api

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        peer = self.connection.getpeercert() if hasattr(self.connection, "getpeercert") else None
        user = dict(x[0] for x in peer["subject"]).get("commonName") if peer else None
        with self.api.lock:
            self.api.authorizations.append(header or f"client-certificate:{user}")
            self.api.requests.append(f"{self.command} {self.path}")
        if user is not None and not header:
            return True
        if header != f"Bearer {self.api.token}":
            self._json(401, _status(401, "Unauthorized", "Unauthorized"))
            return False
        return True

    def _json(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        body = self._body()
        if not self._authorized():
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [p for p in url.path.split("/") if p]
        accept = self.headers.get("Accept", "")
        if url.path == "/version":
            self._json(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0-hoopgw-double"})
        elif url.path == "/api" and "as=APIGroupDiscoveryList" in accept:
            self._json(200, _aggregated(), _AGGREGATED)
        elif url.path == "/apis" and "as=APIGroupDiscoveryList" in accept:
            self._json(
                200,
                {
                    "kind": "APIGroupDiscoveryList",
                    "apiVersion": "apidiscovery.k8s.io/v2",
                    "metadata": {},
                    "items": [],
                },
                _AGGREGATED,
            )
        elif url.path == "/api":
            self._json(
                200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            )
        elif url.path == "/apis":
            self._json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        elif url.path == "/api/v1":
            self._json(200, _resource_list())
        elif parts[:2] == ["api", "v1"]:
            self._resource(method, parts[2:], query, accept, body)
        else:
            self._json(
                404, _status(404, "NotFound", "the server could not find the requested resource")
            )

    def _resource(
        self, method: str, rest: list[str], query: dict[str, list[str]], accept: str, body: bytes
    ) -> None:
        namespace = ""
        if rest and rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        resource, name, sub = [*rest, "", "", ""][:3]
        if resource not in _RESOURCES:
            self._json(404, _status(404, "NotFound", f"no resource {resource}"))
            return
        store = self.api.objects[resource]
        key = (namespace, name)
        if sub == "exec":
            self._exec(name, query)
            return
        if sub == "log":
            text = self.api.logs.get(name, "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
            return
        if method == "POST":
            obj = json.loads(body)
            obj.setdefault("metadata", {})["namespace"] = namespace
            obj["metadata"].setdefault("creationTimestamp", CREATED)
            self.api.add(resource, obj)
            self._json(201, obj)
            return
        if name:
            with self.api.lock:
                obj = store.get(key)
                if obj is not None and method == "DELETE":
                    del store[key]
            if obj is None:
                self._json(404, _status(404, "NotFound", f'{resource} "{name}" not found'))
            else:
                self._json(200, obj)
            return
        with self.api.lock:
            items = [o for (ns, _), o in sorted(store.items()) if not namespace or ns == namespace]
        selector = query.get("fieldSelector", [""])[0]
        if selector.startswith("metadata.name="):
            wanted = selector.split("=", 1)[1]
            items = [o for o in items if o["metadata"]["name"] == wanted]
        if query.get("watch", [""])[0] in ("true", "1"):
            self._watch(items)
        elif "as=Table" in accept:
            self._json(200, _table(resource, items))
        else:
            kind = _RESOURCES[resource][0] + "List"
            self._json(
                200,
                {
                    "kind": kind,
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": "1"},
                    "items": items,
                },
            )

    def _watch(self, items: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for item in items:
            line = json.dumps({"type": "ADDED", "object": item}).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.write(b"0\r\n\r\n")

    # -- exec over WebSocket -------------------------------------------------------------------

    def _exec(self, name: str, query: dict[str, list[str]]) -> None:
        offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        chosen = next((p for p in SUBPROTOCOLS if p in offered), None)
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or chosen is None or not key:
            self._json(400, _status(400, "BadRequest", "exec needs a WebSocket upgrade"))
            return
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", generate_accept_token(key.encode()).decode())
        self.send_header("Sec-WebSocket-Protocol", chosen)
        self.end_headers()
        self.wfile.flush()
        command = query.get("command", [])
        with self.api.lock:
            self.api.exec_commands.append(command)
        flags = {k: query.get(k, [""])[0] in ("true", "1") for k in ("stdin", "tty")}
        _ExecStream(self, command, chosen, flags["stdin"], flags["tty"]).run()
        self.close_connection = True


class _ExecStream:
    def __init__(
        self, handler: _Handler, command: list[str], subprotocol: str, stdin: bool, tty: bool
    ):
        self.handler = handler
        self.command = command
        self.v5 = subprotocol.startswith("v5")
        self.stdin = stdin
        self.tty = tty
        self.master: int | None = None
        self.ws = Connection(ConnectionType.SERVER)
        self.write_lock = threading.Lock()

    def send(self, channel: int, data: bytes) -> None:
        with self.write_lock:
            self.handler.wfile.write(self.ws.send(BytesMessage(data=bytes([channel]) + data)))
            self.handler.wfile.flush()

    def _spawn(self) -> subprocess.Popen[bytes]:
        if not self.tty:
            return subprocess.Popen(
                self.command,
                cwd=self.handler.api.workdir,
                stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        # With tty=true the container runtime gives the command a terminal: stdout only.
        self.master, slave = pty.openpty()
        try:
            # util-linux setsid -c: a session of its own whose controlling terminal is the
            # pty, so the interrupt character signals the foreground process, as in a container.
            return subprocess.Popen(
                ["setsid", "-c", *self.command],
                cwd=self.handler.api.workdir,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env={"TERM": "xterm", "PATH": os.environ.get("PATH", ""), "PS1": "$ "},
            )
        finally:
            os.close(slave)

    def run(self) -> None:
        try:
            proc = self._spawn()
        except OSError as exc:
            self.send(3, json.dumps(_status(500, "InternalError", str(exc))).encode())
            self._close()
            return
        self.send(1, b"")  # wsstream opens the stream with an empty message
        if self.master is not None:
            pumps = [threading.Thread(target=self._pump_pty, daemon=True)]
        else:
            pumps = [
                threading.Thread(target=self._pump, args=(proc.stdout, 1), daemon=True),
                threading.Thread(target=self._pump, args=(proc.stderr, 2), daemon=True),
            ]
        for pump in pumps:
            pump.start()
        reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        reader.start()
        for pump in pumps:
            pump.join()
        code = proc.wait()
        if self.master is not None:
            os.close(self.master)
        if code == 0:
            status: dict[str, Any] = {"metadata": {}, "status": "Success"}
        else:
            status = {
                "metadata": {},
                "status": "Failure",
                "message": f"command terminated with non-zero exit code: exit status {code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
            }
        self.send(3, json.dumps(status).encode())
        self._close()

    def _pump(self, stream: Any, channel: int) -> None:
        while chunk := stream.read1(4096):
            self.send(channel, chunk)

    def _pump_pty(self) -> None:
        assert self.master is not None
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the terminal's last user has gone
                return
            if not chunk:
                return
            self.send(1, chunk)

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        sock = self.handler.connection
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, Ping):
                    with self.write_lock:
                        self.handler.wfile.write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    return
                elif isinstance(event, BytesMessage) and event.data:
                    channel, payload = event.data[0], bytes(event.data[1:])
                    if channel == 0 and self.master is not None:
                        os.write(self.master, payload)
                    elif channel == 0 and proc.stdin is not None:
                        proc.stdin.write(payload)
                        proc.stdin.flush()
                    elif channel == 4 and self.master is not None:
                        size = json.loads(payload)
                        fcntl.ioctl(
                            self.master,
                            termios.TIOCSWINSZ,
                            struct.pack("HHHH", size["Height"], size["Width"], 0, 0),
                        )
                    elif channel == 255 and self.v5 and payload[:1] == b"\x00" and proc.stdin:
                        proc.stdin.close()

    def _close(self) -> None:
        with self.write_lock:
            try:
                self.handler.wfile.write(self.ws.send(CloseConnection(code=1000)))
                self.handler.wfile.flush()
            except Exception:
                pass
