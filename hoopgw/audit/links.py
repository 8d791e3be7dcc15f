"""The audit writer process's input when a gateway runs several worker processes
(``[gateway] workers``): one UNIX socket per worker, each speaking the line protocol of
:mod:`hoopgw.audit.process` (entry lines in; ``ready``, ``ok COUNT``, ``error COUNT WHY`` out).

The parent process hands the writer each new worker's socket over a *links* socket
(``SCM_RIGHTS``, :func:`send_link`), so a worker writes to the one writer directly, with no hop
through the parent. The writer serves every link until its standard input ends (the parent
closes it once every worker has ended): each batch of lines a link sends is journaled and
answered on that link, so the chain holds every worker's entries, each worker's in its order.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["send_link", "serve_links"]

READ_SIZE = 1 << 20


def send_link(links: socket.socket, link: socket.socket) -> None:
    """Hand ``link`` (a worker's socket, the writer's end) to the writer over ``links``."""
    socket.send_fds(links, [b"+"], [link.fileno()])


class _Answers:
    """A worker's socket as the ``stdout`` the journaling code answers on."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.partial = b""
        self.gone = False

    def write(self, data: bytes) -> int:
        if not self.gone:
            try:
                self.sock.sendall(data)
            except OSError:  # the worker died: its answers go nowhere
                self.gone = True
        return len(data)

    def flush(self) -> None:
        """Answers are sent as written."""


def serve_links(
    stdin: BinaryIO,
    links: socket.socket,
    journal_batch: Callable[[list[bytes], BinaryIO], None],
) -> None:
    """Serve every worker link handed over ``links`` until ``stdin`` ends.

    :param journal_batch: makes a batch of entry lines durable and answers on the given output
        (:func:`hoopgw.audit.process._journal_batch` with the writer's journal bound).
    """
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ, "stdin")
    selector.register(links, selectors.EVENT_READ, "links")
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "stdin":
                    if not stdin.read(READ_SIZE):
                        return  # the parent closed it: every worker has ended
                elif key.data == "links":
                    _accept(links, selector)
                else:
                    _read(key.fileobj, key.data, selector, journal_batch)  # type: ignore[arg-type]
    finally:
        for key in list(selector.get_map().values()):
            if isinstance(key.data, _Answers):
                key.data.sock.close()
        selector.close()


def _accept(links: socket.socket, selector: selectors.BaseSelector) -> None:
    message, fds, _, _ = socket.recv_fds(links, 1, 8)
    if not message:
        selector.unregister(links)
        return
    for fd in fds:
        sock = socket.socket(fileno=fd)
        sock.setblocking(True)
        answers = _Answers(sock)
        answers.write(b"ready\n")
        selector.register(sock, selectors.EVENT_READ, answers)


def _read(
    sock: socket.socket,
    answers: _Answers,
    selector: selectors.BaseSelector,
    journal_batch: Callable[[list[bytes], BinaryIO], None],
) -> None:
    try:
        chunk = sock.recv(READ_SIZE)
    except OSError:
        chunk = b""
    if not chunk:
        # The worker stopped (every line it sent was answered) or died: a line it left half
        # written is no entry.
        selector.unregister(sock)
        sock.close()
        return
    lines = (answers.partial + chunk).split(b"\n")
    answers.partial = lines.pop()
    if lines:
        journal_batch(lines, answers)  # type: ignore[arg-type]
