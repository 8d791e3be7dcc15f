"""What the protocol needs of one connection at run time: the cluster credential and the TLS
of both sides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from twisted.internet import ssl

from hoopgw.errors import ConfigError
from hoopgw.secrets import Secret
from hoopgw_kubernetes.options import kubernetes_options
from hoopgw_kubernetes.upstream import client_tls

if TYPE_CHECKING:
    from hoopgw.connection import ConnectionConfig

__all__ = ["KubernetesSettings"]


@attrs.frozen(kw_only=True)
class KubernetesSettings:
    """Everything the protocol needs of one connection, loaded once at start."""

    bearer: str | None
    """The cluster's bearer token (never shown to a caller), or None."""
    tls: Any
    """Client TLS options towards the API server."""
    record_body_limit: int
    """See the ``record_body_limit`` option."""
    judge_shell_lines: bool = False
    """See the ``judge_shell_lines`` option."""

    @classmethod
    def load(cls, config: ConnectionConfig) -> KubernetesSettings:
        """Read the connection's settings and credential.

        :raises ConfigError: when the upstream TLS is not verified (the cluster credential is
            only ever sent to an API server the cluster's CA vouches for), or for an unusable
            client certificate and key.
        """
        if config.upstream_tls.sslmode != "verify-full":
            raise ConfigError(
                "must be verify-full with the cluster's CA in ca_file: the cluster credential"
                " is only ever sent to a verified API server",
                key="upstream_tls.sslmode",
                connection=config.name,
            )
        options = kubernetes_options(config.protocol_options)
        certificate = None
        if options.client_certificate is not None and options.client_key is not None:
            certificate = _client_certificate(
                config, options.client_certificate, options.client_key
            )
        password = config.credential.password
        return cls(
            bearer=password.reveal() if password is not None else None,
            tls=client_tls(config, certificate),
            record_body_limit=options.record_body_limit,
            judge_shell_lines=options.judge_shell_lines,
        )

    @staticmethod
    def server_tls(cert_file: str, key_file: str) -> Any:
        """TLS towards kubectl with the gateway's certificate; HTTP/1.1 is the only protocol
        offered by ALPN (kubectl would otherwise speak HTTP/2)."""
        with open(cert_file, "rb") as f:
            certificate: Any = x509.load_pem_x509_certificate(f.read())
        with open(key_file, "rb") as f:
            private_key: Any = load_pem_private_key(f.read(), password=None)
        return ssl.CertificateOptions(
            privateKey=private_key,
            certificate=certificate,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            acceptableProtocols=[b"http/1.1"],
        )


def _client_certificate(config: ConnectionConfig, path: str, key: Secret) -> Any:
    try:
        with open(path, "rb") as f:
            pem = f.read()
        return ssl.PrivateCertificate.loadPEM(pem.decode("ascii") + "\n" + key.reveal())
    except Exception as exc:  # OpenSSL and file errors alike
        raise ConfigError(
            f"cannot load the client certificate and key: {exc}",
            key="kubernetes.client_certificate",
            connection=config.name,
        ) from None
