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
"""
from __future__ import annotations

import base64
import getpass
import json
import logging
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Iterator

import requests

from mdriver.config.sources import ConfigSourceError, ConflictError, Snapshot, parse_yaml

log = logging.getLogger(__name__)

DEFAULT_PORT = 2379
DEFAULT_TIMEOUT = 5.0
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


def parse_url(url: str) -> tuple[tuple[tuple[str, int], ...], str, float]:
    """``etcd://h1:2379,h2:2379/prefix?timeout=5`` -> (endpoints, prefix, timeout)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "etcd":
        raise ConfigSourceError(f"{url}: not an etcd URL (expected etcd://host:port/prefix)")
    endpoints = []
    for item in parts.netloc.split(","):
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
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key != "timeout":
            raise ConfigSourceError(f"{url}: unknown option {key!r} (allowed: timeout)")
        try:
            timeout = float(value)
        except ValueError:
            raise ConfigSourceError(f"{url}: timeout must be a number of seconds, got {value!r}") from None
        if not 0 < timeout <= 300:
            raise ConfigSourceError(f"{url}: timeout must be in (0, 300] seconds, got {value}")
    return tuple(endpoints), prefix, timeout


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


class EtcdSource:
    """The config source protocol (``url``, ``read``, ``write``) over etcd's v3 JSON gateway."""

    def __init__(self, endpoints: tuple[tuple[str, int], ...], prefix: str, *, timeout: float = DEFAULT_TIMEOUT, url: str | None = None):
        import etcd3gw  # optional dependency: mdriver[etcd]

        self._etcd3gw = etcd3gw
        self.endpoints = tuple(endpoints)
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.endpoints)
        self.url = url or f"etcd://{hosts}{self.prefix}"
        self._clients: dict[int, Any] = {}
        self._active = 0

    @classmethod
    def from_url(cls, url: str) -> "EtcdSource":
        endpoints, prefix, timeout = parse_url(url)
        try:
            return cls(endpoints, prefix, timeout=timeout, url=url)
        except ImportError:
            raise ConfigSourceError(f"{url}: etcd support needs the etcd3gw package (pip install 'mdriver[etcd]')") from None

    def clone(self) -> "EtcdSource":
        """The same source with its own connections, for use from another thread."""
        return EtcdSource(self.endpoints, self.prefix, timeout=self.timeout, url=self.url)

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
        client = self._clients.get(index)
        if client is None:
            host, port = self.endpoints[index]
            client = self._etcd3gw.client(host=host, port=port, timeout=self.timeout, api_path="/v3/")
            self._clients[index] = client
        return client

    def request(self, path: str, payload: dict) -> dict:
        """POST to the gateway, trying each endpoint once; errors become ConfigSourceError."""
        exc_mod = self._etcd3gw.exceptions
        failures = []
        for step in range(len(self.endpoints)):
            index = (self._active + step) % len(self.endpoints)
            client = self._client(index)
            try:
                result = client.post(client.get_url(path), json=payload)
            except (exc_mod.ConnectionFailedError, exc_mod.ConnectionTimeoutError) as e:
                host, port = self.endpoints[index]
                failures.append(f"{host}:{port} {_reason(e)}")
                continue
            except exc_mod.Etcd3Exception as e:
                message = _etcd_error(e.detail_text)
                if "compacted" in message:
                    raise CompactedError(f"etcd {self.describe()}: {message}", 0) from None
                raise ConfigSourceError(f"etcd {self.describe()}: {path} failed: {message}") from None
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
        for step in range(len(src.endpoints)):
            index = (src._active + step) % len(src.endpoints)
            client = src._client(index)
            try:
                response = client.session.post(client.get_url("watch"), json=body, stream=True,
                                               timeout=(src.timeout, self.idle_timeout))
            except requests.RequestException as e:
                host, port = src.endpoints[index]
                failures.append(f"{host}:{port} {_reason(e)}")
                continue
            if response.status_code != 200:
                detail = _etcd_error(response.text)
                response.close()
                raise ConfigSourceError(f"etcd {src.describe()}: watch failed: HTTP {response.status_code} {detail}")
            src._active = index
            return response
        raise ConfigSourceError(f"etcd unreachable ({'; '.join(failures)})")

    def __iter__(self) -> Iterator[WatchBatch]:
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
            raise ConfigSourceError(f"etcd canceled the watch: {result.get('cancel_reason', 'no reason given')}")
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
