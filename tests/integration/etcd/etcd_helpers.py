"""Test helpers for the config-center tests: config texts and a TCP relay.

The relay sits between a client and the real etcd so a test can cut the
network (connections reset, new ones refused) and restore it, or point it at
another etcd, without stopping the shared server.
"""
from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

from mdriver.sandbox.cluster import free_port

ROOT = Path(__file__).resolve().parents[3]
BASE_TEXT = (ROOT / "config" / "sharding.yaml").read_text(encoding="utf-8")


def variant(max_offset: int, text: str = BASE_TEXT) -> str:
    """The default config with another ``router.max_offset``: a valid new version that is easy to tell apart."""
    assert "max_offset: 100000" in text
    return text.replace("max_offset: 100000", f"max_offset: {max_offset}")


class Relay:
    """A TCP forwarder on a fixed local port to ``target`` (host, port)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.accepted = 0  # connections relayed so far
        self.restore()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Reset every relayed connection (RST) and refuse new ones until ``restore``."""
        with self._lock:
            if self._listener is not None:
                try:
                    self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
                except OSError:
                    pass
                self._listener.close()
                self._listener = None
            conns, self._conns = self._conns, []
        for conn in conns:
            try:  # reset, not a graceful close: nothing lingers on the port, as when a network drops
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RD)  # wakes the pump blocked in recv(); sends nothing
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut while this one was connecting
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
