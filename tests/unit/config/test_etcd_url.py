"""etcd config URLs and failing fast when etcd is down (no etcd needed)."""
from __future__ import annotations

import socket
import time

import pytest

from mdriver.config import load_config
from mdriver.config.etcd import EtcdAccess, EtcdSource, parse_url
from mdriver.config.sources import ConfigSourceError, open_source


def test_url_forms():
    assert parse_url("etcd://127.0.0.1:2379/mdriver") == ((("127.0.0.1", 2379),), "/mdriver", 5.0, EtcdAccess())
    assert parse_url("etcd://a:1,b,[::1]:3/x/y/?timeout=0.5") == ((("a", 1), ("b", 2379), ("::1", 3)), "/x/y", 0.5, EtcdAccess())
    src = open_source("etcd://h:1/p")
    assert isinstance(src, EtcdSource) and src.url == "etcd://h:1/p" and src.config_key == "/p/config"


@pytest.mark.parametrize("url, message", [
    ("etcd://127.0.0.1:2379", "missing key prefix"),
    ("etcd://127.0.0.1:2379/", "missing key prefix"),
    ("etcd://127.0.0.1:99999/p", "bad etcd port 99999"),
    ("etcd://h:x/p", "bad etcd endpoint 'h:x'"),
    ("etcd://h:1,/p", "bad etcd endpoint ''"),
    ("etcd://h/p?timeout=soon", "timeout must be a number of seconds, got 'soon'"),
    ("etcd://h/p?timeout=0", "timeout must be in \\(0, 300\\] seconds"),
    ("etcd://h/p?tsl=1", "unknown option 'tsl' \\(allowed: timeout, tls, ca, cert, key\\)"),
    ("etcd://h/p?tls=maybe", "tls must be 1 or 0, got 'maybe'"),
    ("etcd://h/p?ca=/nonexistent/ca.pem", "ca file '/nonexistent/ca.pem' does not exist"),
    ("etcd://@h/p", "empty etcd user name"),
])
def test_bad_urls_are_refused_with_the_reason(url, message):
    with pytest.raises(ConfigSourceError, match=message):
        open_source(url)


def test_tls_and_user_options(tmp_path):
    ca, cert, key = (tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem")
    for f in (ca, cert, key):
        f.write_text("pem")
    env = {"MDRIVER_ETCD_PASSWORD": "s3cret"}
    assert parse_url("etcd://h/p?tls=1", env)[3] == EtcdAccess(tls=True)
    assert parse_url(f"etcd://h/p?ca={ca}", env)[3] == EtcdAccess(tls=True, ca=str(ca))  # a CA file means TLS
    access = parse_url(f"etcd://ops%40eu@h1,h2/p?ca={ca}&cert={cert}&key={key}", env)[3]
    assert access == EtcdAccess(True, str(ca), str(cert), str(key), "ops@eu", "s3cret")
    assert "s3cret" not in repr(access)
    with pytest.raises(ConfigSourceError, match="needs both cert= and key="):
        parse_url(f"etcd://h/p?cert={cert}", env)
    with pytest.raises(ConfigSourceError, match="tls=0 contradicts ca="):
        parse_url(f"etcd://h/p?tls=0&ca={ca}", env)
    with pytest.raises(ConfigSourceError, match="etcd user 'ops' needs its password in the environment variable MDRIVER_ETCD_PASSWORD"):
        parse_url("etcd://ops@h/p", {})


def test_a_password_in_the_url_is_refused_and_not_repeated():
    with pytest.raises(ConfigSourceError, match="put the password in MDRIVER_ETCD_PASSWORD, not in the URL") as e:
        open_source("etcd://ops:hunter2@h:2379/p")
    assert "hunter2" not in str(e.value)


def test_an_unreachable_etcd_fails_fast_with_a_one_line_reason():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConfigSourceError) as e:
        load_config(f"etcd://127.0.0.1:{port}/mdriver?timeout=1")
    assert time.monotonic() - started < 3
    assert str(e.value) == f"etcd unreachable (127.0.0.1:{port} connection refused)"


def test_a_silent_etcd_times_out_within_the_bound():
    with socket.socket() as server:  # accepts TCP but never answers, like a frozen process
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConfigSourceError, match=f"etcd unreachable \\(127.0.0.1:{port} .*timed out"):
            EtcdSource.from_url(f"etcd://127.0.0.1:{port}/p?timeout=0.5").read()
        assert time.monotonic() - started < 2


def test_a_non_etcd_http_server_is_named_as_such():
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with pytest.raises(ConfigSourceError, match=f"etcd 127.0.0.1:{port}: unexpected answer to kv/range \\(is this etcd's client port\\?\\)"):
            EtcdSource.from_url(f"etcd://127.0.0.1:{port}/p?timeout=2").read()
    finally:
        server.shutdown()
        server.server_close()
