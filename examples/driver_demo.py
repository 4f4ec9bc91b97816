"""A short tour of the mdriver DB-API driver against the local sandbox.

    .venv/bin/mdriver-sandbox up            # two MariaDB servers with the 32 x 32 layout
    .venv/bin/python examples/driver_demo.py [--config config/sharding.yaml]

It writes a few follow relations (uids 900001..900006), reads them back by
shard key and across all shards, runs a transaction spanning both
datasources, shows where each row physically lives, and removes its rows.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mdriver  # noqa: E402
from mdriver.sharding import locate  # noqa: E402

UIDS = [900001, 900002, 900003, 900004, 900005, 900006]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="mdriver driver demo")
    p.add_argument("--config", default="config/sharding.yaml")
    args = p.parse_args(argv)

    conn = mdriver.connect(config=args.config, schema="app")
    cur = conn.cursor()
    config = conn.config
    schema = config.schemas["app"]
    rule = schema.tables["user_relation"]
    try:
        cur.execute("DELETE FROM user_relation WHERE uid IN %s", (UIDS,))
        conn.commit()

        print("1. inserts, each routed by uid (slot = uid % 1024):")
        for i, uid in enumerate(UIDS):
            cur.execute(
                "INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (%s, %s, %s, %s)",
                (uid * 10, uid, uid + 1, f"demo {i}"),
            )
            loc = locate(schema, rule, uid)
            print(f"   uid {uid} -> {loc.datasource} {loc.database}.{loc.table}")
        conn.commit()  # these rows span ds0 and ds1: an XA two-phase commit

        print("2. a point select by shard key goes to one physical table:")
        cur.execute("SELECT id, uid, target_uid, remark FROM user_relation WHERE uid = %s", (UIDS[0],))
        print("  ", cur.fetchall())

        print("3. a query without the shard key is scattered and merged:")
        cur.execute(
            "SELECT uid, remark FROM user_relation WHERE uid BETWEEN %s AND %s ORDER BY uid DESC LIMIT 3",
            (UIDS[0], UIDS[-1]),
        )
        for row in cur.fetchall():
            print("  ", row)
        cur.execute("SELECT COUNT(*) FROM user_relation WHERE remark LIKE %s", ("demo %",))
        print("   count of demo rows on all 1024 tables:", cur.fetchone()[0])

        print("4. a transaction across both datasources, rolled back:")
        cur.execute("UPDATE user_relation SET remark = 'changed' WHERE uid = %s", (UIDS[0],))
        cur.execute("UPDATE user_relation SET remark = 'changed' WHERE uid = %s", (UIDS[-1],))
        print("   branches:", ", ".join(sorted(conn.txn.branches)))
        conn.rollback()
        cur.execute("SELECT COUNT(*) FROM user_relation WHERE remark = 'changed' AND uid IN %s", (UIDS,))
        print("   rows changed after rollback:", cur.fetchone()[0])

        print("5. a refusal is a clear MySQL error, not a traceback:")
        try:
            cur.execute("UPDATE user_relation SET uid = 1 WHERE uid = %s", (UIDS[0],))
        except mdriver.Error as e:
            print(f"   {type(e).__name__} {e.args[0]}: {e.args[1]}")
            conn.rollback()
    finally:
        cur.execute("DELETE FROM user_relation WHERE uid IN %s", (UIDS,))
        conn.commit()
        conn.close()
        mdriver.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
