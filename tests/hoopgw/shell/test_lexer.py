"""Tests for hoopgw.shell.lexer: the words the shell passes, and the syntax the judge refuses."""

from __future__ import annotations

import pytest

from hoopgw.shell import ANY, ONE, OpaqueCommand, parse


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


def test_a_long_word_of_brackets_is_cheap() -> None:
    [[words]] = parse("echo " + "[" * 200_000).pipelines
    assert words[1].text == ANY
