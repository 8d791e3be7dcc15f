"""Where a response to a MySQL command ends, and what each of its packets is.

MySQL answers one command at a time, in order, and a response has no end marker of its own:
its shape depends on the command and on its first packet. :class:`ResponseReader` is the
sans-io state machine that classifies each server packet of one response (the table of
transitions is in :meth:`ResponseReader.classify`) and says when the response is complete, so
the session knows which packets are rows, which are column definitions, and when the next
client command may go.
"""

from __future__ import annotations

import enum

from hoopgw_mysql import messages as m


class Part(enum.Enum):
    """What one packet of a response is."""

    OK = "ok"
    """An OK packet (or an EOF/OK that ends a result)."""
    ERROR = "error"
    """An ERR packet; it ends the response."""
    COLUMN_COUNT = "column_count"
    """The first packet of a result set."""
    COLUMN = "column"
    """A column definition of a result set."""
    PARAM = "param"
    """A parameter definition of a prepared statement."""
    EOF = "eof"
    """An EOF packet that ends a list of definitions (before ``CLIENT_DEPRECATE_EOF``)."""
    ROW = "row"
    """A result row (text or binary, by the command)."""
    PREPARE_OK = "prepare_ok"
    """COM_STMT_PREPARE_OK."""
    STRING = "string"
    """The plain text answer of COM_STATISTICS."""
    INFILE = "infile"
    """A LOCAL INFILE request: the client now sends the file, then the server answers."""


# Commands answered by a single OK or ERR packet (COM_SET_OPTION answers with EOF before
# CLIENT_DEPRECATE_EOF, which ends it just as well).
SIMPLE = "simple"
RESULT = "result"  # COM_QUERY, COM_STMT_EXECUTE: OK, ERR or result sets
PREPARE = "prepare"
FETCH = "fetch"  # COM_STMT_FETCH: rows then EOF
FIELD_LIST = "field_list"  # column definitions then EOF
STATISTICS = "statistics"


