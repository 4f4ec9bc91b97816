"""Balanced accept for ``--workers N``: the parent accepts, each worker gets sockets over SCM_RIGHTS.

SO_REUSEPORT spreads connections by a hash of their addresses. Pooled clients
open few long-lived connections, and four of them land 3/1 or 4/0 on two
workers five times in eight: one worker then serves most of the traffic while
the other core idles. Instead the parent process owns the listening socket and
passes each new connection to the worker with the fewest open ones. Workers
report every closed connection back on the same channel (a SOCK_SEQPACKET
socketpair, one message per socket or per close).

``Balancer`` is the parent's bookkeeping, pure and tested as such;
``Dispatcher`` runs it on the listening socket with a selector; ``Inbox`` is
the worker's end, driven by its event loop.
"""
from __future__ import annotations

import asyncio
import logging
import selectors
import socket
import time
from typing import Callable

log = logging.getLogger("mdriver.proxy")

_CLOSED = b"c"  # worker -> parent: one client connection ended
_SOCKET = b"s"  # parent -> worker: the attached descriptor is a new client


def channel() -> tuple[socket.socket, socket.socket]:
    """(parent end, worker end): message boundaries kept, so one descriptor per message."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class Balancer:
    """Which worker gets the next connection: the fewest open ones; ties go round robin."""

    def __init__(self, workers: int):
        self.open = [0] * workers
        self.alive = [False] * workers
        self._last = -1

    def up(self, worker: int) -> None:
        self.alive[worker] = True
        self.open[worker] = 0

    def down(self, worker: int) -> None:
        self.alive[worker] = False
        self.open[worker] = 0

    def pick(self, exclude: frozenset = frozenset()) -> int | None:
        n = len(self.open)
        best = None
        for k in range(1, n + 1):
            i = (self._last + k) % n
            if self.alive[i] and i not in exclude and (best is None or self.open[i] < self.open[best]):
                best = i
        return best

    def handed(self, worker: int) -> None:
        self.open[worker] += 1
        self._last = worker

    def closed(self, worker: int, count: int = 1) -> None:
        self.open[worker] = max(0, self.open[worker] - count)


class Dispatcher:
    """The parent's accept loop: call :meth:`poll` repeatedly (it also returns on signals)."""

    def __init__(self, listener: socket.socket, workers: int):
        listener.setblocking(False)
        self.listener: socket.socket | None = listener
        self.balancer = Balancer(workers)
        self.channels: dict[int, socket.socket] = {}
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, None)

    def attach(self, worker: int, end: socket.socket) -> None:
        end.setblocking(False)
        self.detach(worker)
        self.channels[worker] = end
        self.selector.register(end, selectors.EVENT_READ, worker)
        self.balancer.up(worker)

    def detach(self, worker: int) -> None:
        end = self.channels.pop(worker, None)
        if end is not None:
            self.selector.unregister(end)
            end.close()
        self.balancer.down(worker)

    def stop_accepting(self) -> None:
        if self.listener is not None:
            self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None

    def close(self) -> None:
        self.stop_accepting()
        for worker in list(self.channels):
            self.detach(worker)
        self.selector.close()

    def forget(self) -> None:
        """In a forked worker: close the inherited copies. Not :meth:`close`: the epoll instance is shared with the
        parent, and unregistering here would stop the parent's accept loop."""
        self.selector.close()  # the worker's reference to the epoll instance only; no epoll_ctl
        for sock in (self.listener, *self.channels.values()):
            if sock is not None:
                sock.close()

    def poll(self, timeout: float) -> None:
        events = self.selector.select(timeout)
        for key, _ in events:  # close reports and dead workers first, so the hand-offs below know of them
            if key.data is not None:
                self._read_closes(key.data)
        if any(key.data is None for key, _ in events):
            self._accept()

    def _accept(self) -> None:
        while self.listener is not None:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. EMFILE: leave the rest in the backlog; pause so as not to spin on it
                log.error("accept failed: %s", e)
                time.sleep(0.1)
                return
            with conn:
                self._hand(conn)

    def _hand(self, conn: socket.socket) -> None:
        tried: set[int] = set()
        while (worker := self.balancer.pick(frozenset(tried))) is not None:
            try:
                socket.send_fds(self.channels[worker], [_SOCKET], [conn.fileno()])
            except BlockingIOError:  # that worker is not reading: try another one
                tried.add(worker)
                continue
            except OSError:  # the worker is gone; it is restarted when reaped
                self.detach(worker)
                continue
            self.balancer.handed(worker)
            return
        log.error("no worker could take a new connection; closed it")

    def _read_closes(self, worker: int) -> None:
        end = self.channels[worker]
        count = 0
        while True:
            try:
                msg = end.recv(16)
            except BlockingIOError:
                break
            except OSError:
                msg = b""
            if not msg:  # the worker closed its end: it is stopping or dead
                self.detach(worker)
                return
            count += msg == _CLOSED
        self.balancer.closed(worker, count)


class Inbox:
    """The worker's end: adopt each socket the parent sends; report each closed connection."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, protocol_factory: Callable[[], asyncio.Protocol],
                 on_parent_gone: Callable[[], None]):
        self.end = socket.socket(fileno=fd)
        self.end.setblocking(False)
        self.loop = loop
        self.protocol_factory = protocol_factory
        self.on_parent_gone = on_parent_gone
        self._adopting: set[asyncio.Task] = set()
        loop.add_reader(fd, self._receive)

    def _receive(self) -> None:
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(self.end, 16, 1)
            except BlockingIOError:
                return
            except OSError:
                msg, fds = b"", []
            if not msg and not fds:
                log.warning("the parent process is gone: no new connections; finishing")
                self.close()
                self.on_parent_gone()
                return
            if not fds:  # the descriptor did not fit (out of descriptors): the kernel closed it; keep the count right
                self.report_closed()
            for fd in fds:
                task = self.loop.create_task(self._adopt(socket.socket(fileno=fd)))
                self._adopting.add(task)
                task.add_done_callback(self._adopting.discard)

    async def _adopt(self, sock: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.protocol_factory, sock)
        except OSError as e:  # the client left before we got to it
            log.info("could not adopt a client connection: %s", e)
            sock.close()
            self.report_closed()

    def report_closed(self) -> None:
        """Called once per adopted connection when it ends (the protocol's connection_lost)."""
        if self.end.fileno() < 0:
            return
        try:
            self.end.send(_CLOSED)
        except OSError:  # parent gone or channel full: the count only steers new connections
            pass

    def close(self) -> None:
        if self.end.fileno() >= 0:
            self.loop.remove_reader(self.end.fileno())
            self.end.close()
