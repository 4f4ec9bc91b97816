"""Every refusal and failure a DBA can meet: a precise message, what to do next, an exit code; never a traceback."""
import json
import signal

from migrator_harness import Harness


def _error(p):
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("mdriver-migrate: error:")]
    assert lines, p.stderr
    assert "next:" in p.stderr
    return p.stderr


def test_plan_refuses_with_the_fix_for_each_problem(harness, make_mariadb, mariadb_cluster, tmp_path):
    # A table without a primary key and with a nullable shard key.
    harness.source_sql("DROP TABLE app.user_relation",
                       "CREATE TABLE app.user_relation (id BIGINT UNSIGNED NOT NULL, uid BIGINT NULL, target_uid BIGINT "
                       "NOT NULL, KEY (id)) ENGINE=InnoDB")
    p = harness.cli("plan", harness.logical, check=False)
    assert p.returncode == 2
    err = _error(p)
    assert "has no primary key" in p.stdout and "ADD PRIMARY KEY" in p.stdout
    assert "shard key column uid allows NULL" in p.stdout and "NOT NULL" in p.stdout
    assert "2 problem(s)" in err

    # Binlog settings, on a source server configured the wrong way.
    bad = make_mariadb("badbinlog", binlog_format="MIXED", binlog_row_metadata="MINIMAL")
    h = Harness(mariadb_cluster, tmp_path / "bad", source_ds="src", extra_servers={"src": bad})
    h.create_source()
    p = h.cli("plan", h.logical, check=False)
    assert p.returncode == 2
    assert "binlog_format is MIXED, the migrator needs ROW" in p.stdout
    assert "SET GLOBAL binlog_format = 'ROW'" in p.stdout
    assert "binlog_row_metadata is MINIMAL" in p.stdout

    # Privileges, for a user that may only read.
    harness.source_sql("DROP TABLE app.user_relation")
    harness.create_source()
    harness.source_sql("CREATE USER IF NOT EXISTS 'mig_ro'@'%' IDENTIFIED BY 'pw'",
                       "GRANT SELECT ON app.* TO 'mig_ro'@'%'")
    try:
        ds0 = mariadb_cluster.instances["ds0"]
        h2 = Harness(mariadb_cluster, tmp_path / "ro", source_ds="ro",
                     extra_datasources={"ro": {"host": ds0.host, "port": ds0.port, "user": "mig_ro", "password": "pw"}})
        p = h2.cli("plan", h2.logical, check=False)
        assert p.returncode == 2
        assert "lacks REPLICATION SLAVE on *.*" in p.stdout and "GRANT REPLICATION SLAVE ON *.* TO 'mig_ro'@'%'" in p.stdout
    finally:
        harness.source_sql("DROP USER IF EXISTS 'mig_ro'@'%'")

    # A config without a migration block: plan --source adds it, but only once the plan passes.
    import yaml

    doc = yaml.safe_load(open(harness.config_path))
    del doc["schemas"]["app"]["tables"]["user_relation"]["migration"]
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(doc, sort_keys=False))
    p = harness.cli("plan", harness.logical, "--source", "ds0.app.no_such_table", config=str(bare), check=False)
    assert p.returncode == 2 and "table app.no_such_table does not exist" in p.stdout
    assert "migration" not in bare.read_text()
    p = harness.cli("plan", harness.logical, "--source", "ds0.app.user_relation", config=str(bare))
    assert "added the migration block" in p.stdout
    assert yaml.safe_load(bare.read_text())["schemas"]["app"]["tables"]["user_relation"]["migration"]["source"] == \
        {"datasource": "ds0", "database": "app", "table": "user_relation"}

    # Shard tables that already hold rows.
    shard = mariadb_cluster.connect("ds1")
    shard.cursor().execute("INSERT INTO app_31.user_relation_1023 (id, uid, target_uid) VALUES (1, 1023, 1)")
    p = harness.cli("plan", harness.logical, check=False)
    assert p.returncode == 2 and "already hold rows (e.g. app_31.user_relation_1023)" in p.stdout
    start = harness.cli("start", harness.logical, "--quiet", check=False)
    assert start.returncode == 2 and "already hold rows" in _error(start)


