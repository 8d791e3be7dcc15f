"""Tests for the record hashes: format 2 is the documented digest, however it is computed."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopgw.audit.hashing import record_hash_v2

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)


def documented_v2(seq, kind, session_id, time, prev_hash, data_json):
    """Format 2 as audit.md describes it, spelled independently of the code."""
    header = json.dumps(
        [seq, prev_hash, kind, session_id, float(time)],
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(
        b"hoopgw-audit-2\n" + header.encode() + b"\n" + data_json.encode()
    ).hexdigest()


@given(
    seq=st.integers(min_value=1, max_value=1 << 70),
    kind=TEXT,
    session_id=TEXT,
    time=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**12), 10**12)
    ),
    prev_hash=st.one_of(st.just("0" * 64), TEXT),
    data_json=TEXT,
)
def test_format_2_hashes_the_documented_bytes(seq, kind, session_id, time, prev_hash, data_json):
    fields = dict(
        seq=seq,
        kind=kind,
        session_id=session_id,
        time=time,
        prev_hash=prev_hash,
        data_json=data_json,
    )
    assert record_hash_v2(**fields) == documented_v2(**fields)


@pytest.mark.parametrize("time", [float("nan"), float("inf"), -float("inf")])
def test_a_time_json_cannot_hold_is_refused(time):
    with pytest.raises(ValueError):
        record_hash_v2(seq=1, kind="k", session_id="s", time=time, prev_hash="0", data_json="{}")
