"""Real clients against the proxy on the 32 x 32 layout: aiomysql, the mariadb CLI, SQLAlchemy ORM, Node mysql2."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from decimal import Decimal
from typing import Optional

import pytest
from sqlalchemy import BigInteger, Integer, Numeric, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")


@pytest.fixture
def clean(mariadb_cluster):
    mariadb_cluster.truncate("app", "user_relation")
    mariadb_cluster.truncate("app", "region")
    yield


def test_aiomysql(proxy, clean):
    import aiomysql

    async def run():
        pool = await aiomysql.create_pool(host=proxy.host, port=proxy.port, user="app", password="app-secret", db="app",
                                          autocommit=False, minsize=1, maxsize=4)
        try:
            async def insert(uid):
                async with pool.acquire() as conn:
                    async with conn.cursor() as cur:
                        await cur.execute("INSERT INTO user_relation (id, uid, target_uid) VALUES (%s, %s, %s)", (uid, uid, 0))
                    await conn.commit()

            await asyncio.gather(*(insert(uid) for uid in range(1, 41)))
            async with pool.acquire() as conn:
                async with conn.cursor() as cur:
                    await cur.execute("SELECT COUNT(*), SUM(uid) FROM user_relation")
                    total = await cur.fetchone()
                    await cur.execute("SELECT uid FROM user_relation WHERE uid = %s", (17,))
                    one = await cur.fetchall()
                await conn.rollback()
            return total, one
        finally:
            pool.close()
            await pool.wait_closed()

    total, one = asyncio.run(run())
    assert total == (40, Decimal(820)) and one == ((17,),)


def _mariadb_cli(proxy, *args, sql: str) -> subprocess.CompletedProcess:
    cli = shutil.which("mariadb") or shutil.which("mysql")
    return subprocess.run([cli, "-h", "127.0.0.1", "-P", str(proxy.port), "-u", "app", "-papp-secret", "--protocol=TCP",
                           "--skip-ssl", *args, "-e", sql], capture_output=True, text=True, timeout=60)


def test_mariadb_cli(proxy, clean):
    out = _mariadb_cli(proxy, "app", sql=(
        "INSERT INTO user_relation (id, uid, target_uid, remark) VALUES (1, 5, 6, 'cli'), (2, 600, 7, 'cli2');"
    ))
    assert out.returncode == 0, out.stderr
    out = _mariadb_cli(proxy, "app", "--batch", sql="SELECT uid, remark FROM user_relation ORDER BY uid; SHOW TABLES; SELECT DATABASE();")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:3] == ["uid\tremark", "5\tcli", "600\tcli2"]
    assert "user_relation" in lines and lines[-2:] == ["DATABASE()", "app"]
    out = _mariadb_cli(proxy, "app", sql="DELETE FROM user_relation")
    assert out.returncode == 1 and "ERROR 1290" in out.stderr
    out = _mariadb_cli(proxy, "app", "--batch", sql="status")
    assert out.returncode == 0 and "mdriver" in out.stdout


class Base(DeclarativeBase):
    pass


class Relation(Base):
    """The shard key is part of the ORM identity, so updates and deletes carry it (and route to one shard)."""

    __tablename__ = "user_relation"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    target_uid: Mapped[int] = mapped_column(BigInteger)
    relation_type: Mapped[int] = mapped_column(Integer, default=1)
    remark: Mapped[Optional[str]] = mapped_column(String(64))
    score: Mapped[Optional[Decimal]] = mapped_column(Numeric(12, 2))


class Region(Base):
    __tablename__ = "region"
    region_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(64))


def test_sqlalchemy_orm(proxy, clean):
    engine = create_engine(f"mysql+pymysql://app:app-secret@127.0.0.1:{proxy.port}/app", pool_size=2)
    try:
        with Session(engine) as s:
            s.add_all([Relation(id=i, uid=uid, target_uid=0, remark=f"orm{i}", score=Decimal("1.5"))
                       for i, uid in enumerate([5, 600, 1025, 70000], start=1)])
            s.add(Region(region_id=1, name="north"))
            s.commit()
        with Session(engine) as s:
            r = s.scalars(select(Relation).where(Relation.uid == 600)).one()
            assert (r.id, r.remark, r.score) == (2, "orm2", Decimal("1.50"))
            r.remark = "changed"
            s.commit()
            assert s.scalar(select(func.count()).select_from(Relation)) == 4
            assert [x.uid for x in s.scalars(select(Relation).order_by(Relation.uid.desc()).limit(2))] == [70000, 1025]
            assert s.get(Region, 1).name == "north"
        with Session(engine) as s:
            assert s.scalars(select(Relation.remark).where(Relation.uid == 600)).one() == "changed"
            s.delete(s.scalars(select(Relation).where(Relation.uid == 5)).one())
            s.commit()
            assert s.scalar(select(func.count()).select_from(Relation)) == 3
    finally:
        engine.dispose()


def test_node_mysql2(proxy, clean):
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "mysql2")):
        npm = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
        assert npm.returncode == 0, f"npm install failed: {npm.stderr[-2000:]}"
    out = subprocess.run(["node", "client.js", "127.0.0.1", str(proxy.port), "app", "app-secret", "app"], cwd=NODE_DIR,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["byKey"] == [{"id": "2", "uid": "600", "remark": "node 600 ü", "score": "12.50", "created_at": "2024-05-06 07:08:09.123456"}]
    assert got["count"] == [{"n": "3", "s": "37.50"}]
    assert got["ordered"] == ["70000", "600"]
    assert got["remarks"] == [{"uid": "5", "remark": "node 5 ü"}, {"uid": "600", "remark": "node 600 ü"},
                              {"uid": "70000", "remark": "committed"}]
    assert got["error"]["errno"] == 1290
    assert got["tables"] == ["region", "user_fans", "user_relation"]
