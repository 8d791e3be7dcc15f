"""SAML 2.0 sign-in for the hoopgw web console (pysaml2, signatures checked by ``xmlsec1``).

Enabled by a ``[console.saml]`` table (``docs/console.md``)::

    [console.saml]
    idp_metadata = "/etc/hoopgw/idp-metadata.xml"   # the identity provider's metadata
    groups_attribute = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"

The console (the :class:`~hoopgw.signin.SignInHost`) serves:

- ``GET /console/login/saml``: an AuthnRequest over the HTTP-Redirect binding; its ID and a
  fresh ``RelayState`` are kept as the sign-in attempt, bound to the browser;
- ``POST /console/saml/acs``: the assertion consumer service (HTTP-POST binding). The response
  must answer the attempt's AuthnRequest (``InResponseTo``; unsolicited responses are refused),
  its assertion must be signed by a key in the IdP's metadata (``xmlsec1``), be addressed to
  this service (audience = the SP entity id, recipient = the ACS URL) and be within its time
  limits (``NotBefore``/``NotOnOrAfter``, with ``clock_skew`` seconds of leeway);
- ``GET /console/saml/metadata``: this service provider's metadata, for the IdP's set-up.

The person's name is the NameID (or ``identity_attribute``), with ``identity_prefix`` before
it; their groups are the values of ``groups_attribute``, which ``[roles]`` maps into roles as
for every other identity.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import create_metadata_string
from saml2.sigver import get_xmlsec_binary
from twisted.internet import defer, threads

from hoopgw.errors import ConfigError
from hoopgw.session import Identity
from hoopgw.signin import LoginAttempt, SignInHost

__all__ = ["MAX_RESPONSE", "SamlSignIn", "install"]

PROVIDER = "saml"
MAX_RESPONSE = 256 * 1024
"""Largest SAMLResponse accepted, in bytes (base64)."""

_KEYS = {
    "idp_metadata",
    "sp_entity_id",
    "identity_attribute",
    "groups_attribute",
    "identity_prefix",
    "label",
    "clock_skew",
}


def _error(message: str, key: str) -> ConfigError:
    return ConfigError(message, key=f"console.saml.{key}")


def _string(options: Mapping[str, Any], key: str, default: str | None) -> str:
    value = options.get(key, default)
    if value is None:
        raise _error("required", key)
    if not isinstance(value, str):
        raise _error(f"expected str, got {type(value).__name__}", key)
    return value


class SamlSignIn:
    """Sign-in through one SAML identity provider; see the module docstring.

    :param host: the console.
    :param options: the ``[console.saml]`` table.
    """

    def __init__(self, host: SignInHost, options: Mapping[str, Any]) -> None:
        for key in options:
            if key not in _KEYS:
                raise _error(f"unknown key (known: {', '.join(sorted(_KEYS))})", key)
        self._host = host
        metadata = Path(_string(options, "idp_metadata", None))
        if not metadata.is_absolute():
            metadata = host.base_dir / metadata
        if not metadata.is_file():
            raise _error(f"no such file: {metadata}", "idp_metadata")
        self.acs_url = f"{host.base_url}/saml/acs"
        self.entity_id = _string(options, "sp_entity_id", f"{host.base_url}/saml/metadata")
        self.identity_attribute = _string(options, "identity_attribute", "")
        self.groups_attribute = _string(options, "groups_attribute", "groups")
        self.identity_prefix = _string(options, "identity_prefix", "")
        self.label = _string(options, "label", "Sign in with SAML")
        skew = options.get("clock_skew", 60)
        if isinstance(skew, bool) or not isinstance(skew, int) or not 0 <= skew <= 300:
            raise _error("must be a whole number of seconds from 0 to 300", "clock_skew")
        try:
            xmlsec = get_xmlsec_binary(["/usr/bin", "/usr/local/bin"])
        except Exception:  # pysaml2 raises a bare SigverError
            raise _error(
                "xmlsec1 is not installed (Debian: apt install xmlsec1)", "idp_metadata"
            ) from None
        config = SPConfig()
        config.load(
            {
                "entityid": self.entity_id,
                "xmlsec_binary": xmlsec,
                "metadata": {"local": [str(metadata)]},
                "accepted_time_diff": skew,
                "allow_unknown_attributes": True,
                "service": {
                    "sp": {
                        "endpoints": {
                            "assertion_consumer_service": [(self.acs_url, BINDING_HTTP_POST)]
                        },
                        # Every assertion signed; an unsigned one (or a response whose only
                        # signature covers something else) is refused.
                        "want_assertions_signed": True,
                        "want_response_signed": False,
                        "allow_unsolicited": False,
                        "authn_requests_signed": False,
                        "name_id_format_allow_create": False,
                    }
                },
            }
        )
        self._config = config
        self._client = Saml2Client(config=config)
        idps = list(self._client.metadata.identity_providers())
        if len(idps) != 1:
            raise _error(
                f"must describe exactly one identity provider (found {len(idps)})", "idp_metadata"
            )
        self.idp = idps[0]

    def begin(self, request: Any) -> Any:
        """Send the browser to the IdP with a fresh AuthnRequest."""
        relay_state = secrets.token_urlsafe(32)
        request_id, info = self._client.prepare_for_authenticate(
            entityid=self.idp, relay_state=relay_state, binding=BINDING_HTTP_REDIRECT
        )
        location = dict(info["headers"])["Location"]
        attempt = LoginAttempt(
            provider=PROVIDER,
            state=relay_state,
            request_id=request_id,
            started_at=self._host.clock.seconds(),
        )
        return self._host.begin_sign_in(attempt, location, cross_site_post=True)

    def consume(self, request: Any) -> defer.Deferred[Any]:
        """The assertion consumer service."""
        raw = request.content.read(MAX_RESPONSE + 1) if request.content is not None else b""
        if len(raw) > MAX_RESPONSE:
            return self._host.sign_in_failed(request, PROVIDER, "SAMLResponse too large")
        form = {k: v[0] for k, v in parse_qs(raw.decode("ascii", "replace")).items()}
        attempt = self._host.take_attempt(request, form.get("RelayState", ""))
        if attempt is None or attempt.provider != PROVIDER:
            return self._host.sign_in_failed(
                request, PROVIDER, "RelayState unknown, used, expired or from another browser"
            )
        saml_response = form.get("SAMLResponse", "")
        if not saml_response:
            return self._host.sign_in_failed(request, PROVIDER, "no SAMLResponse")
        # xmlsec1 runs as a subprocess: off the reactor thread.
        d = threads.deferToThread(self.identity_of, saml_response, attempt.request_id)

        def failed(failure: Any) -> Any:
            reason = f"{failure.type.__name__}: {failure.getErrorMessage()}"[:500]
            return self._host.sign_in_failed(request, PROVIDER, reason)

        return d.addCallbacks(lambda who: self._host.signed_in(request, who, PROVIDER), failed)

    def identity_of(self, saml_response: str, request_id: str) -> Identity:
        """Check a base64 SAMLResponse answering ``request_id``; the identity it names.

        :raises Exception: (pysaml2's errors, :class:`ValueError`) if anything is wrong.
        """
        response = self._client.parse_authn_request_response(
            saml_response, BINDING_HTTP_POST, outstanding={request_id: "/console/reviews"}
        )
        if response is None:
            raise ValueError("the response could not be read")
        if response.in_response_to != request_id:
            raise ValueError("InResponseTo does not name our AuthnRequest")
        assertion = response.assertion
        if assertion is None:
            # pysaml2 drops an assertion whose subject confirmation (recipient, time) fails.
            raise ValueError("no usable assertion (recipient or subject confirmation)")
        if assertion.signature is None:
            raise ValueError("the assertion is not signed")
        values = self._attributes(assertion)
        if self.identity_attribute:
            names = values.get(self.identity_attribute, [])
            name = names[0] if len(names) == 1 else ""
        else:
            name = response.name_id.text if response.name_id is not None else ""
        name = (name or "").strip()
        if not name or not name.isprintable() or any(c.isspace() for c in name) or "," in name:
            raise ValueError("the assertion names no usable identity")
        groups = frozenset(
            g for g in values.get(self.groups_attribute, []) if g and g.isprintable()
        )
        return Identity(
            name=self.identity_prefix + name,
            groups=groups,
            method="saml",
            credential_id=f"{self.idp}#{assertion.id}",
        )

    @staticmethod
    def _attributes(assertion: Any) -> dict[str, list[str]]:
        values: dict[str, list[str]] = {}
        for statement in assertion.attribute_statement or []:
            for attribute in statement.attribute or []:
                texts = [v.text for v in attribute.attribute_value or [] if v.text]
                for key in {attribute.name, attribute.friendly_name} - {None, ""}:
                    values.setdefault(key, []).extend(texts)
        return values

    def metadata(self, request: Any) -> Any:
        """This service provider's metadata."""
        body = create_metadata_string(None, config=self._config, valid=24 * 7)
        return defer.succeed(self._host.answer(body, "application/samlmetadata+xml"))


def install(host: SignInHost, options: Mapping[str, Any]) -> None:
    """The ``hoopgw.signin`` entry point: serve SAML sign-in on ``host``."""
    saml = SamlSignIn(host, options)
    host.route("GET", "/login/saml", saml.begin)
    host.route("POST", "/saml/acs", saml.consume)
    host.route("GET", "/saml/metadata", saml.metadata)
    host.add_sign_in(PROVIDER, saml.label, "/console/login/saml")
