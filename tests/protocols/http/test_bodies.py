"""JSON-aware masking: each value masked alone, the document written out again."""

from __future__ import annotations

import json
import re

from hoopgw_http.bodies import is_json, mask_json, media_type

EMAIL = re.compile(r"[\w.]+@[\w.]+")


def hide_emails(fields: dict[str, str]) -> dict[str, str]:
    return {k: EMAIL.sub("[EMAIL]", v) for k, v in fields.items()}


def test_string_values_and_keys_are_masked() -> None:
    text = json.dumps({"a@b.io": {"to": ["c@d.io", 1, True, None]}, "n": "plain"})
    masked = mask_json(text, hide_emails)
    assert masked is not None
    assert json.loads(masked) == {"[EMAIL]": {"to": ["[EMAIL]", 1, True, None]}, "n": "plain"}


def test_numbers_are_handed_as_text_and_replaced_by_strings() -> None:
    def hide_long_numbers(fields: dict[str, str]) -> dict[str, str]:
        return {k: re.sub(r"\d{12,}", "[CARD]", v) for k, v in fields.items()}

    masked = mask_json('{"card": 4111111111111111, "n": 3}', hide_long_numbers)
    assert masked is not None and json.loads(masked) == {"card": "[CARD]", "n": 3}


def test_unchanged_documents_keep_their_bytes() -> None:
    text = '{ "a" :  "x",\n "b": [1, 2.50] }'
    assert mask_json(text, hide_emails) == text


def test_not_json_is_said() -> None:
    assert mask_json("contact a@b.io", hide_emails) is None


def test_a_value_a_plugin_removed_becomes_empty() -> None:
    masked = mask_json('{"a": ["secret"]}', lambda fields: {})
    assert masked is not None and json.loads(masked) == {"": [""]}  # keys too: fail closed


def test_media_types() -> None:
    assert media_type(b"Application/JSON; charset=utf-8") == "application/json"
    assert is_json(b"application/problem+json")
    assert not is_json(b"text/plain") and not is_json(None)
