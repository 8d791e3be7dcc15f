"""A SAML identity provider for tests: pysaml2's own IdP with a key made in the test.

:class:`TestIdp` writes its metadata (for the service provider under test), reads the service
provider's metadata, and answers an AuthnRequest with a Response whose assertion it signs (or,
for the refusal tests, leaves unsigned or answers some other request). :meth:`TestIdp.serve`
runs it over HTTP on loopback for the browser tests: the sign-in page shows a form that posts
the Response to the service provider's ACS URL.
"""

from __future__ import annotations

import base64
import datetime
import html
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAMEID_FORMAT_UNSPECIFIED, NameID
from saml2.server import Server
from saml2.sigver import get_xmlsec_binary

GROUPS_ATTRIBUTE = "groups"


def _key_and_cert(folder: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hoopgw test IdP")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = folder / "idp.key", folder / "idp.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class TestIdp:
    """An IdP whose SSO endpoint is ``base_url + /sso``."""

    __test__ = False

    def __init__(self, folder: Path, *, listen: bool = False) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.http: ThreadingHTTPServer | None = None
        base_url = "https://idp.test"
        if listen:
            self.http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
            base_url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.base_url = base_url
        self.entity_id = f"{base_url}/metadata"
        self.key_file, self.cert_file = _key_and_cert(folder)
        self.metadata_file = folder / "idp-metadata.xml"
        self.metadata_file.write_bytes(create_metadata_string(None, config=self._config([])))
        self.server: Server | None = None
        self.people: dict[str, list[str]] = {}
        self.sp_entity_id = ""
        self.acs_url = ""
        self.serving = False

    def _config(self, sp_metadata: list[str]) -> IdPConfig:
        config = IdPConfig()
        config.load(
            {
                "entityid": self.entity_id,
                "xmlsec_binary": get_xmlsec_binary(["/usr/bin", "/usr/local/bin"]),
                "key_file": str(self.key_file),
                "cert_file": str(self.cert_file),
                "metadata": {"inline": sp_metadata} if sp_metadata else {},
                "service": {
                    "idp": {
                        "endpoints": {
                            "single_sign_on_service": [
                                (f"{self.base_url}/sso", BINDING_HTTP_REDIRECT)
                            ]
                        },
                        "name_id_format": [NAMEID_FORMAT_UNSPECIFIED],
                        "policy": {"default": {"lifetime": {"minutes": 5}}},
                    }
                },
            }
        )
        return config

    def trust(self, sp_metadata: str) -> None:
        """Know the service provider (its ACS URL and entity id) from its metadata."""
        self.server = Server(config=self._config([sp_metadata]))

    def request_id(self, location: str) -> tuple[str, str]:
        """The AuthnRequest's ID and the RelayState from the redirect ``location``."""
        assert self.server is not None
        query = parse_qs(urlsplit(location).query)
        request = self.server.parse_authn_request(query["SAMLRequest"][0], BINDING_HTTP_REDIRECT)
        return request.message.id, query.get("RelayState", [""])[0]

    def response(
        self,
        *,
        in_response_to: str,
        name: str,
        groups: list[str],
        sp_entity_id: str,
        acs_url: str,
        sign_assertion: bool = True,
    ) -> str:
        """A base64 SAMLResponse as the HTTP-POST binding carries it."""
        assert self.server is not None
        response = self.server.create_authn_response(
            identity={GROUPS_ATTRIBUTE: groups},
            in_response_to=in_response_to,
            destination=acs_url,
            sp_entity_id=sp_entity_id,
            name_id=NameID(format=NAMEID_FORMAT_UNSPECIFIED, text=name),
            userid=name,
            sign_assertion=sign_assertion,
            sign_response=False,
            authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"},
        )
        return base64.b64encode(str(response).encode()).decode()

    # -- over HTTP, for the browser ------------------------------------------------------------

    def serve(self, *, sp_entity_id: str, acs_url: str) -> None:
        """Serve ``/sso`` (made with ``listen=True``): the sign-in page asks for a name, and
        answers with a Response carrying the person's groups from :attr:`people`."""
        assert self.http is not None
        self.sp_entity_id, self.acs_url = sp_entity_id, acs_url
        self.serving = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                if parts.path == "/sso":
                    page = (
                        "<form method=get action=/answer>"
                        f'<input type=hidden name=location value="{html.escape(self.path)}">'
                        "<input name=login><button id=sign-in type=submit>Sign in</button></form>"
                    )
                elif parts.path == "/answer":
                    request_id, relay_state = idp.request_id(query["location"][0])
                    login = query["login"][0]
                    saml = idp.response(
                        in_response_to=request_id,
                        name=login,
                        groups=idp.people.get(login, []),
                        sp_entity_id=idp.sp_entity_id,
                        acs_url=idp.acs_url,
                    )
                    page = (
                        f'<form method=post action="{html.escape(idp.acs_url)}">'
                        f'<input type=hidden name=SAMLResponse value="{saml}">'
                        f'<input type=hidden name=RelayState value="{html.escape(relay_state)}">'
                        "<button id=continue type=submit>Continue</button></form>"
                    )
                else:
                    self.send_error(404)
                    return
                body = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def stop(self) -> None:
        if self.http is not None:
            if self.serving:  # shutdown() waits for serve_forever to notice
                self.http.shutdown()
            self.http.server_close()
