"""A Kubernetes connection's settings: the ``[connections.kubernetes]`` options, the cluster
credential, and the TLS of both sides."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from twisted.internet import ssl

from hoopgw.errors import ConfigError
from hoopgw.plugin import Option
from hoopgw.secrets import resolve_secret
from hoopgw_kubernetes.upstream import client_tls

if TYPE_CHECKING:
    from hoopgw.config import ConnectionConfig

__all__ = ["OPTIONS", "KubernetesSettings", "check_connection"]


def _non_negative(value: int) -> str | None:
    return None if value >= 0 else "must be 0 or more"


OPTIONS = (
    Option(
        name="record_body_limit",
        type=int,
        default=65536,
        help="bytes of each request body (in the command text) and response body (in the"
        " command_completed record) the audit store keeps, after masking; 0 keeps none",
        check=_non_negative,
    ),
    Option(
        name="judge_shell_lines",
        type=bool,
        default=False,
        help="decide each line typed into an interactive exec or attach (stdin) as a command,"
        " as SSH's judge_shell_lines does",
    ),
    Option(
        name="client_certificate",
        type=str,
        default="",
        help="PEM file of the client certificate the gateway authenticates to the cluster"
        " with (with client_key), instead of or besides credential.password (a bearer token)",
    ),
    Option(
        name="client_key",
        type=str,
        default="",
        help="secret reference (env:, file:) of client_certificate's PEM private key",
    ),
)
"""What the protocol reads from ``[connections.kubernetes]``."""


def check_connection(config: ConnectionConfig) -> None:
    """The shape a Kubernetes connection needs.

    :raises ConfigError: naming the key: the upstream TLS must be verified (``verify-full``
        with the cluster's CA) and the gateway needs a credential for the cluster.
    """
    if config.upstream_tls.sslmode != "verify-full":
        raise ConfigError(
            "must be verify-full with the cluster's CA in ca_file: the cluster credential"
            " is only ever sent to a verified API server",
            key="upstream_tls.sslmode",
            connection=config.name,
        )
    options = config.protocol_options
    if bool(options.get("client_certificate")) != bool(options.get("client_key")):
        raise ConfigError(
            "client_certificate and client_key go together",
            key="kubernetes.client_key",
            connection=config.name,
        )
    if config.credential.password is None and not options.get("client_certificate"):
        raise ConfigError(
            "the cluster credential: a bearer token (credential.password) or"
            " kubernetes.client_certificate and client_key",
            key="credential.password",
            connection=config.name,
        )


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

        :raises ConfigError: as :func:`check_connection`, or for an unreadable client
            certificate or key.
        """
        check_connection(config)
        options = config.protocol_options
        certificate = None
        if options["client_certificate"]:
            certificate = _client_certificate(config, options)
        password = config.credential.password
        return cls(
            bearer=password.reveal() if password is not None else None,
            tls=client_tls(config, certificate),
            record_body_limit=options["record_body_limit"],
            judge_shell_lines=options["judge_shell_lines"],
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


def _client_certificate(config: ConnectionConfig, options: Any) -> Any:
    key = resolve_secret(
        options["client_key"],
        key="kubernetes.client_key",
        connection=config.name,
        base_dir=Path.cwd(),
    ).reveal()
    try:
        with open(options["client_certificate"], "rb") as f:
            pem = f.read()
        return ssl.PrivateCertificate.loadPEM(pem.decode("ascii") + "\n" + key)
    except Exception as exc:  # OpenSSL and file errors alike
        raise ConfigError(
            f"cannot load the client certificate and key: {exc}",
            key="kubernetes.client_certificate",
            connection=config.name,
        ) from None
