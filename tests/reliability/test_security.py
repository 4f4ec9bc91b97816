"""Security: logins, schema access, TLS, secrets in logs and errors, and the refusal matrix
confirmed from the backends' general log (nothing refused may ever reach a backend).
"""
from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
import subprocess
import sys
import urllib.request
import uuid

import pymysql
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import mdriver
from mdriver.config import ConfigError, load_config
from mdriver.sandbox.cluster import free_port
from reliability_helpers import (
    DB_ERRORS, ROOT, GeneralLog, errno_of, message_of, multi_statement_client_flag, variant_config,
)

CLIENT_SECRET = "Client-Secret-1234"
BACKEND_USER, BACKEND_SECRET = "mdr_backend", "Backend-Secret-4821"
WRONG_BACKEND_SECRET = "Wrong-Backend-Secret-7730"
OPS_SECRET = "Ops-Secret-5512"
PROBE_DB = "mdriver_probe_escalation"


def login_error(proxy, **kw) -> tuple[int, str]:
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect(**kw).close()
    return info.value.args[0], info.value.args[1]


def query(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else ()


# -- logins ---------------------------------------------------------------------------------

@pytest.mark.parametrize("plugin", ["mysql_native_password", "caching_sha2_password"])
def test_wrong_empty_and_unknown_credentials_are_refused(mariadb_cluster, start_proxy, tmp_path, figures, plugin):
    path = variant_config(mariadb_cluster.config_path, tmp_path / "auth.yaml", timeouts=None,
                          edit=lambda d: d["proxy"]["users"]["app"].update(password=CLIENT_SECRET))
    proxy = start_proxy(path, "--auth-plugin", plugin)
    cases = {
        "wrong password": dict(password="not-the-password"),
        "empty password": dict(password=""),
        "unknown user": dict(user="nobody", password=CLIENT_SECRET),
        "right password, wrong case": dict(password=CLIENT_SECRET.lower()),
    }
    for what, kw in cases.items():
        code, message = login_error(proxy, **kw)
        assert code == 1045, (what, code, message)
        assert "Access denied" in message and CLIENT_SECRET not in message and "not-the-password" not in message, message
    assert "(using password: NO)" in login_error(proxy, password="")[1]
    conn = proxy.connect(password=CLIENT_SECRET)  # the right one still works afterwards
    assert query(conn, "SELECT COUNT(*) FROM user_relation WHERE uid = 5")[0][0] >= 0
    conn.close()
    figures.add("security", f"login refusals checked ({plugin})", len(cases) + 1)


def test_repeated_failed_logins_block_only_that_host(mariadb_cluster, start_proxy, tmp_path, figures):
    proxy = start_proxy(variant_config(mariadb_cluster.config_path, tmp_path / "block.yaml", timeouts=None))
    attempts = 0
    blocked = None
    for _ in range(40):
        attempts += 1
        try:
            proxy.connect(password="guess", bind_address="127.0.0.3").close()
        except pymysql.err.OperationalError as e:
            if e.args[0] != 1045:
                blocked = e.args
                break
    assert blocked is not None, "40 wrong passwords in a row were never throttled"
    assert "blocked" in blocked[1], blocked
    code, _ = login_error(proxy, bind_address="127.0.0.3")  # the right password from that host: still blocked
    assert code == blocked[0]
    conn = proxy.connect(bind_address="127.0.0.1")  # other hosts are unaffected
    conn.close()
    figures.add("security", "failed logins from one host before it is blocked", attempts - 1)


# -- schema access ----------------------------------------------------------------------------

def test_a_user_cannot_reach_a_schema_it_was_not_given(mariadb_cluster, start_proxy, tmp_path, figures):
    def edit(d):
        d["schemas"]["ops"] = {"datasource": "ds0", "tables": {}}
        d["proxy"]["users"]["opsuser"] = {"password": OPS_SECRET, "schemas": ["ops"]}

    conn0 = mariadb_cluster.connect("ds0")
    with conn0.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS ops")
        cur.execute("CREATE TABLE IF NOT EXISTS ops.notes (id INT PRIMARY KEY)")
    conn0.close()
    proxy = start_proxy(variant_config(mariadb_cluster.config_path, tmp_path / "ops.yaml", timeouts=None, edit=edit))
    checked = 0
    code, message = login_error(proxy, user="opsuser", password=OPS_SECRET, database="app")
    assert code == 1044 and "'app'" in message, message
    checked += 1
    conn = proxy.connect(user="opsuser", password=OPS_SECRET, database="ops")
    forbidden = [
        "USE app",
        "SELECT * FROM app.user_relation WHERE uid = 5",
        "SELECT * FROM app.region",
        "SELECT * FROM app_00.user_relation_0000",  # a physical database of the schema
        "SELECT * FROM app_ref.user_relation",  # a database of the backend outside any schema
        "SELECT User, Password FROM mysql.user",  # the backend's own accounts
        "SELECT * FROM information_schema.USER_PRIVILEGES",
        "SELECT LOAD_FILE('/etc/hostname')",  # a file on the database host, read with the backend's privileges
        f"CREATE DATABASE {PROBE_DB}",  # a write outside the user's schema
        f"CREATE TABLE app_ref.{PROBE_DB} (id INT)",
        "INSERT INTO app.region (region_id, name) VALUES (99, 'x')",
        "SHOW TABLES FROM app",
        "DESCRIBE app.user_relation",
    ]
    leaks = []
    try:
        for sql in forbidden:
            try:
                rows = query(conn, sql)
            except DB_ERRORS as e:
                if errno_of(e) in (2013, 2006, 0, -1):
                    raise
                checked += 1
                continue
            leaks.append((sql, rows[:3]))
        names = [r[0] for r in query(conn, "SHOW DATABASES")]
        assert "app" not in names and "app_ref" not in names and "mysql" not in names, names
        assert query(conn, "SELECT COUNT(*) FROM notes") == ((0,),)  # its own schema works
    finally:
        conn.close()
    app_conn = proxy.connect(database="app")
    try:
        for sql in ("SELECT User, Password FROM mysql.user", "SELECT * FROM app_ref.user_relation LIMIT 1",
                    "SELECT * FROM app_00.user_relation_0000 LIMIT 1", "USE ops"):
            try:
                rows = query(app_conn, sql)
            except DB_ERRORS:
                checked += 1
                continue
            leaks.append(("app: " + sql, rows[:3]))
    finally:
        app_conn.close()
        conn0 = mariadb_cluster.connect("ds0")
        with conn0.cursor() as cur:
            for stmt in ("DROP DATABASE IF EXISTS ops", f"DROP DATABASE IF EXISTS {PROBE_DB}", f"DROP TABLE IF EXISTS app_ref.{PROBE_DB}"):
                cur.execute(stmt)
        conn0.close()
    figures.add("security", "schema access attempts outside the user's schemas, refused", checked)
    figures.add("security", "schema access attempts that returned data", len(leaks))
    assert not leaks, leaks


# -- TLS ------------------------------------------------------------------------------------------

def self_signed(tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_tls_required_refuses_clients_that_do_not_offer_it(mariadb_cluster, start_proxy, tmp_path, figures):
    cert, key = self_signed(tmp_path)
    path = variant_config(mariadb_cluster.config_path, tmp_path / "tls.yaml", timeouts=None,
                          edit=lambda d: d["proxy"].update(tls={"cert": cert, "key": key, "required": True}))
    proxy = start_proxy(path)
    code, message = login_error(proxy, ssl_disabled=True)
    assert code == 3159 and "insecure transport" in message, (code, message)
    code, message = login_error(proxy, password="wrong", ssl_disabled=True)  # refused before any password is looked at
    assert code == 3159, (code, message)
    ctx = ssl.create_default_context(cafile=cert)
    conn = proxy.connect(ssl=ctx)
    try:
        cipher = query(conn, "SELECT COUNT(*) FROM user_relation WHERE uid = 5")
        assert cipher[0][0] >= 0
    finally:
        conn.close()
    figures.add("security", "TLS required: plain logins refused (3159), TLS login works", "yes")


def test_tls_required_without_a_certificate_is_refused_at_load(mariadb_cluster, tmp_path):
    """A proxy told to require TLS but given no certificate could only refuse everyone: reject the config."""
    path = variant_config(mariadb_cluster.config_path, tmp_path / "tls-nocert.yaml", timeouts=None,
                          edit=lambda d: d["proxy"].update(tls={"required": True}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "proxy.tls" in str(info.value)


# -- secrets never in logs or errors ---------------------------------------------------------------

@pytest.fixture
def backend_user(mariadb_cluster):
    for ds in mariadb_cluster.instances:
        conn = mariadb_cluster.connect(ds)
        with conn.cursor() as cur:
            cur.execute(f"CREATE USER IF NOT EXISTS '{BACKEND_USER}'@'%' IDENTIFIED BY '{BACKEND_SECRET}'")
            cur.execute(f"GRANT ALL ON *.* TO '{BACKEND_USER}'@'%'")
        conn.close()
    yield
    for ds in mariadb_cluster.instances:
        conn = mariadb_cluster.connect(ds)
        with conn.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{BACKEND_USER}'@'%'")
        conn.close()


def test_no_credentials_in_logs_errors_or_status(mariadb_cluster, backend_user, start_proxy, tmp_path, caplog, figures):
    metrics_port = free_port()

    def edit(d):
        d["datasources"]["ds0"].update(user=BACKEND_USER, password=BACKEND_SECRET)
        d["datasources"]["ds1"].update(user=BACKEND_USER, password=WRONG_BACKEND_SECRET)
        d["proxy"]["users"]["app"]["password"] = CLIENT_SECRET
        d["proxy"]["metrics"] = f"127.0.0.1:{metrics_port}"

    path = variant_config(mariadb_cluster.config_path, tmp_path / "secrets.yaml", timeouts=2, edit=edit)
    secrets = (CLIENT_SECRET, BACKEND_SECRET, WRONG_BACKEND_SECRET)
    seen: list[str] = []
    # Through the proxy, logging everything.
    proxy = start_proxy(path, log_level="DEBUG")
    for pw in ("wrong", ""):
        seen.append(login_error(proxy, password=pw)[1])
    conn = proxy.connect(password=CLIENT_SECRET)
    for sql in ("SELECT COUNT(*) FROM user_relation WHERE uid = 5", "SELECT COUNT(*) FROM user_relation WHERE uid = 600",
                "SELECT COUNT(*) FROM user_relation", "SHOW MDRIVER STATUS", "SELECT nonsense FROM nowhere"):
        try:
            seen.append(repr(query(conn, sql)))
        except DB_ERRORS as e:
            seen.append(message_of(e))
    conn.close()
    ds1_errors = [m for m in seen if "ds1 (127.0.0.1:" in m]
    assert ds1_errors, f"the wrong backend password for ds1 did not surface as an error naming ds1: {seen}"
    seen.append(urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode())
    proxy.stop()
    seen.append(proxy.output())
    # Through the driver, logging everything.
    caplog.set_level(logging.DEBUG)
    driver = mdriver.connect(config=path, schema="app", autocommit=True)
    for sql in ("SELECT COUNT(*) FROM user_relation WHERE uid = 600", "SELECT COUNT(*) FROM user_relation"):
        try:
            query(driver, sql)
        except DB_ERRORS as e:
            seen.append(message_of(e))
            seen.append(repr(e))
    driver.close()
    seen.append(caplog.text)
    seen.append(repr(load_config(path)))
    # The config tool's layout summary.
    out = subprocess.run([sys.executable, "-m", "mdriver.config.cli", "check", path], cwd=str(ROOT),
                         capture_output=True, text=True, timeout=60)
    seen.append(out.stdout + out.stderr)
    leaked = [(s, text[max(0, text.find(s) - 80): text.find(s) + 40]) for text in seen for s in secrets if s in text]
    figures.add("security", "texts searched for secrets (errors, status, metrics, logs, config check)", len(seen))
    figures.add("security", "secrets found in logs or errors", len(leaked))
    assert not leaked, leaked




@pytest.mark.parametrize("arm", ["proxy", "driver"])
def test_a_backend_refusing_the_login_is_named(mariadb_cluster, backend_user, start_proxy, tmp_path, arm):
    """With several datasources, an operator must be told which one refused the backend credentials."""
    def edit(d):
        d["datasources"]["ds0"].update(user=BACKEND_USER, password=BACKEND_SECRET)
        d["datasources"]["ds1"].update(user=BACKEND_USER, password=WRONG_BACKEND_SECRET)

    path = variant_config(mariadb_cluster.config_path, tmp_path / "named.yaml", timeouts=2, edit=edit)
    conn = start_proxy(path).connect() if arm == "proxy" else mdriver.connect(config=path, schema="app", autocommit=True)
    try:
        assert query(conn, "SELECT COUNT(*) FROM user_relation WHERE uid = 5") == ((0,),)  # ds0 is fine
        with pytest.raises(DB_ERRORS) as info:
            query(conn, "SELECT COUNT(*) FROM user_relation WHERE uid = 600")
    finally:
        conn.close()
    message = message_of(info.value)
    assert f"ds1 (127.0.0.1:{mariadb_cluster.instances['ds1'].port})" in message, message
    assert WRONG_BACKEND_SECRET not in message


# -- the refusal matrix, from the backends' general log ------------------------------------------

REFUSALS = [
    ("multi-statement", "SELECT id FROM user_relation WHERE uid = 5 AND remark = '{m}'; SELECT 1"),
    ("multi-statement", "SELECT '{m}' FROM user_relation WHERE uid = 5; DELETE FROM user_relation WHERE uid = 5"),
    ("multi-statement", "UPDATE user_relation SET remark = '{m}' WHERE uid = 5;UPDATE user_relation SET remark = 'x' WHERE uid = 6"),
    ("executable comment", "SELECT id FROM user_relation WHERE /*!50000 uid = 6 OR */ uid = 5 AND remark = '{m}'"),
    ("executable comment", "SELECT id FROM user_relation WHERE /*M! uid = 6 OR */ uid = 5 AND remark = '{m}'"),
    ("executable comment", "/*!40000 DELETE FROM user_relation WHERE remark = '{m}' */"),
    ("scatter DML", "UPDATE user_relation SET remark = '{m}' WHERE target_uid = 1"),
    ("scatter DML", "DELETE FROM user_relation WHERE remark = '{m}'"),
    ("scatter DML", "UPDATE user_relation SET remark = '{m}' WHERE uid > 5"),
    ("shard-key update", "UPDATE user_relation SET uid = 7, remark = '{m}' WHERE uid = 5"),
    ("shard-key update", "UPDATE user_relation SET uid = uid + 1 WHERE uid = 5 AND remark = '{m}'"),
    ("shard-key update", "INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (1, 5, 1, '{m}') "
                         "ON DUPLICATE KEY UPDATE uid = 9"),
]
CONTROLS = [
    "SELECT id FROM user_relation WHERE uid = 5 AND remark = '{m}'",
    "UPDATE user_relation SET remark = '{m}' WHERE uid = 5 AND id = -1",
]


def test_refused_statements_never_reach_a_backend(mariadb_cluster, start_proxy, tmp_path, figures):
    proxy = start_proxy(variant_config(mariadb_cluster.config_path, tmp_path / "refusals.yaml", timeouts=None))
    arms = {
        "driver": lambda: mdriver.connect(config=mariadb_cluster.config_path, schema="app", autocommit=True),
        "driver, in a transaction": lambda: mdriver.connect(config=mariadb_cluster.config_path, schema="app"),
        "proxy": lambda: proxy.connect(),
        "proxy, multi-statements flag": lambda: proxy.connect(client_flag=multi_statement_client_flag()),
        "proxy, in a transaction": lambda: proxy.connect(autocommit=False),
    }
    results = []  # (arm, category, sql, errno, message, marker)
    controls = []  # (arm, marker)
    with GeneralLog(mariadb_cluster.connect, mariadb_cluster.instances) as general_log:
        for arm, open_conn in arms.items():
            conn = open_conn()
            try:
                if "transaction" in arm:
                    conn.begin()
                    query(conn, "SELECT id FROM user_relation WHERE uid = 5 FOR UPDATE")
                for category, template in REFUSALS:
                    marker = f"rfz{uuid.uuid4().hex[:12]}"
                    sql = template.format(m=marker)
                    try:
                        query(conn, sql)
                        results.append((arm, category, sql, 0, "accepted", marker))
                    except DB_ERRORS as e:
                        results.append((arm, category, sql, errno_of(e), message_of(e), marker))
                        if "transaction" in arm:
                            conn.rollback()
                            conn.begin()
                    if not conn.open:
                        conn = open_conn()
                for template in CONTROLS:
                    marker = f"ctl{uuid.uuid4().hex[:12]}"
                    query(conn, template.format(m=marker))
                    controls.append((arm, marker))
                if "transaction" in arm:
                    conn.rollback()
            finally:
                conn.close()
        reached = [(arm, sql, general_log.statements_with(marker)) for arm, _, sql, _, _, marker in results]
        reached = [r for r in reached if r[2]]
        unseen_controls = [(arm, m) for arm, m in controls if not general_log.statements_with(m)]
    accepted = [r for r in results if r[3] == 0]
    unclear = [r for r in results if r[3] not in (1235, 1290) or len(r[4]) < 20]
    figures.add("security", "refusal matrix: statements refused (driver and proxy, autocommit and in transactions)",
                len(results) - len(accepted))
    figures.add("security", "refusal matrix: refused statements found in the backends' general log", len(reached))
    figures.add("security", "refusal matrix: accepted statements found in the general log (control)",
                len(controls) - len(unseen_controls))
    assert not unseen_controls, f"the general log check sees nothing: {unseen_controls}"
    assert not accepted, [(a, s) for a, _, s, _, _, _ in accepted]
    assert not reached, reached[:5]
    assert not unclear, [(a, s, c, m) for a, _, s, c, m, _ in unclear][:5]
