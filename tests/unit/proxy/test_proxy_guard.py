"""The statement guard: a user stays inside its schemas (no server needed)."""
from __future__ import annotations

import os

import pytest

from mdriver import err
from mdriver.config import load_config
from proxy.guard import StatementGuard

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture(scope="module")
def guard():
    return StatementGuard(load_config(os.path.join(ROOT, "config", "sharding.yaml")))


def check(guard, sql, schemas=("app",)):
    word = sql.split(None, 1)[0].upper()
    guard.check(sql, word, schemas, "u", "h")


@pytest.mark.parametrize("sql", [
    "SELECT c FROM sbtest1 WHERE id = ?",
    "SELECT * FROM user_relation WHERE uid = 5 AND score > 1.5",
    "SELECT r.uid, g.name FROM user_relation r JOIN region g ON g.region_id = r.relation_type WHERE r.uid = 5",
    "SELECT * FROM app.user_relation WHERE uid = 5",
    "SELECT * FROM `app`.`region`",
    "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app'",
    "SELECT DATABASE(), USER()",
    "UPDATE user_relation SET remark = 'user.name' WHERE uid = 5",
    "CREATE TABLE t (a INT)",
    "START TRANSACTION",
])
def test_allowed(guard, sql):
    check(guard, sql)


@pytest.mark.parametrize("sql, errno", [
    ("SELECT User FROM mysql.user", 1044),
    ("SELECT * FROM app_ref.user_relation", 1044),
    ("SELECT * FROM app_17.user_relation_0555", 1044),
    ("SELECT * FROM user_relation WHERE uid IN (SELECT uid FROM other_db.t)", 1044),
    ("SELECT * FROM information_schema.USER_PRIVILEGES", 1044),
    ("SELECT * FROM INFORMATION_SCHEMA.processlist", 1044),
    ("SELECT LOAD_FILE('/etc/passwd')", 1227),
    ("SELECT a FROM t INTO OUTFILE '/tmp/x'", 1227),
    ("CREATE DATABASE x", 1227),
    ("DROP SCHEMA app", 1227),
    ("CREATE USER 'x'@'%'", 1227),
    ("GRANT ALL ON *.* TO x", 1227),
    ("LOAD DATA INFILE '/x' INTO TABLE t", 1227),
    ("FLUSH PRIVILEGES", 1227),
    ("START SLAVE", 1227),
])
def test_refused(guard, sql, errno):
    with pytest.raises(err.MySQLError) as e:
        check(guard, sql)
    assert e.value.errno == errno, e.value.args


def test_other_schemas_of_the_config_are_refused_unless_given(guard):
    with pytest.raises(err.MySQLError):
        check(guard, "SELECT * FROM app.region", schemas=("ops",))
    check(guard, "SELECT * FROM app.region", schemas=("ops", "app"))


def test_shapes_are_cached(guard):
    before = len(guard._cache)
    for uid in range(50):
        check(guard, f"SELECT * FROM user_relation WHERE uid = {uid} AND score > 1.5")
    assert len(guard._cache) - before <= 1
