"""The parent's choice of worker for --workers, and the descriptor channel it uses."""
from __future__ import annotations

import socket

from proxy.handoff import Balancer, Dispatcher, channel


def test_fewest_open_wins_and_ties_go_round_robin():
    b = Balancer(3)
    for i in range(3):
        b.up(i)
    picks = []
    for _ in range(6):
        w = b.pick()
        b.handed(w)
        picks.append(w)
    assert picks == [0, 1, 2, 0, 1, 2]
    b.closed(1, 2)  # worker 1 has 0 open now, the others 2
    assert b.pick() == 1


def test_dead_and_excluded_workers_are_skipped():
    b = Balancer(2)
    b.up(0)
    assert b.pick() == 0
    assert b.pick(frozenset({0})) is None
    b.up(1)
    b.handed(1)
    b.down(1)
    assert b.pick() == 0
    b.up(1)  # a restarted worker starts from zero
    assert b.open[1] == 0


def test_closed_never_goes_below_zero():
    b = Balancer(1)
    b.up(0)
    b.closed(0, 5)
    assert b.open == [0]


def test_accepted_sockets_reach_the_least_busy_worker_and_closes_are_counted():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    d = Dispatcher(listener, 2)
    ends = []
    for i in range(2):
        parent, worker = channel()
        d.attach(i, parent)
        ends.append(worker)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        received = {0: [], 1: []}
        while sum(map(len, received.values())) < 3:
            d.poll(1.0)
            for i, end in enumerate(ends):
                end.setblocking(False)
                try:
                    msg, fds, _, _ = socket.recv_fds(end, 16, 1)
                except BlockingIOError:
                    continue
                received[i] += [socket.socket(fileno=fd) for fd in fds]
        assert [len(v) for v in received.values()] == [2, 1]
        # the handed descriptor is the client's connection: bytes go through
        received[1][0].sendall(b"hello")
        assert clients[1].recv(5) == b"hello"
        ends[0].send(b"c")
        ends[0].send(b"c")
        d.poll(0.5)
        assert d.balancer.open == [0, 1]
        ends[1].close()  # a worker that goes away is no longer chosen
        d.poll(0.5)
        assert d.balancer.alive == [True, False]
        for s in received[0] + received[1]:
            s.close()
    finally:
        for c in clients:
            c.close()
        for e in ends:
            e.close()
        d.close()


def test_a_worker_that_died_is_skipped_even_when_a_client_came_first():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    d = Dispatcher(listener, 2)
    (p0, w0), (p1, w1) = channel(), channel()
    d.attach(0, p0)
    d.attach(1, p1)
    client = socket.create_connection(("127.0.0.1", port))
    w0.close()  # worker 0 is gone: its channel is readable (EOF) in the same select as the new client, and later
    try:
        d.poll(1.0)
        d.poll(0.2)
        assert d.balancer.alive == [False, True] and d.balancer.open == [0, 1]
        _, fds, _, _ = socket.recv_fds(w1, 16, 1)
        assert len(fds) == 1
        socket.socket(fileno=fds[0]).close()
    finally:
        client.close()
        w1.close()
        d.close()
