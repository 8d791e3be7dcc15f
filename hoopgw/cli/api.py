"""The admin API as the ``hoopgw`` commands that act through it see it (``reviews``,
``access``, ``sessions live|kill``, the MCP server).

They talk to the gateway's admin API (``HOOPGW_URL``, e.g. ``https://gw:8443``) as the person
using them (``HOOPGW_TOKEN``: their API key or OIDC token). Over ``https://`` the server's
certificate and host name are verified against ``HOOPGW_CA_FILE`` (a PEM bundle) or, unset, the
system's CAs. Redirects are not followed: a redirect would carry the bearer token to another
address.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from hoopgw.errors import HoopgwError

# The HTTP client and its TLS stack are imported when a request is sent: building the command
# line must stay quick.
if TYPE_CHECKING:
    import urllib.error
    import urllib.request

TIMEOUT = 30.0
"""Seconds to wait for the gateway to answer."""


class ApiError(HoopgwError):
    """The admin API could not be reached or refused the request (exit status 1)."""


def api_request(
    method: str, path: str, body: dict[str, Any] | None = None, *, token: str | None = None
) -> Any:
    """Send one request to the admin API and return the decoded JSON answer.

    ``token`` authenticates the request instead of ``HOOPGW_TOKEN`` (the MCP server passes
    the token of the caller it serves).

    :raises ApiError: ``HOOPGW_URL``/``HOOPGW_TOKEN`` unset, the gateway unreachable, or an
        error answer (its message is shown).
    """
    base = os.environ.get("HOOPGW_URL", "").rstrip("/")
    if token is None:
        token = os.environ.get("HOOPGW_TOKEN", "")
    if not base:
        raise ApiError("set HOOPGW_URL to the gateway's admin API, e.g. http://127.0.0.1:8080")
    if not base.startswith(("http://", "https://")):
        raise ApiError(f"HOOPGW_URL must start with http:// or https://, not {base!r}")
    if not token:
        raise ApiError("set HOOPGW_TOKEN to your API key or OIDC token")
    if not all(" " < c < "\x7f" for c in token):
        # Checked here, because the HTTP client's own error would repeat the token.
        raise ApiError("HOOPGW_TOKEN holds spaces or characters a token never has")
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 -- the scheme is checked above
        base + path,
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {}),
        },
    )
    try:
        with _open(request, TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ApiError(_error_message(exc)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiError(f"cannot reach the admin API at {base}: {reason}") from None
    except ValueError:
        raise ApiError("the admin API answered with something that is not JSON") from None


def _open(request: urllib.request.Request, timeout: float) -> Any:
    """Send ``request``: TLS verified against ``HOOPGW_CA_FILE`` or the system CAs."""
    import ssl
    import urllib.request

    class _NoRedirects(urllib.request.HTTPRedirectHandler):
        """Answer a redirect with its status instead of following it (with the token)."""

        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    ca_file = os.environ.get("HOOPGW_CA_FILE") or None
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ApiError(f"cannot use HOOPGW_CA_FILE {ca_file!r}: {exc}") from None
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context), _NoRedirects()
    )
    return opener.open(request, timeout=timeout)


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"the admin API answered {exc.code} {exc.reason}"
