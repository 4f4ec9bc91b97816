"""etcd as production runs it: TLS with client certificates, and users with passwords and expiring tokens.

Two real etcd members of the test's own: one serving clients only over TLS
and requiring a client certificate, one with authentication enabled and a
token lifetime of 2 s, so that renewing an expired token is exercised.
"""
from __future__ import annotations

import base64
import subprocess
import sys
import time
import uuid

import pytest
import requests

from etcd_helpers import BASE_TEXT, ROOT, variant
from mdriver.config import load_config
from mdriver.config.etcd import PASSWORD_ENV, EtcdSource
from mdriver.config.sources import ConfigSourceError
from mdriver.config.watch import ConfigWatcher
from mdriver.sandbox.cluster import SandboxError
from mdriver.sandbox.etcd import EtcdServer, EtcdTls
from pki import make_pki

pytestmark = pytest.mark.etcd

APP_USER, APP_PASSWORD = "mdriver", "Etcd-App-Secret-77"
READER, READER_PASSWORD = "auditor", "Etcd-Reader-Secret-12"
ROOT_PASSWORD = "Etcd-Root-Secret-31"
GRANTED = "/secured"  # the app user may read and write keys under this; the auditor may only read them


def _start(server: EtcdServer) -> EtcdServer:
    try:
        server.start()
    except SandboxError as e:
        pytest.fail(str(e), pytrace=False)
    return server


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    return make_pki(base / "good"), make_pki(base / "other", name="other")


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory, pki):
    good, _ = pki
    server = EtcdServer(str(tmp_path_factory.mktemp("etcd-tls") / "data"), die_with_parent=True,
                        tls=EtcdTls(good.server_cert, good.server_key, client_ca=good.ca, client_cert=good.client_cert,
                                    client_key=good.client_key, ca=good.ca))
    yield _start(server)
    server.stop()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory):
    server = _start(EtcdServer(str(tmp_path_factory.mktemp("etcd-auth") / "data"), die_with_parent=True,
                               extra_args=("--auth-token-ttl=2",)))

    def admin(path: str, body: dict) -> None:
        r = requests.post(f"{server.client_url}/v3/auth/{path}", json=body, timeout=5)
        assert r.status_code == 200, (path, r.text)

    admin("role/add", {"name": "root"})
    admin("user/add", {"name": "root", "password": ROOT_PASSWORD})
    admin("user/grant", {"user": "root", "role": "root"})
    end = GRANTED[:-1] + chr(ord(GRANTED[-1]) + 1)
    for role, perm in (("app", "READWRITE"), ("audit", "READ")):
        admin("role/add", {"name": role})
        admin("role/grant", {"name": role, "perm": {"permType": perm, "key": _b64(GRANTED), "range_end": _b64(end)}})
    for user, password, role in ((APP_USER, APP_PASSWORD, "app"), (READER, READER_PASSWORD, "audit")):
        admin("user/add", {"name": user, "password": password})
        admin("user/grant", {"user": user, "role": role})
    admin("enable", {})
    yield server
    server.stop()


def _prefix() -> str:
    return f"{GRANTED}-{uuid.uuid4().hex[:6]}"


def _tls_url(server, ca=None, cert=None, key=None) -> str:
    query = "&".join(f"{k}={v}" for k, v in (("ca", ca), ("cert", cert), ("key", key)) if v)
    return f"etcd://{server.host}:{server.port}{_prefix()}?timeout=3&{query}"


# -- TLS ------------------------------------------------------------------------------------

def test_tls_with_a_client_certificate_publishes_reads_and_watches(tls_etcd, pki):
    good, _ = pki
    url = _tls_url(tls_etcd, good.ca, good.client_cert, good.client_key)
    source = EtcdSource.from_url(url)
    first = source.write(BASE_TEXT, None, message="over TLS")
    assert load_config(url).revision == first
    watcher = ConfigWatcher(url, min_backoff=0.05, max_backoff=0.5).start()
    try:
        second = source.write(variant(4321), first)
        assert watcher.wait_for_revision(second, timeout=3.0), watcher.status()
        assert watcher.current.router.max_offset == 4321
    finally:
        watcher.stop()


