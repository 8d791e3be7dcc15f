"""An example hoopgw plugin: refuse every command whose text mentions a denied word.

It is the plugin that ``docs/writing-plugins.md`` walks through, and the tests install and run
it. Enable it on a connection and give it its words::

    [[connections]]
    name = "pg"
    plugins = ["recording", "example-denylist"]

    [connections.example-denylist]
    words = ["secret_table", "pg_shadow"]

Matching is a case-insensitive substring test on the command text, so it also catches the word
inside a longer name or a comment. It is an example of the plugin contract, not a policy
engine: a statement can name a table without spelling it out (a view, ``format()``, dynamic
SQL), which only a parser-based guardrail can judge.
"""

from __future__ import annotations

from typing import Any

from hoopgw.plugin import Option, PluginContext, hookimpl
from hoopgw.session import Command
from hoopgw.verdicts import Block

__all__ = ["DenylistPlugin"]


def _check_words(words: list[Any]) -> str | None:
    """Every word must be a non-empty string: an empty one would match every command."""
    if not words:
        return "must list at least one word"
    for word in words:
        if not isinstance(word, str) or not word.strip():
            return f"every word must be a non-empty string, not {word!r}"
    return None


class DenylistPlugin:
    """Blocks every command whose text contains one of the configured words, ignoring case."""

    options = (
        Option(
            name="words",
            type=list,
            help="words that refuse any command whose text contains one of them (ignoring case)",
            check=_check_words,
        ),
    )
    """What the plugin reads from its ``[connections.example-denylist]`` table."""

    def __init__(self, context: PluginContext) -> None:
        """Build the plugin for one connection from its validated options."""
        # Fold once here rather than per command; keep the word as written for the message.
        self._words = tuple((word.casefold(), word) for word in context.options["words"])

    @hookimpl
    def client_command(self, command: Command) -> Block | None:
        """Block the command if its text mentions a denied word; otherwise abstain."""
        text = command.text.casefold()
        for folded, word in self._words:
            if folded in text:
                return Block(reason=f"the command mentions {word!r}", rule=word)
        return None
