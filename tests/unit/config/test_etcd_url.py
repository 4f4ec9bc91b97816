"""etcd config URLs and failing fast when etcd is down (no etcd needed)."""
from __future__ import annotations

import socket
import time

import pytest

from mdriver.config import load_config
from mdriver.config.etcd import EtcdSource, parse_url
from mdriver.config.sources import ConfigSourceError, open_source


def test_url_forms():
    assert parse_url("etcd://127.0.0.1:2379/mdriver") == ((("127.0.0.1", 2379),), "/mdriver", 5.0)
    assert parse_url("etcd://a:1,b,[::1]:3/x/y/?timeout=0.5") == ((("a", 1), ("b", 2379), ("::1", 3)), "/x/y", 0.5)
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
    ("etcd://h/p?tls=1", "unknown option 'tls' \\(allowed: timeout\\)"),
])
def test_bad_urls_are_refused_with_the_reason(url, message):
    with pytest.raises(ConfigSourceError, match=message):
        open_source(url)


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
