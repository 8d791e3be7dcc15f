"""Tests for hoopgw.shell: the shell grammar the gateway understands, and where it stops."""

from __future__ import annotations

import pytest

from hoopgw.shell import ANY, ONE, IncompleteCommand, OpaqueCommand, needs_more, parse


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


def test_words_say_what_the_shell_passes() -> None:
    [[words]] = parse("""rm -rf 'a b' "$x" $y ./*.o * {a,b} ~/x x=1""").pipelines
    assert [w.text for w in words] == [
        "rm",
        "-rf",
        "a b",
        ONE,
        ANY,
        "./*.o",
        ANY,
        ANY,
        "~/x",
        "x=1",
    ]
    assert [w.known for w in words] == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
        False,
        True,
        True,
    ]


@pytest.mark.parametrize("text", ["echo $(id)", "echo `id`", "ls # x", "a=(1)", "echo ${x@P}"])
def test_opaque_syntax_raises(text: str) -> None:
    with pytest.raises(OpaqueCommand):
        parse(text)


def test_incomplete_text_raises() -> None:
    with pytest.raises(IncompleteCommand):
        parse("curl x |")


def test_a_long_word_of_brackets_is_cheap() -> None:
    [[words]] = parse("echo " + "[" * 200_000).pipelines
    assert words[1].text == ANY