class ResponseReader:
    """Classifies the packets of one response.

    :param shape: what the command returns: ``simple``, ``result``, ``prepare``, ``fetch``,
        ``field_list`` or ``statistics``.
    :param deprecate_eof: whether ``CLIENT_DEPRECATE_EOF`` was negotiated.
    :param local_infile: whether the server may ask for a local file (the connection enables
        LOCAL INFILE and the client negotiated it); otherwise such a request is a violation.
    """

    def __init__(self, shape: str, *, deprecate_eof: bool, local_infile: bool = False) -> None:
        self.shape = shape
        self._deprecate_eof = deprecate_eof
        self._local_infile = local_infile
        self._state = "rows" if shape == FETCH else "columns" if shape == FIELD_LIST else "first"
        self._columns_left = 0
        self._params_left = 0
        self.done = False
        """The response is complete; the next command may go."""
        self._column_payloads: list[bytes] = []
        self._columns: list[m.ColumnDefinition] | None = None
        self.columns_complete = False
        """Set when the packet just classified completed :attr:`columns`."""
        self.cursor_opened = False
        """For an execute: the server opened a cursor (rows follow with COM_STMT_FETCH)."""
        self.prepared: m.StmtPrepareOk | None = None
        """For ``prepare``: the statement id and counts."""

    @property
    def columns(self) -> list[m.ColumnDefinition]:
        """The column definitions of the current result set (decoded when first asked for:
        a connection without data hooks never needs them)."""
        if self._columns is None:
            self._columns = [m.ColumnDefinition.decode(p) for p in self._column_payloads]
        return self._columns

    @columns.setter
    def columns(self, value: list[m.ColumnDefinition]) -> None:
        self._columns = value
        self._column_payloads = [c.encode() for c in value]

    def classify(self, payload: bytes) -> Part:
        """What ``payload``, the next packet of the response, is; updates :attr:`done`.

        :raises ProtocolViolation: a packet that cannot come at this point.
        """
        if self.done:
            raise m.ProtocolViolation("the server sent a packet no command asked for")
        self.columns_complete = False
        state = self._state
        head = payload[:1]
        if state == "first":
            return self._first(payload)
        if state == "columns":
            if self.shape == FIELD_LIST and (m.is_eof(payload) or m.is_err(payload)):
                self.done = True
                return Part.EOF if m.is_eof(payload) else Part.ERROR
            if self.shape != FIELD_LIST and m.is_err(payload):
                self.done = True
                return Part.ERROR
            if payload[:1] == b"\xff" or len(payload) < 13:
                raise m.ProtocolViolation("column definition is truncated")
            self._column_payloads.append(payload)
            self._columns = None
            if self.shape != FIELD_LIST:
                self._columns_left -= 1
                if self._columns_left == 0:
                    if not self._deprecate_eof:
                        self._state = "columns_eof"
                    elif self.shape == PREPARE:
                        self.done = True
                    else:
                        self._state = "rows"
                        self.columns_complete = True
            return Part.COLUMN
        if state == "columns_eof":
            if not m.is_eof(payload):
                raise m.ProtocolViolation("expected EOF after the column definitions")
            if self.shape == PREPARE:
                self.done = True
                return Part.EOF
            self.columns_complete = True
            status = m.terminator_status(payload)
            if status & m.SERVER_STATUS_CURSOR_EXISTS and self.shape == RESULT:
                self.cursor_opened = True
                self.done = True  # rows come with COM_STMT_FETCH
            else:
                self._state = "rows"
            return Part.EOF
        if state == "rows":
            if m.is_err(payload):
                self.done = True
                return Part.ERROR
            if m.is_eof(payload):
                status = m.terminator_status(payload)
                if status & m.SERVER_STATUS_CURSOR_EXISTS and self.shape == RESULT:
                    self.cursor_opened = True
                if status & m.SERVER_MORE_RESULTS_EXISTS and self.shape == RESULT:
                    self._state = "first"
                else:
                    self.done = True
                return Part.OK
            return Part.ROW
        if state == "infile":
            self._state = "first"
            if m.is_ok(payload) or m.is_err(payload):
                return self._first(payload)
            raise m.ProtocolViolation("expected OK or ERR after the LOCAL INFILE data")
        if state == "params":
            if m.is_err(payload):
                self.done = True
                return Part.ERROR
            self._params_left -= 1
            if self._params_left == 0:
                self._state = "params_eof" if not self._deprecate_eof else self._after_params()
            return Part.PARAM
        if state == "params_eof":
            if not m.is_eof(payload):
                raise m.ProtocolViolation("expected EOF after the parameter definitions")
            self._state = self._after_params()
            return Part.EOF
        raise m.ProtocolViolation(f"unexpected packet 0x{head.hex()} in state {state}")

    def _after_params(self) -> str:
        assert self.prepared is not None
        if self.prepared.columns:
            self._columns_left = self.prepared.columns
            return "columns"
        self.done = True
        return "done"

    def _first(self, payload: bytes) -> Part:
        if m.is_err(payload):
            self.done = True
            return Part.ERROR
        if self.shape == STATISTICS:
            self.done = True
            return Part.STRING
        if self.shape == SIMPLE:
            if not (m.is_ok(payload) or m.is_eof(payload)):
                raise m.ProtocolViolation("expected OK or ERR")
            self.done = True
            return Part.OK
        if self.shape == PREPARE:
            if not m.is_ok(payload):
                raise m.ProtocolViolation("expected COM_STMT_PREPARE_OK")
            self.prepared = m.StmtPrepareOk.decode(payload)
            self.columns = []
            if self.prepared.params:
                self._params_left = self.prepared.params
                self._state = "params"
            else:
                self._state = self._after_params()
            return Part.PREPARE_OK
        # RESULT
        if m.is_ok(payload):
            status = m.OkPacket.decode(payload).status
            if not status & m.SERVER_MORE_RESULTS_EXISTS:
                self.done = True
            return Part.OK
        if payload[:1] == b"\xfb":
            if not self._local_infile:
                raise m.ProtocolViolation(
                    "the server asked for a LOCAL INFILE, which was not enabled"
                )
            self._state = "infile"  # the client's data, then OK or ERR
            return Part.INFILE
        count = m.Cursor(payload).lenenc_int()
        if not count:
            raise m.ProtocolViolation("a result set without columns")
        self._columns_left = count
        self.columns = []
        self._state = "columns"
        return Part.COLUMN_COUNT