def test_ddl_on_the_source_stops_the_migration_until_a_policy_allows_it(harness):
    harness.fill_source(1000)
    harness.cli("plan", harness.logical)
    p = harness.start()
    harness.wait(lambda: harness.phase() == "streaming", 60, "the streaming phase", p)
    harness.source_sql("INSERT INTO app.user_relation (id, uid, target_uid) VALUES (5001, 7, 7)",
                       "ALTER TABLE app.user_relation ADD INDEX ix_remark (remark)",
                       "INSERT INTO app.user_relation (id, uid, target_uid) VALUES (5002, 8, 8)")
    assert p.wait(30) == 3
    log = harness.log_of(p)
    assert "the source table app.user_relation changed" in log and "ADD INDEX ix_remark" in log
    assert "--on-ddl=ignore" in log and "Traceback" not in log
    status = json.loads(harness.cli("status", harness.logical, "--json").stdout)
    assert status["phase"] == "stopped" and "changed" in status["error"] and not status["running"]
    # Stopped before the DDL: the row before it arrived, the one after did not.
    assert 5001 in harness.shard_rows("uid") and 5002 not in harness.shard_rows("uid")

    p = harness.start("--on-ddl", "ignore")
    harness.caught_up(p)
    assert harness.compare()["bad"] == 0
    assert harness.stop(p) == 0


def test_a_purged_binlog_is_a_clear_error(harness):
    harness.fill_source(500)
    harness.cli("plan", harness.logical)
    p = harness.start()
    harness.caught_up(p)
    harness.stop(p)
    needed = min(cp.position for cp in harness.forward_checkpoints().values()).file
    harness.source_sql("FLUSH BINARY LOGS", "INSERT INTO app.user_relation (id, uid, target_uid) VALUES (9001, 1, 1)")

    def purged():
        # MariaDB keeps a file until its binlog checkpoint moves on; flush and purge until it is gone.
        harness.source_sql("FLUSH BINARY LOGS")
        harness.source_sql(f"PURGE BINARY LOGS TO '{harness.master_position().file}'")
        conn = harness.connect()
        with conn.cursor() as cur:
            cur.execute("SHOW BINARY LOGS")
            files = [r[0] for r in cur.fetchall()]
        conn.close()
        return needed not in files

    harness.wait(purged, 30, f"{needed} to be purged")
    again = harness.cli("start", harness.logical, "--quiet", check=False, timeout=60)
    assert again.returncode == 5
    err = _error(again)
    assert "no longer has binlog" in err and "abort --empty-targets" in err


def test_a_lost_source_is_a_clear_error_and_resume_works(mariadb_cluster, make_mariadb, tmp_path):
    src = make_mariadb("lostsource")
    h = Harness(mariadb_cluster, tmp_path, source_ds="src", source_db="legacy", extra_servers={"src": src})
    h.cleanup()
    h.create_source()
    try:
        h.fill_source(800)
        h.cli("plan", h.logical)
        p = h.start("--retry-for", "2")
        h.caught_up(p)
        src.kill(signal.SIGKILL)
        assert p.wait(60) == 4
        log = h.log_of(p)
        assert "lost the source src" in log and "progress is saved" in log and "Traceback" not in log
        src.start()
        h.source_sql("INSERT INTO legacy.user_relation (id, uid, target_uid) VALUES (9100, 5, 5)")
        p = h.start()
        h.caught_up(p)
        assert h.compare()["bad"] == 0
        h.stop(p)
    finally:
        h.cleanup()


def test_a_full_disk_on_a_shard_is_a_clear_error(mariadb_cluster, make_mariadb, tmp_path):
    full = make_mariadb("fulldisk", innodb_file_per_table=0, innodb_data_file_path="ibdata1:12M:autoextend:max:14M")
    rule = {"shard_key": "uid", "algorithm": "mod", "databases": 2, "tables_per_database": 2,
            "placement": {"full": "0-1"}}
    h = Harness(mariadb_cluster, tmp_path, table="big_rows", extra_tables={"big_rows": rule}, extra_servers={"full": full})
    h.cleanup(drop_shards=True)
    h.create_source("CREATE TABLE {name} (id INT PRIMARY KEY, uid INT NOT NULL, payload LONGTEXT) ENGINE=InnoDB")
    try:
        h.source_sql("INSERT INTO app.big_rows SELECT seq, seq, REPEAT('x', 20000) FROM app.seq_1_to_800")
        h.cli("plan", h.logical)
        p = h.cli("start", h.logical, "--quiet", "--chunk-rows", "100", check=False, timeout=120)
        assert p.returncode == 6, p.stderr
        err = _error(p)
        assert "shard full" in err and "is out of space" in err and "free disk space" in err
        assert "rolled back" in err  # nothing past the last checkpoint was applied
        status = json.loads(h.cli("status", h.logical, "--json").stdout)
        assert not status["running"]
    finally:
        h.cleanup(drop_shards=True)


