"""The API server's own error shape, so kubectl shows the gateway's refusals as it shows the
server's: a ``metav1.Status`` with ``status: Failure``, a ``reason`` and the HTTP ``code``."""

from __future__ import annotations

import json

__all__ = ["REASONS", "status_body"]

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    413: "RequestEntityTooLarge",
    431: "BadRequest",  # header section too large (metav1 has no reason of its own for it)
    500: "InternalError",
    501: "BadRequest",  # a transfer coding other than chunked
    502: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
    505: "BadRequest",  # an HTTP version other than 1.1 and 1.0
}
"""``metav1.StatusReason`` for each status code the gateway answers with itself."""


def status_body(code: int, message: str) -> bytes:
    """A ``Status`` object saying ``message`` (kubectl prints ``Error from server (REASON):
    MESSAGE``)."""
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": REASONS.get(code, "InternalError"),
            "code": code,
        }
    ).encode("utf-8")
