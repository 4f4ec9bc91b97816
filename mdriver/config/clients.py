"""Live processes and the config revision each has applied, under etcd leases.

Each driver and proxy process registers ``<prefix>/clients/<id>`` (JSON: id,
kind, host, pid, applied revision, start time) attached to a lease that a
background thread keeps alive. A process that dies or freezes stops refreshing
its lease and its key disappears after ``ttl`` seconds.

Usage::

    registration = ClientRegistration(source, "proxy").start()
    watcher.add_listener(lambda new, old: registration.ack(new.revision))
    ...
    registration.stop()              # revokes the lease: the key goes at once

The acknowledgement contract: ``ack(R)`` promises that this process will run
no statement on a config older than R from now on. A driver or proxy that lets
open transactions finish on their own version acknowledges R only once those
transactions have ended. The migrator's write fence relies on it:
:func:`wait_for_ack` returns when every live client has acknowledged the fence
revision, and a client that doesn't blocks the fence until its lease expires.

Threading: ``ack`` never blocks on etcd; the registration thread writes the
newest acknowledged revision, re-registering with a new lease if etcd lost the
old one (for example after etcd was down for longer than ``ttl``).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from mdriver.config.etcd import EtcdSource
from mdriver.config.sources import ConfigSource, ConfigSourceError, open_source

log = logging.getLogger(__name__)

DEFAULT_TTL = 10


class AckTimeoutError(ConfigSourceError):
    """Some live clients did not acknowledge a revision in time; ``laggards`` lists them."""

    def __init__(self, message: str, laggards: list["ClientInfo"]):
        super().__init__(message)
        self.laggards = laggards


@dataclass(frozen=True)
class ClientInfo:
    id: str
    kind: str
    host: str
    pid: int
    revision: str  # the config revision it has applied ("" if none yet)
    started: float
    lease: int
    valid: bool = True  # False when the key's value could not be read (treated as not acknowledged)

    def describe(self) -> str:
        at = f"revision {self.revision}" if self.revision else "no revision"
        return f"{self.kind} {self.id} (host {self.host}, pid {self.pid}, at {at})"

    def has_applied(self, revision: int) -> bool:
        return self.valid and self.revision.isdigit() and int(self.revision) >= revision


def _as_etcd(source: str | ConfigSource) -> EtcdSource:
    src = open_source(source) if isinstance(source, str) else source
    if not isinstance(src, EtcdSource):
        raise ConfigSourceError(f"{src.url}: client registration needs an etcd source (etcd://host:port/prefix)")
    return src


class ClientRegistration:
    """This process's entry under ``<prefix>/clients/``, kept alive by a daemon thread."""

    def __init__(self, source: str | ConfigSource, kind: str, *, ttl: int = DEFAULT_TTL, client_id: str | None = None,
                 revision: str = "", retry_interval: float = 1.0):
        if not kind or "/" in kind:
            raise ValueError(f"client kind must be a non-empty word like 'driver' or 'proxy', got {kind!r}")
        if ttl < 2:
            raise ValueError("ttl must be at least 2 seconds (etcd's minimum lease)")
        self._source = _as_etcd(source).clone()
        self.kind = kind
        self.ttl = int(ttl)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = client_id or f"{kind}-{self.host}-{self.pid}-{secrets.token_hex(3)}"
        if "/" in self.id:
            raise ValueError(f"client id must not contain '/': {self.id!r}")
        self.key = self._source.key("clients", self.id)
        self.started = time.time()
        self.retry_interval = retry_interval
        self._revision = str(revision or "")
        self._written: str | None = None  # the revision last stored in etcd under the current lease
        self._lease: int | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._written_cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    @classmethod
    def for_source(cls, source: str | ConfigSource, kind: str, **kwargs: object) -> "ClientRegistration | None":
        """A registration for etcd sources, None for files (nothing to register with)."""
        src = open_source(source) if isinstance(source, str) else source
        return cls(src, kind, **kwargs) if isinstance(src, EtcdSource) else None  # type: ignore[arg-type]

    @property
    def registered(self) -> bool:
        """True when etcd holds our key with the newest acknowledged revision."""
        return self._lease is not None and self._written == self._revision

    @property
    def revision(self) -> str:
        return self._revision

    def start(self) -> "ClientRegistration":
        """Register now if etcd is reachable; otherwise keep trying in the background."""
        if self._thread is not None:
            raise RuntimeError("ClientRegistration already started")
        try:
            self._register()
        except ConfigSourceError as e:
            self.last_error = str(e)
            log.warning("cannot register %s in etcd yet (%s); retrying in the background", self.id, e)
        self._thread = threading.Thread(target=self._run, name=f"mdriver-client-registration {self.id}", daemon=True)
        self._thread.start()
        return self

    def ack(self, revision: str) -> None:
        """Record that this process now runs on ``revision`` (see the module docstring). Never blocks."""
        self._revision = str(revision)
        self._wake.set()

    def wait_registered(self, timeout: float) -> bool:
        """Block until etcd holds the newest acknowledged revision (for tests and orderly starts)."""
        with self._written_cond:
            return self._written_cond.wait_for(lambda: self.registered, timeout)

    def stop(self, *, revoke: bool = True, timeout: float = 5.0) -> None:
        """Stop refreshing; with ``revoke`` the key disappears at once, else when the lease expires."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if revoke and self._lease is not None:
            try:
                self._source.revoke(self._lease)
            except ConfigSourceError as e:
                log.warning("cannot revoke lease of %s (%s); it expires in %d s", self.id, e, self.ttl)
            self._lease = None

    def __enter__(self) -> "ClientRegistration":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _value(self, revision: str) -> str:
        return json.dumps({"id": self.id, "kind": self.kind, "host": self.host, "pid": self.pid,
                           "revision": revision, "started": self.started})

    def _register(self) -> None:
        if self._lease is None:
            self._lease = self._source.grant(self.ttl)
            self._written = None
        revision = self._revision
        if self._written != revision:
            self._source.put(self.key, self._value(revision), lease=self._lease)
            with self._written_cond:
                self._written = revision
                self._written_cond.notify_all()
            if self.last_error:
                log.info("client %s registered again in etcd", self.id)
            self.last_error = None

    def _run(self) -> None:
        interval = max(self.ttl / 3.0, 0.5)
        next_keepalive = time.monotonic() + interval
        while not self._stop.is_set():
            try:
                self._register()
                if time.monotonic() >= next_keepalive:
                    if self._source.keepalive(self._lease or 0) <= 0:
                        log.warning("lease of client %s expired; registering again", self.id)
                        self._lease = None
                        continue
                    next_keepalive = time.monotonic() + interval
                wait = max(0.0, next_keepalive - time.monotonic())
            except ConfigSourceError as e:
                if self.last_error is None:
                    log.warning("client %s cannot reach etcd: %s", self.id, e)
                self.last_error = str(e)
                wait = self.retry_interval
            except Exception as e:  # noqa: BLE001 - a dead thread would block every write fence until restart
                log.exception("client %s: registration failed unexpectedly; retrying", self.id)
                self.last_error = repr(e)
                wait = self.retry_interval
            self._wake.wait(wait)
            self._wake.clear()


def list_clients(source: str | ConfigSource) -> list[ClientInfo]:
    """Every live registered client (their leases have not expired), sorted by id."""
    src = _as_etcd(source)
    clients = []
    for key, value, meta in src.get_prefix("clients"):
        client_id = key.rsplit("/", 1)[-1]
        lease = int(meta.get("lease", 0))
        try:
            data = json.loads(value)
            clients.append(ClientInfo(client_id, str(data["kind"]), str(data["host"]), int(data["pid"]),
                                      str(data.get("revision") or ""), float(data.get("started", 0.0)), lease))
        except (ValueError, KeyError, TypeError):
            clients.append(ClientInfo(client_id, "?", "?", 0, "", 0.0, lease, valid=False))
    return sorted(clients, key=lambda c: c.id)


def wait_for_ack(source: str | ConfigSource, revision: str | int, timeout: float, *, poll_interval: float = 0.1) -> list[ClientInfo]:
    """Wait until every live client has applied ``revision`` or later; returns them.

    A client that neither acknowledges nor dies blocks until its lease expires.
    Raises AckTimeoutError naming the laggards (or saying etcd was unreachable)
    after ``timeout`` seconds: the fence fails closed.
    """
    src = _as_etcd(source)
    try:
        target = int(revision)
    except (TypeError, ValueError):
        raise ConfigSourceError(f"{revision!r} is not an etcd revision") from None
    deadline = time.monotonic() + timeout
    last_error = None
    laggards: list[ClientInfo] = []
    while True:
        try:
            clients = list_clients(src)
            last_error = None
            laggards = [c for c in clients if not c.has_applied(target)]
            if not laggards:
                return clients
        except ConfigSourceError as e:
            last_error = str(e)
        if time.monotonic() >= deadline:
            break
        time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))
    if last_error is not None:
        raise AckTimeoutError(f"could not confirm that clients applied revision {target} within {timeout:g} s: {last_error}", laggards)
    names = "; ".join(c.describe() for c in laggards)
    raise AckTimeoutError(
        f"{len(laggards)} live client(s) did not apply revision {target} within {timeout:g} s: {names} "
        "(a client that has died disappears when its lease expires)", laggards)
