"""A private single-member etcd (Debian's ``etcd-server``, 3.4) on its own ports and data dir.

Used by the test fixtures for the config-center work. Ports are picked once
and kept, so a stopped or killed server comes back at the same URL with its
data, which is what "etcd restarted" tests need.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from mdriver.sandbox.cluster import SandboxError, _on_main_thread, _set_pdeathsig, _which, free_port, tail

log = logging.getLogger(__name__)

ETCD_INSTALL_HINT = "sudo apt-get install etcd-server"


@dataclass(frozen=True)
class EtcdTls:
    """PEM files for a member that serves clients over TLS; with ``client_ca`` it also requires client certificates."""

    cert: str
    key: str
    client_ca: str | None = None
    client_cert: str | None = None  # what the health check presents when client certificates are required
    client_key: str | None = None
    ca: str | None = None  # what the health check trusts (the CA of ``cert``)


class EtcdServer:
    """One etcd member. ``start()`` waits until ``/health`` reports a leader.

    ``extra_args`` are more etcd flags (``--auth-token-ttl=2``, say).
    """

    def __init__(self, datadir: str, host: str = "127.0.0.1", port: int | None = None, name: str = "mdriver-test",
                 die_with_parent: bool = False, tls: EtcdTls | None = None, extra_args: tuple[str, ...] = ()):
        self.datadir = os.path.abspath(datadir)
        self.host = host
        self.port = port or 0
        self.peer_port = 0
        self.name = name
        self.die_with_parent = die_with_parent
        self.tls = tls
        self.extra_args = tuple(extra_args)
        self._proc: subprocess.Popen | None = None
        self._log_offset = 0

    def __repr__(self) -> str:
        return f"EtcdServer({self.client_url}, pid={self.pid})"

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def log_path(self) -> str:
        return os.path.join(os.path.dirname(self.datadir), f"{os.path.basename(self.datadir)}.log")

    @property
    def pid(self) -> int | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        return None

    def is_alive(self) -> bool:
        return self.pid is not None

    def argv(self, binary: str) -> list[str]:
        peer = f"http://{self.host}:{self.peer_port}"
        return [
            binary,
            f"--name={self.name}",
            f"--data-dir={self.datadir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-outputs=stderr",
            *self._tls_args(),
            *self.extra_args,
        ]

    def _tls_args(self) -> list[str]:
        t = self.tls
        if t is None:
            return []
        args = [f"--cert-file={t.cert}", f"--key-file={t.key}"]
        if t.client_ca:
            args += [f"--trusted-ca-file={t.client_ca}", "--client-cert-auth"]
        return args

    def _health_context(self) -> ssl.SSLContext | None:
        t = self.tls
        if t is None:
            return None
        ctx = ssl.create_default_context(cafile=t.ca)
        if t.client_cert:
            ctx.load_cert_chain(t.client_cert, t.client_key)
        return ctx

    def start(self, timeout: float = 30.0) -> None:
        if self.is_alive():
            return
        binary = _which(("etcd",))
        if binary is None:
            raise SandboxError(f"etcd is not installed; install it with: {ETCD_INSTALL_HINT}")
        if not self.port:
            self.port = free_port(self.host)
        if not self.peer_port:
            self.peer_port = free_port(self.host)
        os.makedirs(os.path.dirname(self.datadir), exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}  # etcd reads ETCD_* as flags
        try:
            self._log_offset = os.path.getsize(self.log_path)
        except OSError:
            self._log_offset = 0
        with open(self.log_path, "ab") as logf:
            self._proc = subprocess.Popen(
                self.argv(binary), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                start_new_session=True,
                preexec_fn=_set_pdeathsig if self.die_with_parent and _on_main_thread() else None,
            )
        log.info("etcd: started pid %d at %s", self._proc.pid, self.client_url)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise SandboxError(f"etcd at {self.client_url} exited with code {code}; log {self.log_path}:\n"
                                   f"{tail(self.log_path, start=self._log_offset)}")
            try:
                with urllib.request.urlopen(self.client_url + "/health", timeout=1, context=self._health_context()) as r:
                    if json.loads(r.read().decode()).get("health") == "true":
                        return
                    last = "no leader yet"
            except (OSError, ValueError) as e:
                last = str(e)
            if time.monotonic() > deadline:
                self.kill()
                raise SandboxError(f"etcd at {self.client_url} not healthy within {timeout:.0f} s ({last}); log {self.log_path}:\n"
                                   f"{tail(self.log_path, start=self._log_offset)}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig``; for SIGKILL also wait until it is gone."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self._proc.wait(30)
