"""``mdriver-proxy``: serve the sharded layout of a config as one MySQL database."""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import logging
import signal
import socket
import sys
import time

DESCRIPTION = """\
Serve the logical schemas of an mdriver config over the MySQL protocol, so any
MySQL client (the mariadb CLI, JDBC, Node, Go, PyMySQL ...) sees one database
while statements are routed to the physical shards.

Clients log in with the users of the config's proxy.users section; backend
credentials come from datasources and are never shown to clients.
The config is reloaded when it changes (a file is polled every second, etcd
is watched); an invalid version is refused and the running config kept.
SIGHUP re-reads it at once. SIGTERM/SIGINT stop accepting connections and let
running statements finish (--shutdown-timeout).

It runs on CPython 3.10+ (with uvloop if installed) and on PyPy 3.9+, whose
JIT serves single-shard statements with much less CPU once warm; scatter-heavy
traffic is faster on CPython (README, Performance).
"""

EPILOG = """\
examples:
  mdriver-proxy --config config/sharding.yaml
  mdriver-proxy --config config/sharding.yaml --listen 0.0.0.0:3307
  mdriver-proxy --config etcd://127.0.0.1:2379/mdriver
  .venv-pypy/bin/mdriver-proxy --config config/sharding.yaml --workers 2   # on PyPy, one worker per core
"""


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:3307")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mdriver-proxy", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, metavar="FILE",
                   help="config file (YAML) or etcd://host:port/prefix; see config/sharding.yaml")
    p.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default: proxy.listen of the config)")
    p.add_argument("--auth-plugin", choices=("mysql_native_password", "caching_sha2_password"), default="mysql_native_password",
                   help="authentication plugin offered in the handshake (both are accepted; default %(default)s)")
    p.add_argument("--config-cache", metavar="FILE",
                   help="keep the last good config here and start from it when the config source is unreachable")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, how long running statements may take to finish (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes; this process accepts and hands each connection to the worker with the "
                        "fewest open ones; each worker has its own backend pools, "
                        "so a datasource may get up to N x max_connections connections; worker i serves metrics on "
                        "the metrics port + i (default %(default)s)")
    p.add_argument("--backend-statements", type=int, default=1024, metavar="N",
                   help="a client's prepared statement that lands on one shard runs as a prepared statement on the "
                        "backend; each backend connection keeps at most N of them, and all connections to a server "
                        "at most half its max_prepared_stmt_count; 0 runs every statement as text (default %(default)s)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="default %(default)s")
    p.add_argument("--no-uvloop", action="store_true", help="use the standard asyncio event loop even if uvloop is installed")
    return p


def _runtime(loop) -> str:
    """The interpreter and event loop, which decide most of the proxy's CPU per statement."""
    impl = sys.implementation
    name = "PyPy" if impl.name == "pypy" else "CPython"
    v = impl.version if impl.name == "pypy" else sys.version_info
    kind = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
    return f"{name} {v.major}.{v.minor}.{v.micro}, {kind}"


def _load(source: str):
    from mdriver.config import ConfigError, ConfigSourceError, load_config

    try:
        return load_config(source), None
    except (ConfigSourceError, ConfigError) as e:
        return None, str(e)


async def _serve(config, args, listen, worker: int = 0, handoff_fd: int | None = None) -> int:
    from mdriver.config.watch import ConfigWatcher
    from proxy.server import ProxyServer, ServerOptions

    loop = asyncio.get_running_loop()
    # Hot reload: the watcher polls a file or watches etcd; an invalid version keeps the running one.
    hooks: dict = {}  # filled once the server exists
    watcher = ConfigWatcher(args.config, cache_path=args.config_cache,
                            on_reject=lambda revision, problem: hooks["reject"](revision, problem) if "reject" in hooks else None)
    try:
        watcher.start()
        config = watcher.current
    except Exception as e:  # noqa: BLE001 - the source changed between the check in main() and now
        print(f"mdriver-proxy: invalid config: {e}", file=sys.stderr)
        return 2
    options = ServerOptions(listen_host=listen[0] if listen else None, listen_port=listen[1] if listen else None,
                            auth_plugin=args.auth_plugin, worker=worker, handoff_fd=handoff_fd,
                            backend_statements=max(args.backend_statements, 0))
    server = ProxyServer(config, options, loop)
    stop = asyncio.Event()
    server.parent_gone = stop.set
    try:
        await server.start()
    except OSError as e:
        what = e.strerror or str(e)
        if not what.startswith("cannot serve metrics"):
            what = f"cannot listen on {server.listen_host}:{server.listen_port}: {what}"
        print(f"mdriver-proxy: {what}", file=sys.stderr)
        server.pools.close()
        watcher.stop()
        return 1
    log = logging.getLogger("mdriver.proxy")

    def refused(revision: str, problem: str) -> None:
        server.reload_errors += 1
        server.metrics.config_errors += 1
        log.error("config reload refused, keeping revision %s: %s", server.config.revision, problem)

    watcher.add_listener(lambda new, old: server.reload(new), loop=loop)
    # etcd: register under <prefix>/clients/ and acknowledge revisions (the migrator's write fence waits for them)
    from mdriver.config.clients import ClientRegistration

    registration = ClientRegistration.for_source(args.config, "proxy", revision=config.revision)
    if registration is not None:
        registration.start()
        server.acknowledge = registration.ack
    hooks["reject"] = lambda revision, problem: loop.call_soon_threadsafe(refused, revision, problem)

    def reload() -> None:  # SIGHUP: re-read now instead of at the next poll
        new, problem = _load(args.config)
        if problem is not None:
            refused("?", problem)
        else:
            server.reload(new)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    who = f", worker {worker}" if args.workers > 1 else ""
    print(f"mdriver-proxy listening on {server.listen_host}:{server.listen_port} ({_runtime(loop)}{who})", file=sys.stderr, flush=True)
    await stop.wait()
    logging.getLogger("mdriver.proxy").info("shutting down (up to %g s for running statements)", args.shutdown_timeout)
    await server.shutdown(args.shutdown_timeout)
    watcher.stop()
    if registration is not None:
        registration.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    listen = None
    if args.listen:
        try:
            listen = parse_listen(args.listen)
        except ValueError as e:
            print(f"mdriver-proxy: {e}", file=sys.stderr)
            return 2
    config, problem = _load(args.config)
    if problem is not None:
        print(f"mdriver-proxy: invalid config: {problem}", file=sys.stderr)
        return 2
    if not config.proxy.users:
        print(f"mdriver-proxy: {args.config}: proxy.users is empty; no client could log in", file=sys.stderr)
        return 2
    if hasattr(gc, "freeze"):  # CPython; PyPy's collector needs no tuning
        # Many short-lived objects per statement: collect the young generation less often.
        gc.set_threshold(50_000, 20, 20)
        gc.freeze()
    run = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            pass
    if args.workers > 1:
        return _run_workers(config, args, listen, run)
    try:
        return run(_serve(config, args, listen))
    except KeyboardInterrupt:
        return 130


def _run_workers(config, args, listen, run) -> int:
    """Fork workers; accept here and hand each connection to the least busy one; forward signals; restart a dead worker."""
    from proxy.handoff import Dispatcher, channel

    log = logging.getLogger("mdriver.proxy")
    host, port = listen or (config.proxy.listen_host, config.proxy.listen_port)
    try:
        listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=1024)
    except OSError as e:
        print(f"mdriver-proxy: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 1
    listen = (host, listener.getsockname()[1])  # port 0: the workers name the real one
    dispatcher = Dispatcher(listener, args.workers)
    children: dict[int, tuple[int, float]] = {}
    stopping = False

    def spawn(i: int) -> None:
        parent_end, worker_end = channel()
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            parent_end.close()
            dispatcher.forget()
            try:
                code = run(_serve(config, args, listen, worker=i, handoff_fd=worker_end.detach()))
            except KeyboardInterrupt:
                code = 130
            os._exit(code)
        worker_end.close()
        dispatcher.attach(i, parent_end)
        children[pid] = (i, time.monotonic())

    def forward(signum, frame) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for i in range(args.workers):
        spawn(i)
    status = 0
    while children:
        if stopping:
            dispatcher.stop_accepting()
        dispatcher.poll(0.2)
        while children:
            try:
                pid, code = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            i, started = children.pop(pid, (None, 0.0))
            if i is None:
                continue
            dispatcher.detach(i)
            if stopping:
                continue
            if time.monotonic() - started < 2.0:
                log.error("worker %d failed at startup (status %d); stopping", i, code)
                status = 1
                forward(signal.SIGTERM, None)
                continue
            log.error("worker %d exited unexpectedly (status %d); restarting it", i, code)
            spawn(i)
    dispatcher.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
