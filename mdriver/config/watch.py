"""Keep a process on the newest valid config, with hot reload.

Usage (driver, proxy, migrator)::

    watcher = ConfigWatcher("etcd://127.0.0.1:2379/mdriver", cache_path="/var/cache/mdriver/app.json").start()
    config = watcher.current   # an immutable Config; hold it for a whole transaction

Guarantees:

- ``current`` is swapped in one assignment: a reader sees the old or the new
  Config, never a mix. A transaction that holds on to the Config it started
  with finishes on that version; plan caches keyed by ``config.revision`` go
  cold on a change by construction.
- An invalid version (bad YAML, failed validation, deleted key) is ignored:
  the process keeps its last good config, logs an error, increments
  ``rejected_versions`` and calls ``on_reject(revision, reason)`` (wire a
  metric there). Each bad revision is counted once.
- etcd: a watch from the last seen revision. When etcd is unreachable the
  process keeps serving on the last good config and reconnects with
  exponential backoff (``min_backoff`` .. ``max_backoff``), resuming from that
  revision so no update is missed. A compacted revision, or a store whose
  revision went backwards (restored cluster), triggers a full reload.
- files: the file is re-read every ``poll_interval`` seconds; a change of
  content is a new version (the revision is a content hash).
- ``cache_path``: the last good config text is saved there on every change, and
  used at start when the source is unreachable or currently invalid.

Threading: one daemon thread per watcher does all I/O. Listeners run on that
thread, after the swap, in the order they were added; an exception in a
listener is logged and does not stop the watcher. A listener added with
``loop=`` is instead scheduled on that asyncio loop with
``call_soon_threadsafe``, so proxy code never runs off its event loop.
"""
from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import threading
import time
from typing import Any, Callable

from mdriver.config.etcd import CompactedError, EtcdSource
from mdriver.config.model import Config
from mdriver.config.sources import ConfigSource, ConfigSourceError, FileSource, open_source, parse_yaml, text_revision
from mdriver.config.validate import ConfigError, build_config

log = logging.getLogger(__name__)

Listener = Callable[[Config, Config], None]  # (new, old)
RejectHook = Callable[[str, str], None]  # (revision, reason)


