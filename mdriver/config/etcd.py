"""Config kept in etcd (``etcd://host:port[,host:port...]/prefix``).

Keys under the prefix:

- ``<prefix>/config``: the YAML document. Its etcd ``mod_revision`` is the
  config revision every process reports, so revisions are ordered integers.
- ``<prefix>/history/<n>``: one JSON entry per published version (text, author,
  time, message), written in the same transaction as the config, so history and
  ``rollback`` work after etcd compacts its own revisions. The entry's
  ``mod_revision`` equals the config revision it produced.
- ``<prefix>/clients/<id>``: live processes, see :mod:`mdriver.config.clients`.

Writes are compare-and-swap on the config key's ``mod_revision``: a writer that
read revision R can only replace R, so two operators cannot overwrite each
other; the loser gets :class:`ConflictError` naming who won.

One ``EtcdSource`` holds one HTTP session; it is not shared between threads.
Use :meth:`EtcdSource.clone` to give a background thread its own.
Every request is bounded by ``timeout`` (``?timeout=SECONDS`` in the URL).

A production etcd runs with TLS and authentication: ``?tls=1`` (or ``ca=``,
``cert=`` and ``key=`` file paths) speaks HTTPS, and ``etcd://USER@host...``
logs in as USER with the password from ``MDRIVER_ETCD_PASSWORD``. A password
is never taken from the URL, since URLs end up in process lists and logs.
The token etcd hands out expires; an expired one is renewed and the request
sent again.
"""
from __future__ import annotations

import base64
import getpass
import json
import logging
import os
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Iterator

import requests

from mdriver.config.sources import ConfigSourceError, ConflictError, Snapshot, parse_yaml

log = logging.getLogger(__name__)

DEFAULT_PORT = 2379
DEFAULT_TIMEOUT = 5.0
PASSWORD_ENV = "MDRIVER_ETCD_PASSWORD"
_EXPIRED_TOKEN = ("invalid auth token", "auth token is not found")
_NEEDS_LOGIN = "user name is empty"
HISTORY_KEEP = 500  # history entries kept per prefix; older ones are pruned on push
_WRITE_ATTEMPTS = 3


class ConfigNotFoundError(ConfigSourceError):
    """The prefix holds no config yet (nothing pushed, or the key was deleted)."""


class CompactedError(ConfigSourceError):
    """A watch or read asked for a revision etcd has compacted away; re-read everything."""

    def __init__(self, message: str, compact_revision: int):
        super().__init__(message)
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class RawVersion:
    """The config key's bytes at one revision, before any parsing (may be corrupt)."""

    text: str
    revision: int


@dataclass(frozen=True)
class HistoryEntry:
    """One published version, as recorded by ``write``."""

    number: int
    revision: str
    text: str
    author: str = ""
    time: float = 0.0
    message: str = ""
    previous: str = ""  # the revision it replaced ("" for the first push)


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "put" | "delete"
    revision: int
    text: str | None


@dataclass(frozen=True)
class WatchBatch:
    """One message of a watch stream: the creation ack (no events) or some events."""

    header_revision: int
    events: tuple[WatchEvent, ...] = ()
    created: bool = False


def _b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _unb64(data: str | None) -> bytes:
    return base64.b64decode(data or "")


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def _prefix_end(prefix: str) -> str:
    """The smallest key after every key starting with ``prefix`` (etcd range_end)."""
    raw = bytearray(prefix.encode("utf-8"))
    raw[-1] += 1
    return _b64(bytes(raw))


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)|\w+Error\(-?\d+, '([^']+)'\)")


def _reason(exc: BaseException) -> str:
    """A short reason for a connection failure instead of requests' nested repr."""
    text = getattr(exc, "detail_text", None) or str(exc)
    m = _ERRNO.search(text)
    if m:
        return (m.group(1) or m.group(2)).strip().lower()
    if "timed out" in text.lower():
        return "timed out"
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _etcd_error(detail: str | None) -> str:
    """The message etcd put in an error body (``{"error": ..., "message": ...}``)."""
    try:
        body = json.loads(detail or "")
    except ValueError:
        return (detail or "").strip()[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:200]
    return str(body)[:200]


