"""Inspected bodies: JSON-aware masking through the plugins' data hooks (sans-io).

A JSON body is masked value by value: every string (object keys too) and every number is
handed to ``server_output`` as one field of an :class:`~hoopgw.session.Output` of kind
``http-json``, so masking's detectors see each value alone (a card number in a JSON number, an
e-mail address in a key). Values a plugin rewrote are put back, as strings, and the document is
written out again. The whole text of every inspected body (JSON or not) then passes
``server_output`` as kind ``http-response``, field ``body``: what the client receives and what
the recording plugin keeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["mask_json", "media_type"]

Masker = Callable[[dict[str, str]], dict[str, str]]
"""Takes fields (name to text), returns them rewritten."""


def media_type(content_type: bytes | None) -> str:
    """The lower-case media type of a ``Content-Type`` value, without parameters."""
    if content_type is None:
        return ""
    return content_type.split(b";", 1)[0].strip().lower().decode("latin-1")


def is_json(content_type: bytes | None) -> bool:
    """Whether the body is a JSON document by its media type."""
    media = media_type(content_type)
    return media == "application/json" or media.endswith("+json")


def mask_json(text: str, masker: Masker) -> str | None:
    """``text`` with each JSON value masked, or None when it is not JSON (the caller masks it
    as text then). Unchanged text is returned as it was, byte for byte."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    values: dict[str, str] = {}

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                values[str(len(values))] = key
                collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)
        elif isinstance(node, str):
            values[str(len(values))] = node
        elif isinstance(node, int | float) and not isinstance(node, bool):
            values[str(len(values))] = json.dumps(node)

    collect(document)
    if not values:
        return text
    masked = masker(dict(values))
    if all(masked.get(k) == v for k, v in values.items()):
        return text
    counter = iter(range(len(values)))

    def rebuild(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                index = str(next(counter))
                new_key = masked.get(index, "")
                out[new_key if new_key != values[index] else key] = rebuild(value)
            return out
        if isinstance(node, list):
            return [rebuild(item) for item in node]
        if isinstance(node, str) or (isinstance(node, int | float) and not isinstance(node, bool)):
            index = str(next(counter))
            new = masked.get(index, "")
            return node if new == values[index] else new
        return node

    return json.dumps(rebuild(document), ensure_ascii=False)
