"""The ``[connections.kubernetes]`` table of a Kubernetes connection
(``docs/protocols/kubernetes.md``): the keys the protocol declares, and the
:class:`KubernetesOptions` the config loader makes of them."""

from __future__ import annotations

from typing import Any

import attrs

from hoopgw.errors import ConfigError
from hoopgw.plugin import Option
from hoopgw.protocol import ProtocolTable
from hoopgw.secrets import Secret, resolve_secret

__all__ = ["OPTIONS", "KubernetesOptions", "kubernetes_options", "read_options"]


def _non_negative(value: int) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _non_empty(value: str) -> str | None:
    return None if value else "must not be empty"


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
        default=None,
        help="PEM file of the client certificate the gateway authenticates to the cluster"
        " with (with client_key), instead of or besides credential.password (a bearer token)",
        check=_non_empty,
    ),
    Option(
        name="client_key",
        type=str,
        default=None,
        help="secret reference (env:, file:) of client_certificate's PEM private key",
        check=_non_empty,
    ),
)
"""The keys of ``[connections.kubernetes]``."""


@attrs.frozen(kw_only=True)
class KubernetesOptions:
    """The ``[connections.kubernetes]`` table of a Kubernetes connection."""

    record_body_limit: int = 65536
    """See the ``record_body_limit`` option."""
    judge_shell_lines: bool = False
    """See the ``judge_shell_lines`` option."""
    client_certificate: str | None = None
    """Absolute path of the client certificate (PEM), or None."""
    client_key: Secret | None = None
    """The client certificate's private key (PEM), or None."""


def read_options(table: ProtocolTable) -> KubernetesOptions:
    """The :class:`KubernetesOptions` of a validated ``[connections.kubernetes]`` table.

    :raises ConfigError: naming the key: a client certificate without its key (or the other
        way round), or no cluster credential at all.
    """
    values = table.values
    if (values["client_certificate"] is None) != (values["client_key"] is None):
        raise table.error("client_certificate and client_key go together", "client_key")
    if table.credential.password is None and values["client_certificate"] is None:
        raise ConfigError(
            "the cluster credential: a bearer token (credential.password) or"
            " kubernetes.client_certificate and client_key",
            key="credential.password",
            connection=table.connection,
        )
    key = None
    if values["client_key"] is not None:
        key = resolve_secret(
            values["client_key"],
            key="kubernetes.client_key",
            connection=table.connection,
            base_dir=table.base_dir,
        )
    return KubernetesOptions(
        record_body_limit=values["record_body_limit"],
        judge_shell_lines=values["judge_shell_lines"],
        client_certificate=table.readable_file("client_certificate"),
        client_key=key,
    )


def kubernetes_options(options: Any) -> KubernetesOptions:
    """A connection's :attr:`~hoopgw.connection.ConnectionConfig.protocol_options` as the
    :class:`KubernetesOptions` the loader made of them."""
    if not isinstance(options, KubernetesOptions):
        raise TypeError("not a Kubernetes connection: its protocol_options are not ours")
    return options
