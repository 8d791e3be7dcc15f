"""Tests for :mod:`hoopgw.runtime.chain`: every plugin asked, fail closed, approvals, observers."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, task

from hoopgw.errors import PluginError
from hoopgw.plugin import hookimpl
from hoopgw.runtime.chain import WITHDRAWN, PluginChain
from hoopgw.session import Column, CommandOutcome, Output
from hoopgw.testing import FakeApprover, make_command, make_session
from hoopgw.verdicts import Allow, Block, Hold, Verdict


class Answers:
    """Answers ``client_command`` with a fixed value and counts its calls."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls = 0

    @hookimpl
    def client_command(self, command: Any) -> Any:
        self.calls += 1
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


class Observer:
    """Records every observer call."""

    def __init__(self) -> None:
        self.decided: list[Verdict] = []
        self.completed: list[CommandOutcome] = []

    @hookimpl
    def command_decided(self, verdict: Verdict) -> None:
        self.decided.append(verdict)

    @hookimpl
    def command_completed(self, outcome: CommandOutcome) -> None:
        self.completed.append(outcome)


def result_of(d: defer.Deferred[Any]) -> Any:
    """The result a Deferred already fired with (fails the test if it has not fired)."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    return box[0]


def has_fired(d: defer.Deferred[Any]) -> bool:
    """Whether ``d`` has a result (``d.called`` is also true while it waits on another one)."""
    box: list[Any] = []

    def seen(result: Any) -> Any:
        box.append(result)
        return result

    d.addBoth(seen)
    return bool(box)


def decide(chain: PluginChain) -> defer.Deferred[Verdict]:
    return chain.decide_command(make_session(), make_command("SELECT 1"))


def test_every_plugin_is_called_even_when_one_blocks() -> None:
    first = Answers(Block(reason="no"))
    second = Answers(Allow())
    third = Answers(None)
    chain = PluginChain(
        [("first", first), ("second", second), ("third", third)], reactor=task.Clock()
    )
    verdict = result_of(decide(chain))
    assert verdict == Block(reason="no", plugin="first")
    assert (first.calls, second.calls, third.calls) == (1, 1, 1)


def test_all_abstain_is_allow() -> None:
    chain = PluginChain([("quiet", Answers(None))], reactor=task.Clock())
    assert result_of(decide(chain)) == Allow()


def test_no_plugins_is_allow() -> None:
    assert result_of(decide(PluginChain([], reactor=task.Clock()))) == Allow()


def test_decide_without_implementations_abstains() -> None:
    chain = PluginChain([("quiet", Answers(None))], reactor=task.Clock())
    assert result_of(chain.decide("session_started", session=make_session())) is None


def test_decide_rejects_a_hook_that_is_not_a_decision() -> None:
    chain = PluginChain([], reactor=task.Clock())
    with pytest.raises(ValueError, match="not a decision hook"):
        chain.decide("server_rows")


def test_answer_is_labelled_with_the_plugin_name() -> None:
    chain = PluginChain([("guard", Answers(Allow(reason="fine")))], reactor=task.Clock())
    assert result_of(decide(chain)) == Allow(reason="fine", plugin="guard")


@pytest.mark.parametrize(
    ("make_answer", "reason"),
    [
        (lambda: RuntimeError("boom"), "plugin 'bad' failed in client_command; refused"),
        (
            lambda: defer.fail(RuntimeError("boom")),
            "plugin 'bad' failed in client_command; refused",
        ),
        (lambda: "allow", "plugin 'bad' returned str from client_command"),
        (lambda: True, "plugin 'bad' returned bool from client_command"),
        (lambda: defer.succeed(42), "plugin 'bad' returned int from client_command"),
    ],
    ids=["exception", "failed-deferred", "str", "bool", "deferred-int"],
)
def test_plugin_failure_or_wrong_answer_blocks(make_answer: Any, reason: str) -> None:
    chain = PluginChain(
        [("good", Answers(Allow())), ("bad", Answers(make_answer()))], reactor=task.Clock()
    )
    verdict = result_of(decide(chain))
    assert verdict == Block(reason=reason, plugin="bad")


def test_hook_with_unknown_parameter_blocks() -> None:
    class Odd:
        @hookimpl
        def client_connected(self, connection: Any, client_address: Any) -> None:
            return None

    chain = PluginChain([("odd", Odd())], reactor=task.Clock())
    # client_address missing from the call: the plugin cannot be asked, so it blocks.
    verdict = result_of(chain.decide("client_connected", connection=None))
    assert isinstance(verdict, Block)
    assert verdict.plugin == "odd"


def test_deferred_answer_is_waited_for() -> None:
    pending: defer.Deferred[Verdict] = defer.Deferred()
    chain = PluginChain([("slow", Answers(pending))], reactor=task.Clock())
    d = decide(chain)
    assert not has_fired(d)
    pending.callback(Block(reason="later"))
    assert result_of(d) == Block(reason="later", plugin="slow")


@pytest.mark.parametrize("block_from", ["given", "first late", "second late"])
def test_answers_given_at_once_and_later_are_combined(block_from: str) -> None:
    first: defer.Deferred[Verdict | None] = defer.Deferred()
    second: defer.Deferred[Verdict | None] = defer.Deferred()
    given = Block(reason="now") if block_from == "given" else Allow()
    chain = PluginChain(
        [("a", Answers(first)), ("b", Answers(given)), ("c", Answers(second))],
        reactor=task.Clock(),
    )
    d = decide(chain)
    first.callback(Block(reason="first") if block_from == "first late" else None)
    assert not has_fired(d)
    second.callback(Block(reason="second") if block_from == "second late" else Allow())
    verdict = result_of(d)
    assert isinstance(verdict, Block)
    assert verdict.plugin == {"given": "b", "first late": "a", "second late": "c"}[block_from]


def test_a_coroutine_answer_is_waited_for() -> None:
    class Async:
        @hookimpl
        def client_command(self) -> Any:
            async def answer() -> Verdict:
                return Block(reason="async")

            return answer()

    chain = PluginChain([("async", Async())], reactor=task.Clock())
    assert result_of(decide(chain)) == Block(reason="async", plugin="async")


def test_hold_without_approval_backend_blocks() -> None:
    chain = PluginChain([("guard", Answers(Hold(reason="risky", rule="r1")))], reactor=task.Clock())
    verdict = result_of(decide(chain))
    assert isinstance(verdict, Block)
    assert verdict.reason == "needs approval (risky), but no approval backend is enabled"
    assert (verdict.plugin, verdict.rule) == ("guard", "r1")


def held_chain(
    clock: task.Clock, observer: Observer | None = None
) -> tuple[PluginChain, FakeApprover]:
    approver = FakeApprover()
    plugins: list[tuple[str, object]] = [
        ("guard", Answers(Hold(reason="risky", approvers=("dba",)))),
        ("approver", approver),
    ]
    if observer is not None:
        plugins.append(("observer", observer))
    return PluginChain(plugins, reactor=clock, approval_timeout=60), approver


def test_hold_is_handed_to_the_approval_backend() -> None:
    chain, approver = held_chain(task.Clock())
    decide(chain)
    [(session, command, hold)] = approver.requests
    assert session == make_session()
    assert command.text == "SELECT 1"
    assert hold == Hold(reason="risky", approvers=("dba",), plugin="guard")


def test_hold_approved_allows() -> None:
    chain, approver = held_chain(task.Clock())
    d = decide(chain)
    assert not has_fired(d)
    approver.approve()
    assert result_of(d) == Allow(reason="approved")


def test_hold_denied_blocks_with_the_approver_reason() -> None:
    chain, approver = held_chain(task.Clock())
    d = decide(chain)
    approver.deny("not during business hours")
    assert result_of(d) == Block(reason="not during business hours")


def test_hold_times_out() -> None:
    clock = task.Clock()
    chain, approver = held_chain(clock)
    d = decide(chain)
    clock.advance(59)
    assert not has_fired(d)
    clock.advance(1)
    verdict = result_of(d)
    assert isinstance(verdict, Block)
    assert "timed out" in verdict.reason
    assert approver.withdrawn == 1


def test_cancel_withdraws_the_pending_approval() -> None:
    clock = task.Clock()
    observer = Observer()
    chain, approver = held_chain(clock, observer)
    d = decide(chain)
    d.cancel()
    assert approver.withdrawn == 1
    # The caller that cancelled gets CancelledError; observers still hear of the command.
    assert result_of(d).check(defer.CancelledError)
    [verdict] = observer.decided
    assert isinstance(verdict, Block) and verdict.reason == WITHDRAWN
    assert clock.getDelayedCalls() == []


def test_cancel_while_a_plugin_answer_is_pending_blocks_and_reports() -> None:
    observer = Observer()
    chain = PluginChain(
        [("slow", Answers(defer.Deferred())), ("o", observer)], reactor=task.Clock()
    )
    d = decide(chain)
    d.cancel()
    assert result_of(d).check(defer.CancelledError)
    [verdict] = observer.decided
    assert isinstance(verdict, Block) and verdict.reason == WITHDRAWN


def test_approval_backend_exception_blocks() -> None:
    class Broken:
        @hookimpl
        def approval_requested(self) -> Any:
            raise RuntimeError("down")

    chain = PluginChain(
        [("guard", Answers(Hold(reason="risky"))), ("broken", Broken())], reactor=task.Clock()
    )
    verdict = result_of(decide(chain))
    assert isinstance(verdict, Block)
    assert verdict.reason == "approval backend failed; refused"


def test_approval_backend_unclear_answer_blocks() -> None:
    class Vague:
        @hookimpl
        def approval_requested(self) -> Any:
            return defer.succeed(Hold(reason="still thinking"))

    chain = PluginChain(
        [("guard", Answers(Hold(reason="risky"))), ("vague", Vague())], reactor=task.Clock()
    )
    verdict = result_of(decide(chain))
    assert verdict == Block(reason="approval backend gave no clear answer; refused")


@pytest.mark.parametrize(
    "answer", [None, Allow(), Block(reason="no"), RuntimeError("boom")], ids=repr
)
def test_command_decided_is_called_exactly_once(answer: Any) -> None:
    observer = Observer()
    chain = PluginChain([("p", Answers(answer)), ("o", observer)], reactor=task.Clock())
    verdict = result_of(decide(chain))
    assert observer.decided == [verdict]


def test_without_a_judge_a_command_is_allowed_at_once_and_reported_once() -> None:
    observer = Observer()
    counted: list[Verdict] = []
    chain = PluginChain([("o", observer)], reactor=task.Clock(), on_decided=counted.append)
    assert not chain.judges_commands
    verdict = chain.decide_command_at_once(make_session(), make_command("SELECT 1"))
    assert verdict == Allow()
    assert observer.decided == counted == [Allow()]


def test_with_a_judge_nothing_is_decided_at_once() -> None:
    observer = Observer()
    chain = PluginChain([("p", Answers(None)), ("o", observer)], reactor=task.Clock())
    assert chain.judges_commands
    assert chain.decide_command_at_once(make_session(), make_command("SELECT 1")) is None
    assert observer.decided == []


class Recorder:
    """A ``command_decided`` observer that returns a Deferred (as recording does for a
    refusal: the write of the decision's record)."""

    def __init__(self) -> None:
        self.writes: list[defer.Deferred[None]] = []

    @hookimpl
    def command_decided(self, verdict: Verdict) -> defer.Deferred[None]:
        self.writes.append(defer.Deferred())
        return self.writes[-1]


def test_a_refusal_waits_for_the_deferred_its_observers_return() -> None:
    recorder = Recorder()
    chain = PluginChain([("p", Answers(Block(reason="no"))), ("r", recorder)], reactor=task.Clock())
    d = decide(chain)
    assert len(recorder.writes) == 1 and not has_fired(d)
    recorder.writes[0].callback(None)
    assert isinstance(result_of(d), Block)


def test_a_refusal_goes_even_when_the_deferred_it_waits_for_fails() -> None:
    recorder = Recorder()
    chain = PluginChain([("p", Answers(Block(reason="no"))), ("r", recorder)], reactor=task.Clock())
    d = decide(chain)
    recorder.writes[0].errback(RuntimeError("disk full"))
    assert isinstance(result_of(d), Block)


def test_an_allowed_command_does_not_wait_for_observers() -> None:
    recorder = Recorder()
    chain = PluginChain([("p", Answers(Allow())), ("r", recorder)], reactor=task.Clock())
    assert result_of(decide(chain)) == Allow(plugin="p")
    recorder.writes[0].callback(None)


def test_a_refusal_cancelled_while_it_waits_fails_with_cancelled() -> None:
    recorder = Recorder()
    chain = PluginChain([("p", Answers(Block(reason="no"))), ("r", recorder)], reactor=task.Clock())
    d = decide(chain)
    d.cancel()
    assert result_of(d).check(defer.CancelledError)
    recorder.writes[0].callback(None)  # fires nothing more


def test_command_decided_once_after_approval() -> None:
    observer = Observer()
    chain, approver = held_chain(task.Clock(), observer)
    d = decide(chain)
    assert observer.decided == []
    approver.approve()
    assert observer.decided == [result_of(d)]


def test_observer_exception_is_swallowed_and_others_still_run() -> None:
    class Crashing:
        @hookimpl
        def command_completed(self) -> None:
            raise RuntimeError("boom")

    observer = Observer()
    chain = PluginChain([("crash", Crashing()), ("o", observer)], reactor=task.Clock())
    outcome = CommandOutcome(status="ok")
    chain.notify(
        "command_completed", session=make_session(), command=make_command("x"), outcome=outcome
    )
    assert observer.completed == [outcome]


class Tagger:
    """Appends its name to every value it sees, to show the order data hooks run in."""

    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def server_rows(self, rows: list[list[bytes | None]]) -> None:
        for row in rows:
            row[0] = (row[0] or b"") + self.name.encode()

    @hookimpl
    def server_output(self, output: Output) -> None:
        output.fields["message"] += self.name


def test_data_hooks_run_in_config_order() -> None:
    chain = PluginChain(
        [("a", Tagger("a")), ("b", Tagger("b")), ("c", Tagger("c"))], reactor=task.Clock()
    )
    rows: list[list[bytes | None]] = [[b""], [None]]
    session, command = make_session(), make_command("SELECT")
    chain.hook.server_rows(session=session, command=command, columns=[Column("x")], rows=rows)
    assert rows == [[b"abc"], [b"abc"]]
    output = Output("notice", {"message": ""})
    chain.hook.server_output(session=session, command=command, output=output)
    assert output.fields["message"] == "abc"


def test_data_hook_exception_propagates() -> None:
    class Broken:
        @hookimpl
        def server_rows(self) -> None:
            raise RuntimeError("boom")

    chain = PluginChain([("broken", Broken())], reactor=task.Clock())
    with pytest.raises(RuntimeError):
        chain.hook.server_rows(
            session=make_session(), command=make_command("x"), columns=[], rows=[]
        )


def test_hook_flags_say_which_data_hooks_exist() -> None:
    chain = PluginChain([("t", Tagger("t"))], reactor=task.Clock())
    assert chain.has_row_hooks and chain.has_output_hooks
    assert not chain.has_input_hooks and not chain.has_column_hooks
    assert chain.names == ("t",)


class Picker(Tagger):
    """Needs the rows it is told (``None``: every row) in ``server_rows``."""

    def __init__(self, name: str, needed: list[int] | None) -> None:
        super().__init__(name)
        self.needed = needed

    @hookimpl
    def server_row_messages(self, data: bytes, starts: list[int]) -> list[int] | None:
        return self.needed


def rows_needed(chain: PluginChain, count: int = 4) -> list[int] | None:
    return chain.rows_needed(
        session=make_session(), command=make_command("SELECT"), columns=[], data=b"D" * count,
        starts=list(range(count)), encoding="UTF8",
    )  # fmt: skip


def test_rows_needed_is_the_union_of_what_each_row_plugin_asks() -> None:
    chain = PluginChain([("a", Picker("a", [2])), ("b", Picker("b", [0, 2]))], reactor=task.Clock())
    assert chain.picks_rows
    assert rows_needed(chain) == [0, 2]
    assert rows_needed(PluginChain([("a", Picker("a", []))], reactor=task.Clock())) == []


def test_one_plugin_answering_none_needs_every_row() -> None:
    chain = PluginChain([("a", Picker("a", [1])), ("b", Picker("b", None))], reactor=task.Clock())
    assert rows_needed(chain) is None


def test_a_row_plugin_without_the_bytes_hook_needs_every_row() -> None:
    chain = PluginChain([("a", Picker("a", [1])), ("t", Tagger("t"))], reactor=task.Clock())
    assert not chain.picks_rows and rows_needed(chain) is None
    assert not PluginChain([], reactor=task.Clock()).picks_rows


def test_a_row_index_outside_the_batch_is_a_plugin_error() -> None:
    chain = PluginChain([("a", Picker("a", [4]))], reactor=task.Clock())
    with pytest.raises(PluginError, match="outside the batch"):
        rows_needed(chain)


class Redactor:
    """Rewrites one word of the command text kept for the audit record."""

    def __init__(self, word: str, replacement: str) -> None:
        self.word = word
        self.replacement = replacement

    @hookimpl
    def audit_text(self, output: Output) -> None:
        output.fields["text"] = output.fields["text"].replace(self.word, self.replacement)


def test_recordable_runs_audit_text_in_config_order_and_keeps_the_original() -> None:
    # Only "secret" -> "s3" -> "[x]" in config order gives "[x]".
    chain = PluginChain(
        [("one", Redactor("secret", "s3")), ("two", Redactor("s3", "[x]"))], reactor=task.Clock()
    )
    command = make_command("SELECT 'secret'")
    recordable = chain.recordable(make_session(), command)
    assert recordable.text == "SELECT 'secret'"
    assert recordable.recorded_text == "SELECT '[x]'"
    assert chain.has_audit_hooks


def test_recordable_without_audit_hooks_is_the_command_itself() -> None:
    chain = PluginChain([("answers", Answers(None))], reactor=task.Clock())
    command = make_command("SELECT 1")
    assert chain.recordable(make_session(), command) is command
    assert not chain.has_audit_hooks


def test_a_verdict_reason_is_recorded_and_told_after_audit_text() -> None:
    observer = Observer()
    chain = PluginChain(
        [
            ("guard", Answers(Block(reason="syntax error at or near secret"))),
            ("mask", Redactor("secret", "[x]")),
            ("observer", observer),
        ],
        reactor=task.Clock(),
    )
    verdicts: list[Verdict] = []
    chain.decide_command(make_session(), make_command("SELECT secret")).addCallback(verdicts.append)
    assert [v.reason for v in verdicts] == ["syntax error at or near [x]"]
    assert [v.reason for v in observer.decided] == ["syntax error at or near [x]"]


def test_a_reason_that_cannot_be_rewritten_refuses() -> None:
    class Broken:
        @hookimpl
        def audit_text(self, output: Output) -> None:
            if output.kind == "reason":
                raise RuntimeError("boom")

    chain = PluginChain(
        [("allow", Answers(Allow(reason="fine"))), ("broken", Broken())], reactor=task.Clock()
    )
    verdicts: list[Verdict] = []
    chain.decide_command(make_session(), make_command("SELECT 1")).addCallback(verdicts.append)
    assert isinstance(verdicts[0], Block) and "could not be made safe" in verdicts[0].reason


class AttributeMasker:
    """Rewrites session attribute values for the record; keeps what session_started saw."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl
    def audit_text(self, command: Any, output: Output) -> None:
        if output.kind == "attributes":
            assert command is None
            for name, value in list(output.fields.items()):
                output.fields[name] = value.replace("secret", "[x]")

    @hookimpl
    def session_started(self, session: Any) -> None:
        self.seen.append(session)


def test_session_started_sees_attributes_rewritten_for_the_record() -> None:
    plugin = AttributeMasker()
    chain = PluginChain([("mask", plugin)], reactor=task.Clock())
    session = make_session()
    session.attributes["application_name"] = "a secret app"
    chain.decide("session_started", session=session)
    [seen] = plugin.seen
    assert seen.recorded_attributes["application_name"] == "a [x] app"
    assert seen.attributes["application_name"] == "a secret app"
    assert session.recorded_attributes is None


def test_attributes_that_cannot_be_rewritten_refuse_the_session() -> None:
    class Broken:
        @hookimpl
        def audit_text(self, output: Output) -> None:
            raise RuntimeError("boom")

    chain = PluginChain([("allow", Answers(Allow())), ("broken", Broken())], reactor=task.Clock())
    verdicts: list[Any] = []
    chain.decide("session_started", session=make_session()).addCallback(verdicts.append)
    assert isinstance(verdicts[0], Block) and "could not be made safe" in verdicts[0].reason


class RowPlugin:
    """Wants rows unless told otherwise in result_columns."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    @hookimpl
    def result_columns(self) -> Any:
        return self.answer

    @hookimpl
    def server_rows(self) -> None:
        pass


class ColumnsOnly:
    """Looks at columns and declines, but has no row hook."""

    @hookimpl
    def result_columns(self) -> Any:
        return False


@pytest.mark.parametrize(
    ("plugins", "wanted"),
    [
        ([("a", RowPlugin(False))], False),
        ([("a", RowPlugin(False)), ("b", RowPlugin(None))], True),
        ([("a", RowPlugin(False)), ("c", ColumnsOnly())], False),
        ([("c", ColumnsOnly())], False),
    ],
)
def test_result_columns_says_whether_any_row_plugin_wants_the_rows(
    plugins: list[tuple[str, object]], wanted: bool
) -> None:
    chain = PluginChain(plugins, reactor=task.Clock())
    columns = [Column("n", type_oid=23)]
    assert chain.result_columns(make_session(), make_command("SELECT"), columns) is wanted


def test_a_session_refusal_reason_is_recorded_and_told_after_audit_text() -> None:
    # Guardrails quotes a startup parameter it cannot read; the reason ends up in the
    # session_closed record and the log, so it passes audit_text like a command's reason.
    class RefusesSession:
        @hookimpl
        def session_started(self, session: Any) -> Block:
            return Block(reason="startup options '-c x=secret': No closing quotation")

    class ReasonRedactor(Redactor):
        @hookimpl
        def audit_text(self, output: Output) -> None:
            if output.kind == "reason":
                super().audit_text(output)

    chain = PluginChain(
        [("guard", RefusesSession()), ("mask", ReasonRedactor("secret", "[x]"))],
        reactor=task.Clock(),
    )
    verdicts: list[Any] = []
    chain.decide("session_started", session=make_session()).addCallback(verdicts.append)
    assert [v.reason for v in verdicts] == ["startup options '-c x=[x]': No closing quotation"]
    assert isinstance(verdicts[0], Block)


def test_a_session_refusal_reason_that_cannot_be_rewritten_refuses_without_it() -> None:
    class Broken:
        @hookimpl
        def audit_text(self, output: Output) -> None:
            if output.kind == "reason":
                raise RuntimeError("boom")

    class RefusesSession:
        @hookimpl
        def session_started(self, session: Any) -> Block:
            return Block(reason="startup parameter secret")

    chain = PluginChain([("guard", RefusesSession()), ("broken", Broken())], reactor=task.Clock())
    verdicts: list[Any] = []
    chain.decide("session_started", session=make_session()).addCallback(verdicts.append)
    assert isinstance(verdicts[0], Block) and "secret" not in verdicts[0].reason


def test_loggable_withholds_text_only_when_audit_text_is_rewritten() -> None:
    # A target's refusal of the login comes before any session: with masking on it may quote
    # a raw value the client sent, so it stays out of the log.
    message = 'database "jane@example.com" does not exist'
    plain = PluginChain([("guard", object())], reactor=task.Clock())
    masked = PluginChain([("mask", Redactor("jane", "[x]"))], reactor=task.Clock())
    assert plain.loggable(message) == message
    assert "jane" not in masked.loggable(message)


class Requires:
    """Answers ``upstream_options`` with a fixed value."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    @hookimpl
    def upstream_options(self, connection: Any) -> Any:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def test_upstream_options_are_the_strictest_answer() -> None:
    from hoopgw.session import UpstreamOptions
    from hoopgw.testing import make_connection

    chain = PluginChain(
        [
            ("a", Requires(None)),
            ("b", Requires(UpstreamOptions(read_only=True, reasons=("b: why",)))),
            ("c", Requires(UpstreamOptions())),
        ],
        reactor=task.Clock(),
    )
    assert chain.upstream_options(make_connection()) == UpstreamOptions(
        read_only=True, reasons=("b: why",)
    )
    nobody = PluginChain([("a", Requires(None))], reactor=task.Clock())
    assert nobody.upstream_options(make_connection()) == UpstreamOptions()


@pytest.mark.parametrize("answer", [RuntimeError("boom"), "read-only"])
def test_a_failing_upstream_options_answer_refuses(answer: Any) -> None:
    from hoopgw.errors import PluginError
    from hoopgw.testing import make_connection

    chain = PluginChain([("bad", Requires(answer))], reactor=task.Clock())
    with pytest.raises(PluginError, match="'bad'"):
        chain.upstream_options(make_connection())


def _held_with_parameters(*plugins: tuple[str, object]) -> tuple[FakeApprover, Any]:
    import attrs

    from hoopgw.session import Parameter

    approver = FakeApprover()
    chain = PluginChain(
        [("hold", Answers(Hold(reason="write"))), *plugins, ("approver", approver)],
        reactor=task.Clock(),
    )
    command = attrs.evolve(
        make_command("UPDATE t SET card = $1 WHERE id = $2"),
        parameters=(
            Parameter(value=b"secret", shown="secret"),
            Parameter(value=None),
            Parameter(value=b"\x00\x01", format=1, type="17", shown="(binary value)"),
        ),
    )
    chain.decide_command(make_session(), command)
    return approver, command


def test_a_held_commands_parameters_pass_audit_text_before_the_approval_backend() -> None:
    approver, command = _held_with_parameters(("redact", Redactor("secret", "[x]")))
    [(_, held, _)] = approver.requests
    assert held.recorded_parameters == ("[x]", None, "(binary value)")
    assert held.parameters == command.parameters  # the real values stay for the digest


def test_without_audit_hooks_reviewers_see_the_parameters_as_shown() -> None:
    approver, _ = _held_with_parameters()
    [(_, held, _)] = approver.requests
    assert held.recorded_parameters == ("secret", None, "(binary value)")


def test_parameters_that_audit_text_cannot_rewrite_refuse_the_held_command() -> None:
    class Broken:
        @hookimpl
        def audit_text(self, output: Output) -> None:
            if output.kind == "parameter":
                raise RuntimeError("boom")

    approver = FakeApprover()
    import attrs

    from hoopgw.session import Parameter

    chain = PluginChain(
        [("hold", Answers(Hold(reason="write"))), ("broken", Broken()), ("approver", approver)],
        reactor=task.Clock(),
    )
    command = attrs.evolve(
        make_command("DELETE FROM t WHERE id = $1"), parameters=(Parameter(value=b"1", shown="1"),)
    )
    verdict = chain.decide_command(make_session(), command).result
    assert isinstance(verdict, Block) and "parameters" in verdict.reason
    assert approver.requests == []
