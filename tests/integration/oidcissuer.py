"""A test OIDC issuer: signing keys made in the test, tokens minted on demand, and (for
integration tests) the discovery document and JWKS served over HTTPS on loopback.

Unit tests use :class:`TestIssuer` without a server; integration tests call :meth:`serve`,
which runs Python's ``http.server`` with TLS in a thread, so the issuer stays in the test
process while the gateway under test fetches from it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "hoopgw-test"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


class SigningKey:
    """A private key with its ``kid`` and algorithm."""

    def __init__(self, kid: str, algorithm: str = "RS256") -> None:
        self.kid = kid
        self.algorithm = algorithm
        if algorithm.startswith(("RS", "PS")):
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK."""
        if self.algorithm[:2] in ("RS", "PS"):
            text = jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key())
        else:
            text = jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key())
        jwk = json.loads(text)
        jwk.update(kid=self.kid, use="sig", alg=self.algorithm)
        return jwk

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class TestIssuer:
    """An issuer with one current signing key (rotate with :meth:`rotate`)."""

    __test__ = False  # not a pytest test class

    def __init__(self, issuer: str = "https://issuer.test") -> None:
        self.issuer = issuer
        self.keys = [SigningKey("key-1")]
        self.server: ThreadingHTTPServer | None = None
        self.requests: list[str] = []

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def rotate(self, *, keep_old: bool = False) -> SigningKey:
        """Make a new signing key; the old one leaves the JWKS unless ``keep_old``."""
        key = SigningKey(f"key-{len(self.keys) + 1}")
        self.keys = [*self.keys, key] if keep_old else [key]
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.keys]}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks",
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims for a service account, with ``overrides`` applied (None removes)."""
        now = int(overrides.pop("now", time.time()))
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "svc-reporting",
            "azp": "reporting-client",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "groups": ["agents"],
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self, *, key: SigningKey | None = None, headers: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        """A token signed with ``key`` (the current key by default)."""
        key = key or self.current
        return jwt.encode(
            self.claims(**claims),
            key.private,
            algorithm=key.algorithm,
            headers={"kid": key.kid, **(headers or {})},
        )

    def unsigned_token(self, **claims: Any) -> str:
        """``alg: none``, no signature."""
        header = {"alg": "none", "typ": "JWT", "kid": self.current.kid}
        return f"{b64json(header)}.{b64json(self.claims(**claims))}."

    def hs256_with_public_key(self, **claims: Any) -> str:
        """HS256 keyed with the issuer's public key (the classic algorithm confusion)."""
        header = {"alg": "HS256", "typ": "JWT", "kid": self.current.kid}
        signing_input = f"{b64json(header)}.{b64json(self.claims(**claims))}"
        mac = hmac.new(self.current.public_pem(), signing_input.encode(), hashlib.sha256)
        return f"{signing_input}.{b64url(mac.digest())}"

    # -- HTTPS -----------------------------------------------------------------------------

    def serve(self, cert_file: Path, key_file: Path) -> str:
        """Serve discovery and JWKS over HTTPS on a free loopback port; the issuer becomes
        ``https://localhost:PORT``. Returns it."""
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.requests.append(self.path)
                if self.path == "/.well-known/openid-configuration":
                    body = issuer.discovery()
                elif self.path == "/jwks":
                    body = issuer.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert_file), str(key_file))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.server = server
        self.issuer = f"https://localhost:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self.issuer

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
