"""Response bodies through the ``server_output`` hooks, JSON-aware.

An API object is JSON; a masking plugin reading the body as one text would see keys, quotes and
escapes around every value. :func:`mask_json` hands the hooks every string value of the
document instead, one field per value (named by its JSON path), and writes back what they
returned, so the document stays valid JSON. A Secret's ``data`` values are base64: they are
decoded before the hooks see them and encoded again after, so a masked password stays masked
in ``kubectl get secret -o yaml``.

Pod logs and other text are handed on in whole lines (:class:`LineStream`), watch events one
JSON document per line (:class:`WatchStream`), so a value is never split across two calls.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

__all__ = [
    "LineStream",
    "MaskFields",
    "WatchStream",
    "mask_json",
    "mask_text",
    "readable_secret",
]

MaskFields = Callable[[dict[str, str]], dict[str, str]]
"""Runs the ``server_output`` hooks on ``{field: text}`` and returns the fields as rewritten."""

_B64 = "\x00b64"  # marks a field whose value was base64 in the document
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
"""The annotation ``kubectl apply`` keeps the applied object in, as JSON text: for a Secret,
its ``data`` again (base64) or its ``stringData`` in clear."""


def _strings(
    node: Any, path: str, base64_value: bool, out: dict[str, str], *, secret: bool = False
) -> None:
    """Collect the string values of ``node`` into ``out`` by path; ``secret``: ``node`` is a
    Secret (the items of a ``SecretList`` carry no ``kind``)."""
    if isinstance(node, str):
        if base64_value:
            try:
                decoded = base64.b64decode(node, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = None
            if decoded is not None:
                out[path + _B64] = decoded
                return
        out[path] = node
    elif isinstance(node, dict):
        kind = node.get("kind")
        secret = secret or kind == "Secret"
        if secret:
            _applied(node)
        for key, value in node.items():
            where = f"{path}/{key}"
            if secret and key == "data" and isinstance(value, dict):
                for name, item in value.items():
                    _strings(item, f"{where}/{name}", True, out)
            elif kind == "SecretList" and key == "items" and isinstance(value, list):
                for index, item in enumerate(value):
                    _strings(item, f"{where}/{index}", False, out, secret=True)
            else:
                _strings(value, where, False, out)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _strings(value, f"{path}/{index}", False, out)


def _applied(secret: dict[str, Any]) -> None:
    """Parse, in place, a Secret's last-applied configuration: its values are then handed to
    the hooks one by one (the ``data`` decoded), and it is written back as JSON text."""
    annotations = (secret.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict) and isinstance(annotations.get(LAST_APPLIED), str):
        try:
            applied = json.loads(annotations[LAST_APPLIED])
        except ValueError:
            return  # handed to the hooks as one text
        if isinstance(applied, dict):
            annotations[LAST_APPLIED] = _Applied(applied)


class _Applied(dict[str, Any]):
    """A last-applied configuration parsed (:func:`_applied`), written back as JSON text."""


def _put(node: Any, path: str, masked: dict[str, str]) -> Any:
    if isinstance(node, str):
        if path + _B64 in masked:
            return base64.b64encode(masked[path + _B64].encode("utf-8")).decode("ascii")
        return masked.get(path, node)
    if isinstance(node, _Applied):
        put = {k: _put(v, f"{path}/{k}", masked) for k, v in node.items()}
        return json.dumps(put, separators=(",", ":"))
    if isinstance(node, dict):
        return {k: _put(v, f"{path}/{k}", masked) for k, v in node.items()}
    if isinstance(node, list):
        return [_put(v, f"{path}/{i}", masked) for i, v in enumerate(node)]
    return node


def mask_json(body: bytes, mask: MaskFields) -> bytes:
    """``body`` (one JSON document) with every string value passed through ``mask``.

    :raises ValueError: if ``body`` is not a JSON document in UTF-8.
    """
    document = json.loads(body.decode("utf-8"))
    fields: dict[str, str] = {}
    _strings(document, "", False, fields)
    if not fields:
        return body
    masked = mask(dict(fields))
    changed = {k: v for k, v in masked.items() if fields.get(k) != v}
    if not changed:
        return body
    return json.dumps(_put(document, "", changed), separators=(",", ":")).encode("utf-8")


def readable_secret(body: bytes) -> bytes:
    """A Secret's JSON request ``body`` as the record shows it: each ``data`` value that is
    base64 of UTF-8 text moved, decoded, to ``stringData`` (what the API server would read
    the same), so that the ``audit_text`` hooks see the values, not their base64. Another
    body is returned as it is."""
    try:
        document = json.loads(body.decode("utf-8"))
    except ValueError:
        return body
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict):
        return body
    clear = dict(document.get("stringData") or {})
    for name, value in list(data.items()):
        try:
            clear[name] = base64.b64decode(value, validate=True).decode("utf-8")
        except (TypeError, binascii.Error, UnicodeDecodeError):
            continue
        del data[name]
    if not clear:
        return body
    document["stringData"] = clear
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def mask_text(text: str, mask: MaskFields) -> str:
    """``text`` passed through ``mask`` as one field."""
    return mask({"data": text}).get("data", "")


class LineStream:
    """Text cut in whole lines before it passes the hooks (a line longer than ``limit``
    characters is cut there)."""

    def __init__(self, mask: MaskFields, emit: Callable[[bytes], None], limit: int) -> None:
        self._mask = mask
        self._emit = emit
        self._limit = limit
        self._held = b""

    def feed(self, data: bytes) -> None:
        """More of the body."""
        held = self._held + data
        cut = held.rfind(b"\n") + 1
        if not cut and len(held) > self._limit:
            cut = len(held)
        self._held = held[cut:]
        if cut:
            self._pass(held[:cut])

    def end(self) -> None:
        """The body is complete: hand on what is held."""
        held, self._held = self._held, b""
        if held:
            self._pass(held)

    def _pass(self, chunk: bytes) -> None:
        text = chunk.decode("utf-8", "surrogateescape")
        self._emit(mask_text(text, self._mask).encode("utf-8", "surrogateescape"))


class WatchStream(LineStream):
    """A watch: one JSON event per line, each masked as a document.

    :raises ValueError: from :meth:`feed` or :meth:`end` for a line that is not JSON.
    """

    def _pass(self, chunk: bytes) -> None:
        for line in chunk.splitlines():
            if line.strip():
                self._emit(mask_json(line, self._mask) + b"\n")
