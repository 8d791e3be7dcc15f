"""Two SSH channels joined back to back: one towards the client, one towards the target.

Each :class:`RelayChannel` knows its :attr:`~RelayChannel.peer`. Data, EOF and close cross to the
peer in order, and flow control follows ``twisted/protocols/portforward.py``: while the peer
cannot send (its remote window is full and it holds a buffer), this side stops granting window
to its own sender, so a fast side waits for a slow one instead of filling the gateway's memory.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.ssh import channel, connection

WINDOW_SIZE = 2**21
"""Window each relayed channel grants its sender (2 MiB, as OpenSSH does)."""
MAX_PACKET = 2**15
"""Largest data packet each relayed channel accepts."""
BUFFER_LIMIT = 2**20
"""Bytes a channel may hold for its slow receiver before its peer stops granting window."""


class RelayChannel(channel.SSHChannel):
    """A channel whose data, EOF and close go to :attr:`peer`.

    Subclasses decide what to do with data before it crosses (:meth:`relay_data`) and with
    channel requests; this class does the plumbing.
    """

    # Set by the connection before use; Conch types them as optional.
    conn: Any
    avatar: Any
    data: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("localWindow", WINDOW_SIZE)
        kwargs.setdefault("localMaxPacket", MAX_PACKET)
        super().__init__(*args, **kwargs)
        self.peer: RelayChannel | None = None
        """The channel on the other side, once it is open."""
        self._eof_pending = False
        self._window_owed = 0
        self._closed = False
        self._held: list[tuple[bytes, int | None]] = []
        self._held_eof = False
        self.was_linked = False
        """Whether this channel was ever joined to a peer."""

    def link(self, peer: RelayChannel) -> None:
        """Join this channel and ``peer`` both ways; pass on what each held meanwhile."""
        self.peer, peer.peer = peer, self
        self.was_linked = peer.was_linked = True
        for side in (self, peer):
            held, side._held = side._held, []
            for data, data_type in held:
                side.send_to_peer(data, data_type)
            if side._held_eof:
                side.eofReceived()
        for side in (self, peer):
            owed, side._window_owed = side._window_owed, 0
            if owed and not side._closed:
                side.conn.adjustWindow(side, owed)  # withheld again if the peer is congested

    # -- data --------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Data from this side's sender: hand it to :meth:`relay_data`."""
        self.relay_data(data, None)

    def extReceived(self, dataType: int, data: bytes) -> None:
        """Extended data (stderr) from this side's sender: hand it to :meth:`relay_data`."""
        self.relay_data(data, dataType)

    def relay_data(self, data: bytes, data_type: int | None) -> None:
        """Pass data on to the peer; override to inspect or rewrite it first."""
        self.send_to_peer(data, data_type)

    def send_to_peer(self, data: bytes, data_type: int | None) -> None:
        """Write ``data`` on the peer (as extended data of ``data_type`` if given); before
        :meth:`link`, hold it."""
        peer = self.peer
        if peer is None:
            if not self._closed:
                self._held.append((data, data_type))
            return
        if peer._closed or not data:
            return
        if data_type is None:
            peer.write(data)
        else:
            peer.writeExtended(data_type, data)

    # -- flow control ------------------------------------------------------------------------

    def withholds_window(self) -> bool:
        """Whether this channel holds its sender's data for later (a peer not open yet): no
        window is granted to the sender meanwhile."""
        return self.peer is None and bool(self._held)

    def is_congested(self) -> bool:
        """Whether this channel holds more than :data:`BUFFER_LIMIT` bytes it cannot send yet."""
        return len(self.buf) + sum(len(d) for _, d in self.extBuf) > BUFFER_LIMIT

    def owe_window(self, amount: int) -> None:
        """Remember window this side withheld from its sender while the peer was congested.

        The connection asks again with each data packet, always for all the window spent so
        far, so the latest amount is the whole debt.
        """
        self._window_owed = amount

    def addWindowBytes(self, data: int) -> None:
        """The receiver granted window: send what waits, then release what the peer withheld."""
        super().addWindowBytes(data)
        if self._eof_pending and not self.buf and not self.extBuf:
            self._eof_pending = False
            self.conn.sendEOF(self)
        peer = self.peer
        if (
            peer is not None
            and peer._window_owed
            and not self.is_congested()
            and not peer.withholds_window()
        ):
            owed, peer._window_owed = peer._window_owed, 0
            if not peer._closed:
                peer.conn.adjustWindow(peer, owed)

    # -- EOF and close -----------------------------------------------------------------------

    def eofReceived(self) -> None:
        """This side will send no more data: tell the peer once its buffer is out."""
        if self.peer is not None:
            self.peer.send_eof()
        else:
            self._held_eof = True

    def send_eof(self) -> None:
        """Send EOF after any data still buffered for the receiver."""
        if self._closed or self.localClosed:
            return
        if self.buf or self.extBuf:
            self._eof_pending = True
        else:
            self.conn.sendEOF(self)

    def closeReceived(self) -> None:
        """This side closed: close the peer (after its buffer) and this channel."""
        if self.peer is not None:
            self.peer.loseConnection()
        self.loseConnection()

    def closed(self) -> None:
        """Both directions are closed: forget the peer."""
        self._closed = True
        peer, self.peer = self.peer, None
        if peer is not None and not peer._closed:
            peer.loseConnection()

    def send_request(self, name: bytes, data: bytes, *, want_reply: bool = False) -> Any:
        """Send a channel request on this channel; a Deferred of success when ``want_reply``."""
        return self.conn.sendRequest(self, name, data, wantReply=want_reply)


class RelayConnection(connection.SSHConnection):
    """The ``ssh-connection`` service with flow control between relayed channels."""

    def adjustWindow(self, channel: Any, bytesToAdd: int) -> None:
        """Grant window unless the channel's peer is congested, or the channel holds data for
        later (a forward or a command waiting for its decision); then grant it later."""
        peer = getattr(channel, "peer", None)
        if isinstance(channel, RelayChannel) and (
            channel.withholds_window() or (peer is not None and peer.is_congested())
        ):
            channel.owe_window(bytesToAdd)
            # The local window counter must still say what the sender may send.
            return
        super().adjustWindow(channel, bytesToAdd)
