"""Start, probe and stop private MariaDB servers (DESIGN §7).

One :class:`MariaDBInstance` is one ``mariadbd`` on its own port and data
directory. It is used both by ``mdriver-sandbox`` (servers that outlive the
command, found again through their pid file) and by the test fixtures
(servers owned by the test run). Nothing here reads a system config file
(``--no-defaults``) or touches a server it did not start: a server is "ours"
only if its command line names our data directory.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Mapping

import pymysql

log = logging.getLogger(__name__)

INSTALL_HINT = "sudo apt-get install mariadb-server mariadb-client"
_SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/local/mysql/bin", "/usr/bin")
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes; leave room
_BIND_FAILURES = ("Address already in use", "Do you already have another server running on port")


class SandboxError(Exception):
    """A problem the user can fix; the message says what and how."""


class MariaDBNotInstalled(SandboxError):
    pass


class PortInUseError(SandboxError):
    pass


class ServerStartError(SandboxError):
    """The server did not become ready; the message ends with its log's last lines."""

    def __init__(self, message: str, port_conflict: bool = False):
        super().__init__(message)
        self.port_conflict = port_conflict


@dataclass(frozen=True)
class MariaDBBinaries:
    mariadbd: str
    install_db: str


def _which(names: Iterable[str], path: str | None = None) -> str | None:
    if path is None:
        path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(_SEARCH_DIRS)
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def find_binaries() -> MariaDBBinaries:
    """Locate ``mariadbd`` and ``mariadb-install-db``.

    Searched in PATH plus the sbin dirs that a non-root PATH often lacks, or
    only in ``$MDRIVER_MARIADB_PATH`` (a PATH-style list) when that is set,
    e.g. for a MariaDB unpacked from a tarball.
    """
    path = os.environ.get("MDRIVER_MARIADB_PATH")
    server = _which(("mariadbd", "mysqld"), path)
    install = _which(("mariadb-install-db", "mysql_install_db"), path)
    missing = [n for n, p in (("mariadbd", server), ("mariadb-install-db", install)) if p is None]
    if missing:
        where = f" in MDRIVER_MARIADB_PATH={path}" if path is not None else ""
        raise MariaDBNotInstalled(
            f"MariaDB is not installed ({', '.join(missing)} not found{where}); install it with: {INSTALL_HINT}"
        )
    return MariaDBBinaries(server, install)  # type: ignore[arg-type]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    """True if something listens on host:port (binding the way mariadbd does fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def _open_files_limit() -> int:
    """Enough descriptors for ~3000 tables plus connections, within what we may raise to."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if os.geteuid() == 0 or hard == resource.RLIM_INFINITY:
        return 32768
    return min(hard, 32768)


def default_server_options(server_id: int) -> dict[str, object]:
    """Options every test and sandbox server gets; overridable per instance.

    Binlog settings are what the migrator requires (ROW/FULL/FULL); the caches
    hold all 2 x 1024 physical tables; durability is relaxed for speed.
    """
    return {
        "bind-address": "127.0.0.1",
        "server-id": server_id,
        "log-bin": "mysql-bin",
        "binlog-format": "ROW",
        "binlog-row-image": "FULL",
        "binlog-row-metadata": "FULL",
        "skip-name-resolve": True,
        "max-connections": 1000,
        "max-connect-errors": 1_000_000,
        "table-definition-cache": 8192,
        "table-open-cache": 8192,
        "open-files-limit": _open_files_limit(),
        "innodb-flush-log-at-trx-commit": 2,
        "sync-binlog": 0,
        "innodb-buffer-pool-size": "256M",
        "innodb-log-file-size": "64M",
        "character-set-server": "utf8mb4",
        "collation-server": "utf8mb4_general_ci",
    }


def option_args(options: Mapping[str, object]) -> list[str]:
    """``{"log_bin": "x", "skip-name-resolve": True, "sync-binlog": None}`` -> ``["--log-bin=x", "--skip-name-resolve"]``."""
    args = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        args.append(f"--{name}" if value is True else f"--{name}={value}")
    return args


def merge_options(base: Mapping[str, object], overrides: Mapping[str, object]) -> dict[str, object]:
    """Overrides win; ``log_bin`` and ``log-bin`` are the same option; ``None`` removes one."""
    merged = {k.replace("_", "-"): v for k, v in base.items()}
    for k, v in overrides.items():
        merged[k.replace("_", "-")] = v
    return merged


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _on_main_thread() -> bool:
    # PR_SET_PDEATHSIG fires when the *thread* that forked exits: only the
    # main thread lives as long as the process, so a server started from a
    # worker thread is not tied to it.
    return threading.current_thread() is threading.main_thread()


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; only its parent has not reaped it yet
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def tail(path: str, lines: int = 15, start: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class MariaDBInstance:
    """One private ``mariadbd``: install-db, start, readiness by a real query, stop by pid.

    ``port=None`` picks a free port at start (and a new one if another process
    grabs it first). ``die_with_parent`` makes the kernel kill the server when
    the thread that started it exits (tests: no stray servers after a hard
    kill); the sandbox leaves it off so servers outlive the command.
    ``options`` override :func:`default_server_options` (``None`` drops one).
    """

    def __init__(
        self,
        name: str,
        datadir: str,
        port: int | None = None,
        host: str = "127.0.0.1",
        server_id: int = 1,
        options: Mapping[str, object] | None = None,
        die_with_parent: bool = False,
        binaries: MariaDBBinaries | None = None,
    ):
        self.name = name
        self.host = host
        self.datadir = os.path.abspath(datadir)
        self.auto_port = port is None
        self.port = port if port is not None else 0
        self.server_id = server_id
        self.options = merge_options(default_server_options(server_id), options or {})
        self.die_with_parent = die_with_parent
        self._binaries = binaries
        self._proc: subprocess.Popen | None = None
        self._log_offset = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MariaDBInstance({self.name!r}, {self.host}:{self.port}, pid={self.pid})"

    # -- paths -------------------------------------------------------------
    @property
    def log_path(self) -> str:
        return os.path.join(self.datadir, "mariadbd.err")

    @property
    def pid_path(self) -> str:
        return os.path.join(self.datadir, "mariadbd.pid")

    @property
    def socket_path(self) -> str:
        path = os.path.join(self.datadir, "mariadbd.sock")
        if len(path) > _MAX_SOCKET_PATH:  # deep checkouts: keep the socket short but unique
            import hashlib

            path = os.path.join(tempfile.gettempdir(), f"mdriver-{hashlib.sha1(self.datadir.encode()).hexdigest()[:12]}.sock")
        return path

    @property
    def tmpdir(self) -> str:
        """Private temp files, beside the datadir (a dir inside it would show up as a database)."""
        return self.datadir + ".tmp"

    @property
    def binaries(self) -> MariaDBBinaries:
        if self._binaries is None:
            self._binaries = find_binaries()
        return self._binaries

    @property
    def installed(self) -> bool:
        return os.path.isdir(os.path.join(self.datadir, "mysql"))

    # -- process -----------------------------------------------------------
    def _pid_from_file(self) -> int | None:
        try:
            with open(self.pid_path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid > 0 and self.owns(pid) else None

    def owns(self, pid: int) -> bool:
        """Is ``pid`` a live mariadbd on our data directory (not a recycled pid)?"""
        argv = _cmdline(pid)
        return bool(argv) and f"--datadir={self.datadir}" in argv and _pid_exists(pid)

    @property
    def pid(self) -> int | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        return self._pid_from_file()

    def is_alive(self) -> bool:
        return self.pid is not None

    def install(self) -> None:
        """Create the system tables once (mariadb-install-db); a no-op when already done."""
        if self.installed:
            return
        os.makedirs(self.datadir, exist_ok=True)
        argv = [self.binaries.install_db, "--no-defaults"]
        if os.geteuid() == 0:
            argv.append("--user=root")
        argv += [
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            f"--tmpdir={self.tmpdir}",
        ]
        os.makedirs(self.tmpdir, exist_ok=True)
        for key in ("innodb-log-file-size", "innodb-buffer-pool-size"):
            if self.options.get(key):
                argv.append(f"--{key}={self.options[key]}")
        install_log = os.path.join(self.datadir, "install-db.log")
        with open(install_log, "wb") as out:
            rc = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        if rc != 0 or not self.installed:
            raise ServerStartError(f"{self.name}: mariadb-install-db failed (exit {rc}) in {self.datadir}:\n{tail(install_log)}")

    def argv(self) -> list[str]:
        argv = [self.binaries.mariadbd, "--no-defaults"]
        if os.geteuid() == 0:
            argv.append("--user=root")
        argv += [
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.pid_path}",
            f"--tmpdir={self.tmpdir}",
        ]
        opts = dict(self.options)
        if self.host not in ("127.0.0.1", "localhost") and opts.get("bind-address") == "127.0.0.1":
            opts["bind-address"] = self.host
        return argv + option_args(opts)

    def spawn(self) -> None:
        """Launch mariadbd without waiting for it (see :meth:`wait_ready`)."""
        with self._lock:
            if self.is_alive():
                return
            if self.auto_port and not self.port:
                self.port = free_port(self.host)
            os.makedirs(self.datadir, exist_ok=True)
            os.makedirs(self.tmpdir, exist_ok=True)
            try:
                self._log_offset = os.path.getsize(self.log_path)
            except OSError:
                self._log_offset = 0
            with open(self.log_path, "ab") as logf:
                self._proc = subprocess.Popen(
                    self.argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=logf,
                    cwd=self.datadir,
                    start_new_session=True,  # a Ctrl-C in the terminal must not kill the servers
                    preexec_fn=_set_pdeathsig if self.die_with_parent and _on_main_thread() else None,
                )
            log.info("%s: started mariadbd pid %d on %s:%d", self.name, self._proc.pid, self.host, self.port)

    def start(self, timeout: float = 60.0) -> None:
        """Install if needed, start and wait until a query succeeds; idempotent."""
        if self.is_alive():
            self.wait_ready(timeout)
            return
        self.install()
        for attempt in range(4):
            self.spawn()
            try:
                self.wait_ready(timeout)
                return
            except ServerStartError as e:
                if not (e.port_conflict and self.auto_port and attempt < 3):
                    raise
                log.info("%s: port %d was taken before the server bound it; trying another", self.name, self.port)
                self.port = 0

    def _startup_failure(self, why: str) -> ServerStartError:
        text = tail(self.log_path, start=self._log_offset)
        conflict = any(s in text for s in _BIND_FAILURES)
        return ServerStartError(f"{self.name}: mariadbd on {self.host}:{self.port} {why}; log {self.log_path}:\n{text}", conflict)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll with a real query (``mariadb-admin ping`` succeeds even on access denied)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            if self._proc is not None:
                if self._proc.poll() is not None:
                    raise self._startup_failure(f"exited with code {self._proc.returncode} while starting")
            elif not self.is_alive():
                raise self._startup_failure("is not running")
            try:
                conn = self.connect(connect_timeout=2)
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                finally:
                    conn.close()
                self.auto_port = False  # clients now know this port: restarts must keep it
                return
            except pymysql.err.OperationalError as e:
                last = e
            if time.monotonic() > deadline:
                self.kill()
                raise self._startup_failure(f"did not answer within {timeout:.0f} s (last error: {last})")
            time.sleep(0.05)

    def stop(self, timeout: float = 60.0) -> None:
        """Shut down cleanly (SIGTERM), SIGKILL if it takes longer than ``timeout``."""
        pid = self.pid
        if pid is None:
            self._reap()
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if not self._wait_exit(pid, timeout):
            log.warning("%s: pid %d did not stop within %.0f s; killing it", self.name, pid, timeout)
            self.kill()
        log.info("%s: stopped pid %d", self.name, pid)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig``; for SIGKILL, also wait until the process is gone (so a restart can follow)."""
        pid = self.pid
        if pid is None:
            self._reap()
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL:
            self._wait_exit(pid, 30.0)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        while _pid_exists(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.poll()

    # -- clients -----------------------------------------------------------
    def connect(self, database: str | None = None, **kw) -> pymysql.connections.Connection:
        """A PyMySQL connection as root over TCP; ``autocommit`` defaults to on."""
        params: dict = dict(host=self.host, port=self.port, user="root", password="", charset="utf8mb4", autocommit=True)
        params.update(kw)
        return pymysql.connect(database=database, **params)


def start_all(instances: Iterable[MariaDBInstance], timeout: float = 60.0) -> None:
    """Start several servers at once: install-db and readiness in parallel.

    The processes themselves are launched from the calling thread, so that
    ``die_with_parent`` ties them to this thread and not to a pool worker.
    """
    todo = [i for i in instances if not i.is_alive()]
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        list(pool.map(lambda i: i.install(), todo))
    for inst in todo:
        inst.spawn()
    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        failures = list(pool.map(_ready_or_error(timeout), todo))
    for inst, failure in zip(todo, failures):
        if failure is None:
            continue
        if failure.port_conflict and inst.auto_port:
            inst.port = 0
            inst.start(timeout)  # retries with other ports, from this thread
        else:
            for other in todo:
                other.stop()
            raise failure


def _ready_or_error(timeout: float):
    def wait(inst: MariaDBInstance) -> ServerStartError | None:
        try:
            inst.wait_ready(timeout)
        except ServerStartError as e:
            return e
        return None

    return wait


def stop_all(instances: Iterable[MariaDBInstance], timeout: float = 60.0) -> None:
    """Stop several servers in parallel; every one is attempted even if some fail."""
    todo = list(instances)
    if not todo:
        return
    errors = []
    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        for inst, fut in [(i, pool.submit(i.stop, timeout)) for i in todo]:
            try:
                fut.result()
            except Exception as e:  # noqa: BLE001 - report after trying the others
                errors.append(f"{inst.name}: {e}")
    if errors:
        raise SandboxError("could not stop every server: " + "; ".join(errors))