@pytest.mark.parametrize("case, reason", [
    ("server signed by another CA", "certificate verify failed"),
    ("no client certificate", "(if etcd requires client certificates, add cert=FILE&key=FILE to the URL)"),
    ("plain HTTP to a TLS port", "(if etcd serves TLS, add tls=1 or ca=FILE to the URL)"),
])
def test_tls_mistakes_are_one_line_errors_not_hangs(tls_etcd, pki, case, reason):
    good, other = pki
    url = {"server signed by another CA": _tls_url(tls_etcd, other.ca, good.client_cert, good.client_key),
           "no client certificate": _tls_url(tls_etcd, good.ca),
           "plain HTTP to a TLS port": f"etcd://{tls_etcd.host}:{tls_etcd.port}{_prefix()}?timeout=3"}[case]
    started = time.monotonic()
    with pytest.raises(ConfigSourceError) as e:
        EtcdSource.from_url(url).read()
    assert time.monotonic() - started < 5
    message = str(e.value)
    assert message.startswith(f"etcd unreachable ({tls_etcd.host}:{tls_etcd.port} ") and reason in message
    assert "\n" not in message and "Traceback" not in message


# -- users and tokens -----------------------------------------------------------------------

def _user_url(server, user: str, prefix: str | None = None) -> str:
    return f"etcd://{user}@{server.host}:{server.port}{prefix or _prefix()}?timeout=3"


def test_a_user_publishes_and_an_expired_token_is_renewed(auth_etcd, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, APP_PASSWORD)
    source = EtcdSource.from_url(_user_url(auth_etcd, APP_USER))
    first = source.write(BASE_TEXT, None)
    token = source._clients[0].session.headers["Authorization"]  # noqa: SLF001 - the renewal is what is tested
    time.sleep(3)  # past --auth-token-ttl: etcd has forgotten the token
    assert source.read().revision == first
    assert source._clients[0].session.headers["Authorization"] != token  # noqa: SLF001


def test_a_watcher_keeps_following_across_token_expiry(auth_etcd, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, APP_PASSWORD)
    url = _user_url(auth_etcd, APP_USER)
    source = EtcdSource.from_url(url)
    first = source.write(BASE_TEXT, None)
    watcher = ConfigWatcher(url, min_backoff=0.05, max_backoff=0.5, idle_timeout=1.0).start()
    try:
        assert watcher.current.revision == first
        time.sleep(3)  # the watcher's token expires; its next watch must log in again
        second = source.write(variant(777), first)
        assert watcher.wait_for_revision(second, timeout=5.0), watcher.status()
    finally:
        watcher.stop()


def test_auth_errors_say_what_to_do(auth_etcd, monkeypatch):
    prefix = _prefix()
    with pytest.raises(ConfigSourceError, match=f"authentication is enabled: name the user in the URL .* {PASSWORD_ENV}"):
        EtcdSource.from_url(f"etcd://{auth_etcd.host}:{auth_etcd.port}{prefix}").read()
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(ConfigSourceError, match=f"logging in as '{APP_USER}' failed: .*invalid user ID or password") as e:
        EtcdSource.from_url(_user_url(auth_etcd, APP_USER, prefix)).read()
    assert "wrong" not in str(e.value)


def test_a_read_only_user_reads_but_cannot_publish(auth_etcd, monkeypatch):
    prefix = _prefix()
    monkeypatch.setenv(PASSWORD_ENV, APP_PASSWORD)
    first = EtcdSource.from_url(_user_url(auth_etcd, APP_USER, prefix)).write(BASE_TEXT, None)
    monkeypatch.setenv(PASSWORD_ENV, READER_PASSWORD)
    reader = EtcdSource.from_url(_user_url(auth_etcd, READER, prefix))
    assert reader.read().revision == first
    with pytest.raises(ConfigSourceError, match=f"permission denied \\(user '{READER}' needs read and write on keys under {prefix}/\\)"):
        reader.write(variant(5), first)
    assert reader.read().revision == first


def test_the_config_cli_logs_in_from_the_environment(auth_etcd, tmp_path):
    url = _user_url(auth_etcd, APP_USER)
    path = tmp_path / "sharding.yaml"
    path.write_text(BASE_TEXT, encoding="utf-8")

    def cli(*args, password):
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), PASSWORD_ENV: password}
        return subprocess.run([sys.executable, "-m", "mdriver.config.cli", *args], capture_output=True, text=True,
                              env=env, cwd=str(ROOT), timeout=60)

    ok = cli("push", str(path), "--source", url, "-m", "with a user", password=APP_PASSWORD)
    assert ok.returncode == 0, ok.stderr
    got = cli("get", "--source", url, password=APP_PASSWORD)
    assert got.returncode == 0 and got.stdout.strip() == BASE_TEXT.strip()
    bad = cli("get", "--source", url, password="nope")
    assert bad.returncode != 0
    assert "logging in as 'mdriver' failed" in bad.stderr and "Traceback" not in bad.stderr and "nope" not in bad.stderr
