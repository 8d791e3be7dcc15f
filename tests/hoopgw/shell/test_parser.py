"""Tests for hoopgw.shell.parser: where a command line ends, and where the shell waits."""

from __future__ import annotations

import pytest

from hoopgw.shell import IncompleteCommand, needs_more, parse


@pytest.mark.parametrize(
    ("text", "more"),
    [
        ("curl x |", True),
        ("true &&", True),
        ("rm -rf \\", True),
        ("echo 'a", True),
        ('echo "a', True),
        ("if true; then", True),
        ("for x in a b", True),
        ("( ls", True),
        ("{ ls;", True),
        ("f()", True),
        ("echo $((1 +", False),  # bash may read (( as sub-shells: refused, not waited for
        ("ls", False),
        ("curl x | sh", False),
        # The shell reports an error and waits for nothing: never held as a continuation.
        ("ls >", False),
        ("< f if true", False),  # not a reserved word after a redirection
        ("'if' true; then", False),
        ("echo ${x", False),
        ("a | |", False),
        ("ls >\nrm -rf /", False),
        ("function", False),
        ("time {", False),
        ("echo $(", False),
        ("cat <<EOF", False),
    ],
)
def test_needs_more_only_where_the_shell_waits(text: str, more: bool) -> None:
    assert needs_more(text) is more, text


def test_incomplete_text_raises() -> None:
    with pytest.raises(IncompleteCommand):
        parse("curl x |")
