"""A real ProxyServer on its own event loop in a thread, so tests use ordinary blocking clients.

Its own module (not conftest) so test modules can import it by a unique name.
"""
from __future__ import annotations

import asyncio
import threading

import pymysql

from proxy.server import ProxyServer, ServerOptions

USER, PASSWORD = "app", "app-secret"


class RunningProxy:
    def __init__(self, config, options: ServerOptions | None = None):
        self.config = config
        self.loop = self._new_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="proxy-loop", daemon=True)
        self.thread.start()
        self.server: ProxyServer = self.call(self._create, options or ServerOptions(recovery_interval=0))
        self.host = self.server.listen_host
        self.port = self.server.listen_port

    @staticmethod
    def _new_loop():
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            return asyncio.new_event_loop()

    async def _create(self, options):
        server = ProxyServer(self.config, options, asyncio.get_running_loop())
        await server.start()
        return server

    def call(self, fn, *args, timeout: float = 60):
        """Run ``fn(*args)`` (a coroutine function or a plain one) on the proxy's loop."""
        async def run():
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def connect(self, user: str = USER, password: str = PASSWORD, database: str | None = "app", **kw) -> pymysql.connections.Connection:
        kw.setdefault("connect_timeout", 10)
        kw.setdefault("read_timeout", 60)
        return pymysql.connect(host=self.host, port=self.port, user=user, password=password, database=database, **kw)

    def stop(self, timeout: float = 10.0) -> None:
        try:
            self.call(self.server.shutdown, timeout, timeout=timeout + 30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