@dataclass(frozen=True)
class EtcdAccess:
    """How to talk to etcd beyond host and port: TLS files and the user to log in as."""

    tls: bool = False
    ca: str | None = None  # CA bundle that signed etcd's certificate (None: the system's)
    cert: str | None = None  # client certificate, for etcd's --client-cert-auth
    key: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def parse_url(url: str, environ: dict | None = None) -> tuple[tuple[tuple[str, int], ...], str, float, EtcdAccess]:
    """``etcd://[user@]h1:2379,h2:2379/prefix?timeout=5&tls=1&ca=...`` -> (endpoints, prefix, timeout, access).

    The password of ``user`` comes from ``MDRIVER_ETCD_PASSWORD`` in ``environ`` (default: the process environment).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "etcd":
        raise ConfigSourceError(f"{url}: not an etcd URL (expected etcd://host:port/prefix)")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        raise ConfigSourceError(f"etcd URL of {hosts}: put the password in {PASSWORD_ENV}, not in the URL "
                                "(URLs show up in process lists and logs)")
    user = urllib.parse.unquote(userinfo) if at else None
    if at and not user:
        raise ConfigSourceError(f"{url}: empty etcd user name before '@'")
    endpoints = []
    for item in hosts.split(","):
        item = item.strip()
        m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", item)
        if not item or not m:
            raise ConfigSourceError(f"{url}: bad etcd endpoint {item!r} (expected host:port)")
        host = m.group(1) or m.group(3)
        port = int(m.group(2) or m.group(4) or DEFAULT_PORT)
        if not 0 < port < 65536:
            raise ConfigSourceError(f"{url}: bad etcd port {port}")
        endpoints.append((host, port))
    prefix = parts.path.rstrip("/")
    if not prefix:
        raise ConfigSourceError(f"{url}: missing key prefix (expected etcd://host:port/prefix, e.g. etcd://127.0.0.1:2379/mdriver)")
    timeout = DEFAULT_TIMEOUT
    tls = None
    files: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key == "timeout":
            try:
                timeout = float(value)
            except ValueError:
                raise ConfigSourceError(f"{url}: timeout must be a number of seconds, got {value!r}") from None
            if not 0 < timeout <= 300:
                raise ConfigSourceError(f"{url}: timeout must be in (0, 300] seconds, got {value}")
        elif key == "tls":
            tls = _FLAGS.get(value.lower())
            if tls is None:
                raise ConfigSourceError(f"{url}: tls must be 1 or 0, got {value!r}")
        elif key in ("ca", "cert", "key"):
            if not os.path.isfile(value):
                raise ConfigSourceError(f"{url}: {key} file {value!r} does not exist")
            files[key] = value
        else:
            raise ConfigSourceError(f"{url}: unknown option {key!r} (allowed: timeout, tls, ca, cert, key)")
    if ("cert" in files) != ("key" in files):
        raise ConfigSourceError(f"{url}: a client certificate needs both cert= and key=")
    if tls is False and files:
        raise ConfigSourceError(f"{url}: tls=0 contradicts {', '.join(sorted(files))}=")
    password = None
    if user is not None:
        password = (os.environ if environ is None else environ).get(PASSWORD_ENV)
        if not password:
            raise ConfigSourceError(f"{url}: etcd user {user!r} needs its password in the environment variable {PASSWORD_ENV}")
    access = EtcdAccess(bool(tls) or bool(files), files.get("ca"), files.get("cert"), files.get("key"), user, password)
    return tuple(endpoints), prefix, timeout, access


def _revision_number(revision: str | int | None, what: str) -> int:
    if revision is None or revision == "":
        return 0
    try:
        value = int(revision)
    except (TypeError, ValueError):
        raise ConfigSourceError(f"{what} {revision!r} is not an etcd revision (a positive integer)") from None
    if value < 0:
        raise ConfigSourceError(f"{what} {revision!r} is not an etcd revision (a positive integer)")
    return value


class _Session(requests.Session):
    """An HTTP session whose own CA file wins over ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` in the environment."""

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


# A TLS handshake refused for want of a client certificate: CPython's ssl says one of the first two, PyPy's the last.
_NO_CLIENT_CERT = ("eof occurred", "certificate required", "bad certificate")
# how plain HTTP to a TLS port fails: etcd answers 400 and closes, which the client sees as one or the other
_PLAIN_TO_TLS = ("remote end closed", "connection reset")


class EtcdSource:
    """The config source protocol (``url``, ``read``, ``write``) over etcd's v3 JSON gateway."""

    def __init__(self, endpoints: tuple[tuple[str, int], ...], prefix: str, *, timeout: float = DEFAULT_TIMEOUT, url: str | None = None,
                 access: EtcdAccess = EtcdAccess()):
        import etcd3gw  # optional dependency: mdriver[etcd]

        self._etcd3gw = etcd3gw
        self.endpoints = tuple(endpoints)
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self.access = access
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.endpoints)
        self.url = url or f"etcd://{hosts}{self.prefix}"
        self._clients: dict[int, Any] = {}
        self._active = 0

    @classmethod
    def from_url(cls, url: str) -> "EtcdSource":
        endpoints, prefix, timeout, access = parse_url(url)
        try:
            return cls(endpoints, prefix, timeout=timeout, url=url, access=access)
        except ImportError:
            raise ConfigSourceError(f"{url}: etcd support needs the etcd3gw package (pip install 'mdriver[etcd]')") from None

    def clone(self) -> "EtcdSource":
        """The same source with its own connections, for use from another thread."""
        return EtcdSource(self.endpoints, self.prefix, timeout=self.timeout, url=self.url, access=self.access)

    def key(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    @property
    def config_key(self) -> str:
        return self.key("config")

    def history_key(self, number: int) -> str:
        return self.key("history", f"{number:010d}")

    def describe(self) -> str:
        return ", ".join(f"{h}:{p}" for h, p in self.endpoints)

    # -- transport ---------------------------------------------------------

    def _client(self, index: int) -> Any:
        """The HTTP client of one endpoint, logged in if a user is set (ConnectionFailedError if unreachable)."""
        client = self._clients.get(index)
        if client is None:
            host, port = self.endpoints[index]
            a = self.access
            session = _Session()
            if a.ca:
                session.verify = a.ca
            if a.cert:
                session.cert = (a.cert, a.key)
            client = self._etcd3gw.client(host=host, port=port, timeout=self.timeout, api_path="/v3/", protocol=a.scheme)
            client.session = session  # not an argument: etcd3gw 2.5, the last release for Python 3.9, has none
            if a.user is not None:
                self._log_in(client, index)
            self._clients[index] = client
        return client

    def _log_in(self, client: Any, index: int) -> None:
        """Get a token for the user and send it with every request of this client."""
        client.session.headers.pop("Authorization", None)
        body = {"name": self.access.user, "password": self.access.password}
        exc_mod = self._etcd3gw.exceptions
        try:
            token = client.post(client.get_url("auth/authenticate"), json=body).get("token")
        except (exc_mod.ConnectionFailedError, exc_mod.ConnectionTimeoutError):
            raise  # the caller tries the next endpoint
        except exc_mod.Etcd3Exception as e:
            host, port = self.endpoints[index]
            raise ConfigSourceError(f"etcd {host}:{port}: logging in as {self.access.user!r} failed: {_etcd_error(e.detail_text)}") from None
        if not token:
            host, port = self.endpoints[index]
            raise ConfigSourceError(f"etcd {host}:{port}: logging in as {self.access.user!r} gave no token (is authentication enabled?)")
        client.session.headers["Authorization"] = token

    def expired(self, index: int, message: str) -> bool:
        """Whether ``message`` says this endpoint's token expired; if so, log in again."""
        if self.access.user is None or not any(m in message for m in _EXPIRED_TOKEN):
            return False
        self._log_in(self._clients[index], index)
        return True

    def _failure(self, index: int, exc: BaseException) -> str:
        """``host:port reason`` of an endpoint that could not be reached, with a hint for TLS mismatches."""
        host, port = self.endpoints[index]
        reason = _reason(exc)
        low = reason.lower()
        if not self.access.tls and any(m in low for m in _PLAIN_TO_TLS):
            reason += " (if etcd serves TLS, add tls=1 or ca=FILE to the URL)"
        elif self.access.tls and not self.access.cert and any(m in low for m in _NO_CLIENT_CERT):
            reason += " (if etcd requires client certificates, add cert=FILE&key=FILE to the URL)"
        return f"{host}:{port} {reason}"

    def _refused(self, path: str, message: str) -> ConfigSourceError:
        if _NEEDS_LOGIN in message:
            return ConfigSourceError(f"etcd {self.describe()}: authentication is enabled: name the user in the URL "
                                     f"(etcd://USER@host:port/prefix) and put its password in {PASSWORD_ENV}")
        if "permission denied" in message:
            who = f"user {self.access.user!r}" if self.access.user else "this client"
            return ConfigSourceError(f"etcd {self.describe()}: {path} failed: {message} ({who} needs read and write on keys under {self.prefix}/)")
        return ConfigSourceError(f"etcd {self.describe()}: {path} failed: {message}")

    def request(self, path: str, payload: dict) -> dict:
        """POST to the gateway, trying each endpoint once; errors become ConfigSourceError."""
        exc_mod = self._etcd3gw.exceptions
        failures = []
        for step in range(len(self.endpoints)):
            index = (self._active + step) % len(self.endpoints)
            try:
                client = self._client(index)
                try:
                    result = client.post(client.get_url(path), json=payload)
                except (exc_mod.ConnectionFailedError, exc_mod.ConnectionTimeoutError):
                    raise
                except exc_mod.Etcd3Exception as e:
                    if not self.expired(index, _etcd_error(e.detail_text)):
                        raise
                    result = client.post(client.get_url(path), json=payload)
            except (exc_mod.ConnectionFailedError, exc_mod.ConnectionTimeoutError) as e:
                failures.append(self._failure(index, e))
                continue
            except exc_mod.Etcd3Exception as e:
                message = _etcd_error(e.detail_text)
                if "compacted" in message:
                    raise CompactedError(f"etcd {self.describe()}: {message}", 0) from None
                raise self._refused(path, message) from None
            except (ValueError, requests.RequestException) as e:  # not JSON: not an etcd gateway at that address
                host, port = self.endpoints[index]
                raise ConfigSourceError(f"etcd {host}:{port}: unexpected answer to {path} (is this etcd's client port?): {_reason(e)}") from None
            self._active = index
            return result
        raise ConfigSourceError(f"etcd unreachable ({'; '.join(failures)})")

    def _range(self, key: str, *, prefix: bool = False, **options: Any) -> tuple[list[dict], int]:
        payload: dict[str, Any] = {"key": _b64(key), **options}
        if prefix:
            payload["range_end"] = _prefix_end(key)
        result = self.request("kv/range", payload)
        return result.get("kvs", []), int(result.get("header", {}).get("revision", 0))

    # -- the ConfigSource protocol -----------------------------------------

    def read_raw(self) -> tuple[RawVersion | None, int]:
        """The config key as stored (maybe corrupt) and etcd's current revision."""
        kvs, header = self._range(self.config_key)
        if not kvs:
            return None, header
        kv = kvs[0]
        return RawVersion(_text(_unb64(kv.get("value"))), int(kv["mod_revision"])), header

    def read(self) -> Snapshot:
        raw, _ = self.read_raw()
        if raw is None:
            raise self.not_found()
        return self.snapshot(raw)

    def not_found(self) -> ConfigNotFoundError:
        return ConfigNotFoundError(
            f"{self.url}: no config at key {self.config_key} (publish one with `mdriver-config push FILE --source {self.url}`)")

    def snapshot(self, raw: RawVersion) -> Snapshot:
        where = f"{self.url} (revision {raw.revision})"
        return Snapshot(parse_yaml(raw.text, where), str(raw.revision), raw.text)

    def write(self, text: str, expected_revision: str | None, *, message: str = "", author: str | None = None) -> str:
        """Publish ``text`` if the config is still at ``expected_revision`` (None: only if there is none).

        The config and its history entry are written in one transaction; returns
        the new revision. Raises ConflictError when someone else published first.
        """
        expected = _revision_number(expected_revision, "expected revision")
        entry = {"text": text, "author": author or default_author(), "time": time.time(), "message": message,
                 "previous": str(expected) if expected else ""}
        for _ in range(_WRITE_ATTEMPTS):
            number = self._last_history_number() + 1
            hist_key = self.history_key(number)
            txn = {
                "compare": [
                    {"key": _b64(self.config_key), "result": "EQUAL", "target": "MOD", "mod_revision": expected},
                    {"key": _b64(hist_key), "result": "EQUAL", "target": "CREATE", "create_revision": 0},
                ],
                "success": [
                    {"request_put": {"key": _b64(self.config_key), "value": _b64(text)}},
                    {"request_put": {"key": _b64(hist_key), "value": _b64(json.dumps(entry))}},
                ],
                "failure": [{"request_range": {"key": _b64(self.config_key)}}],
            }
            result = self.request("kv/txn", txn)
            if result.get("succeeded"):
                revision = int(result["header"]["revision"])
                log.info("published config revision %d to %s (history #%d)", revision, self.url, number)
                self._prune_history(number)
                return str(revision)
            kvs = result.get("responses", [{}])[0].get("response_range", {}).get("kvs", [])
            current = int(kvs[0]["mod_revision"]) if kvs else 0
            if current != expected:
                raise ConflictError(self._conflict_message(expected, current))
            # Only the history number was taken (a concurrent writer pruning or a stray key): retry.
        raise ConflictError(f"{self.url}: could not allocate a history entry after {_WRITE_ATTEMPTS} attempts; retry")

    def _conflict_message(self, expected: int, current: int) -> str:
        was = f"revision {expected}" if expected else "empty"
        now = f"revision {current}" if current else "no config (deleted)"
        who = ""
        if current:
            try:
                entry = self.history_entry(str(current))
            except ConfigSourceError:
                entry = None
            if entry is not None:
                who = f", published by {entry.author}" + (f": {entry.message}" if entry.message else "")
            else:
                who = ", written outside mdriver-config"
        return (
            f"conflict: the config at {self.url} changed since it was read ({was}, now {now}{who}); "
            "nothing was written. Review with `mdriver-config diff FILE` and push again."
        )

    # -- history -----------------------------------------------------------

    def _last_history_number(self) -> int:
        kvs, _ = self._range(self.key("history", ""), prefix=True, keys_only=True, limit=1, sort_order=2, sort_target=0)
        if not kvs:
            return 0
        name = _text(_unb64(kvs[0]["key"])).rsplit("/", 1)[-1]
        return int(name) if name.isdigit() else 0

    def _prune_history(self, newest: int) -> None:
        if newest <= HISTORY_KEEP:
            return
        try:
            self.request("kv/deleterange", {"key": _b64(self.history_key(0)), "range_end": _b64(self.history_key(newest - HISTORY_KEEP + 1))})
        except ConfigSourceError as e:
            log.warning("could not prune config history under %s: %s", self.url, e)

    @staticmethod
    def _entry(kv: dict) -> HistoryEntry:
        name = _text(_unb64(kv["key"])).rsplit("/", 1)[-1]
        number = int(name) if name.isdigit() else 0
        revision = str(kv.get("mod_revision", ""))
        try:
            data = json.loads(_unb64(kv.get("value")))
            return HistoryEntry(number, revision, str(data["text"]), str(data.get("author", "")), float(data.get("time", 0.0)),
                                str(data.get("message", "")), str(data.get("previous", "")))
        except (ValueError, KeyError, TypeError):
            return HistoryEntry(number, revision, "", message="(unreadable history entry)")

    def history(self, limit: int | None = None) -> list[HistoryEntry]:
        """Published versions, newest first."""
        options: dict[str, Any] = {"sort_order": 2, "sort_target": 0}
        if limit:
            options["limit"] = limit
        kvs, _ = self._range(self.key("history", ""), prefix=True, **options)
        return [self._entry(kv) for kv in kvs]

    def history_entry(self, revision: str) -> HistoryEntry | None:
        """The history entry that produced config ``revision``, if it was published with ``write``."""
        rev = _revision_number(revision, "revision")
        kvs, _ = self._range(self.key("history", ""), prefix=True, min_mod_revision=rev, max_mod_revision=rev)
        return self._entry(kvs[0]) if kvs else None

    def version(self, revision: str) -> RawVersion:
        """The config text at ``revision``: from history, else from etcd's MVCC store if not compacted."""
        rev = _revision_number(revision, "revision")
        entry = self.history_entry(str(rev))
        if entry is not None and entry.text:
            return RawVersion(entry.text, rev)
        try:
            kvs, _ = self._range(self.config_key, revision=rev)
        except CompactedError:
            kvs = []
        except ConfigSourceError as e:
            if "future revision" not in str(e):
                raise
            kvs = []
        if kvs and int(kvs[0]["mod_revision"]) == rev:
            return RawVersion(_text(_unb64(kvs[0].get("value"))), rev)
        raise ConfigSourceError(f"{self.url}: revision {rev} is not a config version (see `mdriver-config history`)")

    # -- watch and leases (used by the watcher and client registration) -------

    def watch(self, start_revision: int, idle_timeout: float = 30.0) -> "WatchStream":
        return WatchStream(self, start_revision, idle_timeout)

    def grant(self, ttl: int) -> int:
        return int(self.request("lease/grant", {"TTL": int(ttl), "ID": 0})["ID"])

    def keepalive(self, lease: int) -> int:
        """Refresh a lease; returns its TTL, or -1 if it has expired."""
        result = self.request("lease/keepalive", {"ID": lease})
        return int(result.get("result", {}).get("TTL", -1))

    def revoke(self, lease: int) -> None:
        self.request("kv/lease/revoke", {"ID": lease})

    def put(self, key: str, value: str, lease: int | None = None) -> int:
        payload: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            payload["lease"] = lease
        return int(self.request("kv/put", payload).get("header", {}).get("revision", 0))

    def get_prefix(self, sub: str) -> list[tuple[str, bytes, dict]]:
        """(key, value, metadata) for every key under ``<prefix>/<sub>/``."""
        kvs, _ = self._range(self.key(sub, ""), prefix=True)
        return [(_text(_unb64(kv["key"])), _unb64(kv.get("value")), kv) for kv in kvs]


def default_author() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class _TokenExpired(ConfigSourceError):
    def __init__(self, reason: str):
        super().__init__(f"etcd canceled the watch: {reason}")
        self.reason = reason


class WatchStream:
    """One watch on the config key from ``start_revision``.

    Iterating yields :class:`WatchBatch` until the stream breaks (ConfigSourceError),
    etcd compacted the start revision (CompactedError), or no message came for
    ``idle_timeout`` seconds (iteration just ends; the caller watches again).
    ``close()`` may be called from another thread to stop a blocked read.
    """

    def __init__(self, source: EtcdSource, start_revision: int, idle_timeout: float):
        self.source = source
        self.start_revision = start_revision
        self.idle_timeout = idle_timeout
        self._response: Any = None
        self._closed = False

    def _open(self) -> Any:
        src = self.source
        body = {"create_request": {"key": _b64(src.config_key), "start_revision": self.start_revision}}
        failures = []
        exc_mod = src._etcd3gw.exceptions
        for step in range(len(src.endpoints)):
            index = (src._active + step) % len(src.endpoints)
            try:
                client = src._client(index)
                for attempt in (1, 2):
                    response = client.session.post(client.get_url("watch"), json=body, stream=True,
                                                   timeout=(src.timeout, self.idle_timeout))
                    if response.status_code == 200:
                        break
                    detail = _etcd_error(response.text)
                    response.close()
                    if attempt == 2 or not src.expired(index, detail):
                        raise src._refused(f"watch (HTTP {response.status_code})", detail)
            except (requests.RequestException, exc_mod.ConnectionFailedError, exc_mod.ConnectionTimeoutError) as e:
                failures.append(src._failure(index, e))
                continue
            src._active = index
            return response
        raise ConfigSourceError(f"etcd unreachable ({'; '.join(failures)})")

    def __iter__(self) -> Iterator[WatchBatch]:
        try:
            yield from self._stream()
        except _TokenExpired as e:  # etcd answers a watch with an expired token by canceling it: log in, watch again
            if self._closed or not self.source.expired(self.source._active, e.reason):
                raise ConfigSourceError(f"etcd canceled the watch: {e.reason}") from None
            yield from self._stream()

    def _stream(self) -> Iterator[WatchBatch]:
        from urllib3.exceptions import ReadTimeoutError

        self._response = self._open()
        if self._closed:
            self._release()
            return
        buffer = b""
        try:
            for chunk in self._response.iter_content(chunk_size=None):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield self._parse(line)
        except requests.exceptions.ConnectionError as e:
            if self._closed:
                return
            if e.args and isinstance(e.args[0], ReadTimeoutError):
                return  # idle: nothing changed for idle_timeout seconds
            raise ConfigSourceError(f"etcd watch on {self.source.describe()} broke: {_reason(e)}") from None
        except (requests.RequestException, OSError, ValueError) as e:
            if self._closed:
                return
            raise ConfigSourceError(f"etcd watch on {self.source.describe()} broke: {_reason(e)}") from None
        finally:
            self._release()
        if self._closed:
            return
        if buffer.strip():
            yield self._parse(buffer)
        raise ConfigSourceError(f"etcd watch on {self.source.describe()} was closed by the server")

    def _parse(self, line: bytes) -> WatchBatch:
        try:
            message = json.loads(line)
        except ValueError:
            raise ConfigSourceError(f"etcd watch on {self.source.describe()}: unreadable message {line[:100]!r}") from None
        if "error" in message:
            raise ConfigSourceError(f"etcd watch on {self.source.describe()} failed: {_etcd_error(json.dumps(message['error']))}")
        result = message.get("result", {})
        header = int(result.get("header", {}).get("revision", 0))
        if result.get("canceled"):
            compact = int(result.get("compact_revision", 0))
            if compact:
                raise CompactedError(f"etcd compacted revisions before {compact}", compact)
            reason = result.get("cancel_reason", "no reason given")
            if any(m in reason for m in _EXPIRED_TOKEN):
                raise _TokenExpired(reason)
            raise ConfigSourceError(f"etcd canceled the watch: {reason}")
        events = []
        for ev in result.get("events", []):
            kv = ev.get("kv", {})
            kind = "delete" if ev.get("type") == "DELETE" else "put"
            text = _text(_unb64(kv.get("value"))) if kind == "put" else None
            events.append(WatchEvent(kind, int(kv.get("mod_revision", 0)), text))
        return WatchBatch(header, tuple(events), bool(result.get("created")))

    def close(self) -> None:
        """Stop the stream; safe from any thread and more than once."""
        self._closed = True
        self._release()

    def _release(self) -> None:
        response = self._response
        if response is None:
            return
        try:
            fd = response.raw.fileno()
            sock = socket.socket(fileno=socket.dup(fd))
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv()
            finally:
                sock.close()
        except (OSError, ValueError, AttributeError):
            pass
        try:
            response.close()
        except Exception:  # noqa: BLE001 - closing a broken stream must never raise
            pass