def test_verify_lists_the_differing_keys_and_cutover_refuses(harness, mariadb_cluster):
    harness.fill_source(2000)
    harness.cli("plan", harness.logical)
    refused = harness.cli("cutover-reads", harness.logical, check=False)
    assert refused.returncode == 2 and "has not been started" in _error(refused)
    p = harness.start()
    harness.caught_up(p)
    refused = harness.cli("cutover-reads", harness.logical, check=False)
    assert refused.returncode == 2 and "has not been verified" in _error(refused)
    second = harness.cli("start", harness.logical, "--quiet", check=False)
    assert second.returncode == 2 and "another `mdriver-migrate start` is running" in _error(second)
    harness.stop(p)

    # Damage the shards behind the migrator's back: verify must notice each kind.
    from mdriver.sharding import locate
    schema = harness.config.schemas["app"]
    rule = schema.tables["user_relation"]
    rows = harness.source_rows("uid")
    ids = sorted(rows)
    changed, deleted, moved = ids[10], ids[20], ids[30]

    def place(i):
        loc = locate(schema, rule, rows[i][0])
        return loc, mariadb_cluster.connect(loc.datasource)

    loc, c = place(changed)
    c.cursor().execute(f"UPDATE {loc.database}.{loc.table} SET remark = 'tampered' WHERE id = {changed}")
    loc, c = place(deleted)
    c.cursor().execute(f"DELETE FROM {loc.database}.{loc.table} WHERE id = {deleted}")
    loc, c = place(moved)
    other = "user_relation_0000" if loc.table != "user_relation_0000" else "user_relation_0001"
    c2 = mariadb_cluster.connect("ds0")
    c2.cursor().execute(f"INSERT INTO app_00.{other} SELECT * FROM {loc.database}.{loc.table} WHERE id = {moved}")
    c.cursor().execute(f"DELETE FROM {loc.database}.{loc.table} WHERE id = {moved}")
    c2.cursor().execute(f"INSERT INTO app_00.user_relation_0000 (id, uid, target_uid) VALUES (7777777, 0, 0)")

    v = harness.cli("verify", harness.logical, check=False)
    assert v.returncode == 7, v.stdout + v.stderr
    assert f"different  ({changed})" in v.stdout
    assert f"missing    ({deleted})" in v.stdout
    assert f"misplaced  ({moved}) in ds0 app_00.{other}" in v.stdout
    assert "extra      (7777777) in ds0 app_00.user_relation_0000" in v.stdout
    assert "source and shards differ" in _error(v)

    p = harness.start()
    harness.wait(lambda: harness.state().running() and harness.phase() == "streaming", 30, "a running migrator", p)
    refused = harness.cli("cutover-reads", harness.logical, check=False)
    assert refused.returncode == 2 and "found differences" in _error(refused)
    harness.stop(p)


def test_verify_fails_closed_when_a_shard_is_unreachable(harness, tmp_path):
    import yaml

    harness.fill_source(300)
    harness.cli("plan", harness.logical)
    p = harness.start()
    harness.caught_up(p)
    harness.stop(p)
    doc = yaml.safe_load(open(harness.config_path))
    from mdriver.sandbox.cluster import free_port

    doc["datasources"]["ds1"]["port"] = free_port()  # nothing listens there
    broken = Harness.__new__(Harness)
    broken.__dict__.update(harness.__dict__)
    broken.config_path = str(tmp_path / "broken.yaml")
    yaml.safe_dump(doc, open(broken.config_path, "w"), sort_keys=False)
    v = broken.cli("verify", harness.logical, check=False)
    assert v.returncode == 4
    err = _error(v)
    assert "lost the shard ds1" in err and "ok" not in v.stdout
    status = harness.cli("status", harness.logical).stdout
    assert "last verify:  FAILED" in status and "lost the shard ds1" in status


def test_cutover_writes_refuses_before_fencing_when_nobody_can_confirm(harness):
    harness.fill_source(300)
    harness.cli("plan", harness.logical)
    p = harness.start()
    harness.caught_up(p)
    harness.cli("verify", harness.logical)
    harness.cli("cutover-reads", harness.logical, "--to", "shards")
    refused = harness.cli("cutover-writes", harness.logical, check=False)  # no TTY, no --confirm-fence
    assert refused.returncode == 2 and "--confirm-fence" in _error(refused)
    assert harness.migration.writes == "source"
    harness.stop(p)
    refused = harness.cli("cutover-writes", harness.logical, "--confirm-fence", check=False)
    assert refused.returncode == 2 and "is not running" in _error(refused)
    assert harness.migration.writes == "source"
