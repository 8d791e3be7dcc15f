"""The contract of a console sign-in method that lives in a plugin (SAML: ``hoopgw_saml``).

A sign-in method is a callable found through the ``hoopgw.signin`` entry-point group under
its name; the console calls it once at start with a :class:`SignInHost` and the method's
options (``[console.<name>]``). It validates the options (raising
:class:`~hoopgw.errors.ConfigError` naming the key), registers its public routes, and lists
itself on the sign-in page. From then on it:

1. starts a sign-in with :meth:`SignInHost.begin_sign_in` (the :class:`LoginAttempt` is bound
   to the browser by a cookie and used at most once);
2. at its callback takes the attempt back with :meth:`SignInHost.take_attempt`, checks what
   the identity provider sent, and ends with :meth:`SignInHost.signed_in` (the console
   resolves the groups from the configured group sources, audits the sign-in and starts the
   session) or :meth:`SignInHost.sign_in_failed` (audited; the person is told only that it
   failed).

The console's own rules (session cookies, CSRF, headers, roles) are the console's; a method only
proves who the person is and which groups they are in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

import attrs

from hoopgw.errors import ConfigError
from hoopgw.session import Identity

__all__ = ["SIGN_IN_GROUP", "LoginAttempt", "SignInHost", "load_sign_in"]

SIGN_IN_GROUP = "hoopgw.signin"


@attrs.frozen(kw_only=True)
class LoginAttempt:
    """A sign-in under way at an identity provider."""

    provider: str
    """``oidc:<name>`` or the plugin's name (``saml``)."""
    state: str
    """The OIDC ``state`` or the SAML ``RelayState``: names the attempt at the callback."""
    nonce: str = ""
    """The OIDC ``nonce`` the ID token must carry."""
    verifier: str = ""
    """The PKCE code verifier (RFC 7636)."""
    request_id: str = ""
    """The SAML AuthnRequest ID the response must answer (``InResponseTo``)."""
    started_at: float
    """When the browser was sent to the provider."""


class SignInHost(Protocol):
    """What the console offers a sign-in method."""

    @property
    def base_url(self) -> str:
        """``public_url`` + ``/console``: absolute URLs of the method's routes start here."""

    base_dir: Path
    """The config file's folder; relative paths in the options start here."""
    clock: Any
    """``seconds()``."""

    def route(self, method: str, pattern: str, handler: Callable[..., Any]) -> None:
        """Serve a public route under ``/console`` (no session, no CSRF check: the method
        proves the request itself); ``handler(request, *groups)`` returns a Deferred."""

    def add_sign_in(self, provider: str, label: str, path: str) -> None:
        """List the method on the sign-in page as a link to ``path``."""

    def begin_sign_in(self, attempt: LoginAttempt, url: str, *, cross_site_post: bool) -> Any:
        """The answer that sends the browser to ``url``, binding ``attempt`` to it; with
        ``cross_site_post`` the binding cookie is also sent on the provider's POST back
        (``SameSite=None``)."""

    def take_attempt(self, request: Any, state: str) -> LoginAttempt | None:
        """The attempt ``state`` names if this browser started it and it is fresh (once)."""

    def signed_in(self, request: Any, identity: Identity, provider: str) -> Any:
        """Resolve the groups, audit, start the session; a Deferred of the answer."""

    def answer(self, body: bytes, content_type: str) -> Any:
        """A plain 200 answer (a metadata document, say)."""

    def sign_in_failed(self, request: Any, provider: str, reason: str) -> Any:
        """Audit a refused sign-in (``reason`` is for the record only); a Deferred of the
        answer."""


SignIn = Callable[[SignInHost, Mapping[str, Any]], None]


def load_sign_in(name: str) -> SignIn:
    """The sign-in method ``name`` from the ``hoopgw.signin`` entry points.

    :raises ConfigError: if no installed distribution provides it.
    """
    found = [ep for ep in entry_points(group=SIGN_IN_GROUP) if ep.name == name]
    if not found:
        raise ConfigError(
            f"the sign-in method {name!r} is not installed (pip install hoopgw-{name})",
            key=f"console.{name}",
        )
    loaded: SignIn = found[0].load()
    return loaded