class ConfigWatcher:
    """Loads config from a source URL and keeps ``current`` up to date in a background thread."""

    def __init__(
        self,
        source: str | ConfigSource,
        *,
        on_change: Listener | None = None,
        on_reject: RejectHook | None = None,
        cache_path: str | None = None,
        poll_interval: float = 1.0,
        min_backoff: float = 0.2,
        max_backoff: float = 5.0,
        idle_timeout: float = 30.0,
    ):
        self._source = open_source(source) if isinstance(source, str) else source
        self.url: str = self._source.url
        self.cache_path = cache_path
        self.poll_interval = poll_interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.idle_timeout = idle_timeout
        self._on_reject = on_reject
        self._listeners: list[tuple[Listener, Any]] = []
        if on_change is not None:
            self._listeners.append((on_change, None))
        self._cond = threading.Condition()
        self._current: Config | None = None
        self._current_text: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: Any = None
        self._next_revision = 0  # etcd: the first revision the next watch asks for
        self._needs_reload = False
        self._rejected_revision: str | None = None
        self._failing = False
        self.rejected_versions = 0
        self.last_rejected: tuple[str, str] | None = None  # (revision, reason)
        self.last_error: str | None = None
        self.loaded_from_cache = False

    # -- public API ----------------------------------------------------------

    @property
    def current(self) -> Config:
        config = self._current
        if config is None:
            raise RuntimeError("ConfigWatcher.start() has not loaded a config yet")
        return config

    @property
    def revision(self) -> str:
        return self.current.revision

    @property
    def is_etcd(self) -> bool:
        return isinstance(self._source, EtcdSource)

    @property
    def connected(self) -> bool:
        """False while the source cannot be read (the process serves its last good config)."""
        return not self._failing

    def start(self) -> "ConfigWatcher":
        """Load the config (from the source, else from the cache) and start watching.

        Raises ConfigSourceError or ConfigError when there is no usable config at all.
        """
        if self._thread is not None:
            raise RuntimeError("ConfigWatcher already started")
        self._initial_load()
        target = self._run_etcd if self.is_etcd else self._run_poll
        self._thread = threading.Thread(target=target, name=f"mdriver-config-watch {self.url}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> "ConfigWatcher":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_listener(self, listener: Listener, *, loop: Any = None) -> Callable[[], None]:
        """Call ``listener(new, old)`` after each change; returns a function that removes it."""
        item = (listener, loop)
        with self._cond:
            self._listeners.append(item)

        def remove() -> None:
            with self._cond:
                if item in self._listeners:
                    self._listeners.remove(item)

        return remove

    def wait_for_revision(self, revision: str, timeout: float) -> bool:
        """Block until ``current.revision == revision`` (or, for etcd, a later one)."""
        def reached() -> bool:
            current = self._current
            if current is None:
                return False
            if current.revision == revision:
                return True
            return self.is_etcd and current.revision.isdigit() and str(revision).isdigit() and int(current.revision) >= int(revision)

        with self._cond:
            return self._cond.wait_for(reached, timeout)

    def status(self) -> dict:
        """For admin endpoints and logs."""
        current = self._current
        return {
            "source": self.url,
            "revision": current.revision if current else None,
            "connected": self.connected,
            "last_error": self.last_error,
            "rejected_versions": self.rejected_versions,
            "last_rejected": self.last_rejected,
            "loaded_from_cache": self.loaded_from_cache,
        }

    # -- loading and applying -----------------------------------------------

    def _build(self, text: str, revision: str) -> Config:
        document = parse_yaml(text, f"{self.url} (revision {revision})")
        return build_config(document, source=self.url, revision=revision)

    def _read_raw(self, source: Any) -> tuple[str | None, str]:
        """(text, revision) of the source now; text None if an etcd key is absent."""
        if self.is_etcd:
            raw, header = source.read_raw()
            self._next_revision = header + 1
            return (raw.text, str(raw.revision)) if raw is not None else (None, "absent")
        if isinstance(source, FileSource):
            try:
                with open(source.path, encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                raise ConfigSourceError(f"{source.path}: cannot read config: {e.strerror}") from None
            except UnicodeDecodeError as e:
                raise ConfigSourceError(f"{source.path}: not UTF-8 text: {e.reason}") from None
            return text, text_revision(text)
        snapshot = source.read()
        return snapshot.text, snapshot.revision

    def _initial_load(self) -> None:
        try:
            text, revision = self._read_raw(self._source)
            if text is None:
                raise self._source.not_found()  # only etcd sources report an absent config
            config = self._build(text, revision)
        except (ConfigSourceError, ConfigError) as e:
            cached = self._load_cache()
            if cached is None:
                raise
            config, text = cached
            log.warning("config source %s unusable at start (%s); serving cached revision %s from %s",
                        self.url, str(e).splitlines()[0], config.revision, self.cache_path)
            self.loaded_from_cache = True
            self._needs_reload = True
            self._note_failure(str(e).splitlines()[0])
        self._set(config, text, notify=False)
        log.info("config revision %s loaded from %s", config.revision, "cache" if self.loaded_from_cache else self.url)

    def _offer(self, text: str | None, revision: str) -> None:
        """A version seen at the source: apply it if it is new and valid, else count it as rejected."""
        current = self._current
        if current is not None and revision == current.revision and text == self._current_text:
            if self.loaded_from_cache:
                self.loaded_from_cache = False
                log.info("config source %s confirms cached revision %s", self.url, revision)
            return
        if revision == self._rejected_revision:
            return
        if text is None:
            self._reject(revision, "the config key was deleted")
            return
        try:
            config = self._build(text, revision)
        except (ConfigSourceError, ConfigError) as e:
            self._reject(revision, str(e))
            return
        except Exception as e:  # noqa: BLE001 - the watcher thread must outlive any bad document
            log.exception("unexpected error validating config revision %s", revision)
            self._reject(revision, f"unexpected error while validating: {e!r}")
            return
        self.loaded_from_cache = False
        self._set(config, text, notify=True)

    def _reject(self, revision: str, reason: str) -> None:
        with self._cond:
            self.rejected_versions += 1
            self.last_rejected = (revision, reason)
            self._rejected_revision = revision
            keep = self._current.revision if self._current else None
        log.error("ignoring invalid config revision %s from %s (keeping revision %s): %s", revision, self.url, keep, reason)
        if self._on_reject is not None:
            try:
                self._on_reject(revision, reason)
            except Exception:  # noqa: BLE001
                log.exception("on_reject hook failed")

    def _set(self, config: Config, text: str, *, notify: bool) -> None:
        with self._cond:
            old = self._current
            self._current = config
            self._current_text = text
            self._rejected_revision = None
            listeners = list(self._listeners)
            self._cond.notify_all()
        self._save_cache(config, text)
        if not notify or old is None:
            return
        log.info("config revision %s applied from %s (was %s)", config.revision, self.url, old.revision)
        for listener, loop in listeners:
            try:
                if loop is not None:
                    loop.call_soon_threadsafe(listener, config, old)
                else:
                    listener(config, old)
            except Exception:  # noqa: BLE001 - one broken listener must not stop the others
                log.exception("config change listener %r failed", listener)

    # -- on-disk cache --------------------------------------------------------

    def _save_cache(self, config: Config, text: str) -> None:
        if not self.cache_path:
            return
        data = {"source": self.url, "revision": config.revision, "saved": time.time(), "text": text}
        directory = os.path.dirname(os.path.abspath(self.cache_path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".mdriver-cache-", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, self.cache_path)
        except OSError as e:
            log.warning("cannot write config cache %s: %s", self.cache_path, e)

    def _load_cache(self) -> tuple[Config, str] | None:
        if not self.cache_path or not os.path.exists(self.cache_path):
            return None
        try:
            with open(self.cache_path, encoding="utf-8") as f:
                data = json.load(f)
            if data.get("source") != self.url:
                log.warning("config cache %s is for %s, not %s; not using it", self.cache_path, data.get("source"), self.url)
                return None
            text, revision = str(data["text"]), str(data["revision"])
            return self._build(text, revision), text
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigSourceError, ConfigError) as e:
            log.warning("config cache %s is unusable: %s", self.cache_path, str(e).splitlines()[0] if str(e) else e)
            return None

    # -- background loops -----------------------------------------------------

    def _note_failure(self, message: str) -> None:
        if not self._failing:
            log.warning("config source %s unreachable, serving revision %s: %s", self.url,
                        self._current.revision if self._current else None, message)
        else:
            log.debug("config source %s still unreachable: %s", self.url, message)
        self._failing = True
        self.last_error = message

    def _note_success(self) -> None:
        if self._failing:
            log.info("config source %s reachable again", self.url)
        self._failing = False

    def _run_poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                text, revision = self._read_raw(self._source)
            except ConfigSourceError as e:
                self._note_failure(str(e))
                continue
            except Exception as e:  # noqa: BLE001
                log.exception("config poll of %s failed", self.url)
                self._note_failure(repr(e))
                continue
            self._note_success()
            self._offer(text, revision)

    def _run_etcd(self) -> None:
        source = self._source.clone()  # a session of its own: sources are not shared across threads
        backoff = self.min_backoff
        while not self._stop.is_set():
            stream = None
            try:
                if self._needs_reload:
                    text, revision = self._read_raw(source)
                    self._needs_reload = False
                    self._offer(text, revision)
                stream = source.watch(self._next_revision, self.idle_timeout)
                self._stream = stream
                if self._stop.is_set():
                    break
                for batch in stream:
                    self._note_success()
                    backoff = self.min_backoff
                    if batch.created and batch.header_revision + 1 < self._next_revision:
                        log.warning("etcd revision went back from %d to %d (restored or replaced cluster); reloading",
                                    self._next_revision - 1, batch.header_revision)
                        self._needs_reload = True
                        break
                    for event in batch.events:
                        self._offer(event.text, str(event.revision))
                        self._next_revision = event.revision + 1
            except CompactedError as e:
                log.info("config watch on %s: %s; reloading", self.url, e)
                self._needs_reload = True
            except ConfigSourceError as e:
                if self._stop.is_set():
                    break
                self._note_failure(str(e))
                self._stop.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.max_backoff)
            except Exception as e:  # noqa: BLE001 - keep serving the last good config whatever happens
                log.exception("config watch on %s failed", self.url)
                self._note_failure(repr(e))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            finally:
                self._stream = None
                if stream is not None:
                    stream.close()
