"""TLS for the gateway's own listeners (connections, the admin API, the agents' listener)."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from twisted.internet import ssl

__all__ = ["server_tls_options"]


def server_tls_options(
    cert_file: str, key_file: str, *, alpn: tuple[bytes, ...] = (b"postgresql",)
) -> ssl.CertificateOptions:
    """TLS options for the client side from PEM files (TLS 1.2 or newer).

    :param alpn: protocols offered by ALPN; ``()`` for none (the admin API's HTTP/1.1).
    """
    # cryptography objects, which pyOpenSSL now prefers (Twisted's hints still name its own).
    certificate: Any
    private_key: Any
    with open(cert_file, "rb") as f:
        certificate = x509.load_pem_x509_certificate(f.read())
    with open(key_file, "rb") as f:
        private_key = load_pem_private_key(f.read(), password=None)
    return ssl.CertificateOptions(
        privateKey=private_key,
        certificate=certificate,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        # libpq 17+ offers ALPN "postgresql" and gives up if the server picks nothing.
        acceptableProtocols=list(alpn) or None,
    )
