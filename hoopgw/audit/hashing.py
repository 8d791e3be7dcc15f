"""How an audit record's hash is computed, for each record format (:data:`RECORD_FORMAT`), and
the serialisations they cover; :mod:`hoopgw.audit.chain` applies them along the chain."""

from __future__ import annotations

import hashlib
import json
import math
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

RECORD_FORMAT = 2
"""The record format this code writes (the store's ``audit_records.format``); it reads and
verifies every earlier one."""


def canonical_json(value: Any) -> str:
    """The one JSON form used for hashing and storing: sorted keys, no spaces, no NaN.

    :raises TypeError: if ``value`` is not JSON-serialisable.
    :raises ValueError: for NaN or infinite floats.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


_json_scalar = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def _not_serialisable(value: Any) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


_encode_data_py = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False
).encode
# JSONEncoder.encode builds its C encoder anew at every call; this runs for every record, so
# the C encoder is made once (the same settings: what _encode_data_py returns, faster).
_c_encoder = (
    None
    if c_make_encoder is None
    else c_make_encoder(
        None, _not_serialisable, encode_basestring, None, ":", ",", False, False, False
    )
)


def encode_data(data: Any) -> str:
    """The one serialisation of a format 2 record's ``data``: compact JSON, keys in their
    order, no NaN (the hash covers these exact bytes, so no canonical order is needed).

    :raises TypeError: if ``data`` is not JSON-serialisable.
    :raises ValueError: for NaN or infinite floats.
    """
    if _c_encoder is None or not isinstance(data, dict):
        return _encode_data_py(data)
    return "".join(_c_encoder(data, 0))


def record_hash(
    *,
    seq: int,
    kind: str,
    session_id: str,
    time: float,
    data: dict[str, Any],
    prev_hash: str,
    data_json: str | None = None,
) -> str:
    """Hex SHA-256 of a format 1 record: the canonical JSON of its fields and its predecessor's
    hash (records written before format 2; :func:`hoopgw.audit.chain.verify_chain` still checks
    them).

    :param data_json: ``canonical_json(data)`` when the caller has it already (the store does),
        to spare serialising ``data`` twice; the hash is the same either way.
    """
    if data_json is None:
        data_json = canonical_json(data)
    # Exactly canonical_json() of the whole record (keys sorted, no spaces), built by hand
    # because this runs for every record written.
    document = (
        f'{{"data":{data_json},"kind":{_json_scalar(kind)},"prev_hash":{_json_scalar(prev_hash)},'
        f'"seq":{_json_scalar(seq)},"session_id":{_json_scalar(session_id)},'
        f'"time":{_json_scalar(time)}}}'
    )
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


_json_header = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_json_text = encode_basestring  # a str as JSON with ensure_ascii=False (C when available)


def record_hash_v2(
    *, seq: int, kind: str, session_id: str, time: float, prev_hash: str, data_json: str
) -> str:
    """Hex SHA-256 of a format 2 record: ``hoopgw-audit-2`` and a JSON array of its
    ``[seq, prev_hash, kind, session_id, time]`` (``time`` as a float) on one line each, then
    the exact UTF-8 bytes of its ``data`` as stored (``data_json``), not encoded again.

    The header is JSON, so no field can run into the next; ``data`` comes last, so its bytes
    need no framing.
    """
    time = float(time)
    if (
        seq.__class__ is int
        and prev_hash.__class__ is kind.__class__ is session_id.__class__ is str
        and math.isfinite(time)
    ):
        # What _json_header makes of these, without its encoder built anew: this runs for
        # every record appended and verified.
        header = (
            f"[{seq},{_json_text(prev_hash)},{_json_text(kind)},{_json_text(session_id)},"
            f"{float.__repr__(time)}]"
        )
    else:
        header = _json_header([seq, prev_hash, kind, session_id, time])
    return hashlib.sha256(
        b"hoopgw-audit-2\n" + header.encode("utf-8") + b"\n" + data_json.encode("utf-8")
    ).hexdigest()
