"""The mysql+mdriver SQLAlchemy dialect: Core and the ORM on the sharded user_relation."""
import os
import subprocess
import sys
from typing import Optional

import pytest
from sqlalchemy import BigInteger, Integer, String, create_engine, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


class Base(DeclarativeBase):
    pass


class Relation(Base):
    """The shard key is part of the mapped identity, so the ORM's UPDATE/DELETE route to one shard."""

    __tablename__ = "user_relation"
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    target_uid: Mapped[int] = mapped_column(BigInteger)
    relation_type: Mapped[int] = mapped_column(Integer, default=1)
    remark: Mapped[Optional[str]] = mapped_column(String(64))  # not str | None: SQLAlchemy evaluates it, and PyPy is 3.9


@pytest.fixture
def engine(mariadb_cluster):
    mariadb_cluster.truncate("app", "user_relation", reference=False)
    eng = create_engine(f"mysql+mdriver:///app?config={mariadb_cluster.config_path}")
    yield eng
    eng.dispose()
    mariadb_cluster.truncate("app", "user_relation", reference=False)


def test_dialect_is_registered(engine):
    from mdriver.sqla import MDriverDialect

    assert isinstance(engine.dialect, MDriverDialect)
    assert engine.dialect.driver == "mdriver"


def test_core_round_trip(engine):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO user_relation (id, uid, target_uid) VALUES (:id, :uid, :t)"),
                     [{"id": i, "uid": i * 37, "t": i} for i in range(1, 6)])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM user_relation")).scalar() == 5
        assert conn.execute(text("SELECT target_uid FROM user_relation WHERE uid = :u"), {"u": 74}).scalar() == 2
        assert conn.dialect.server_version_info[:2] >= (10, 0)
        assert conn.dialect.default_schema_name == "app"


def test_orm_on_sharded_table(engine):
    with Session(engine) as s:
        s.add_all([Relation(id=i, uid=uid, target_uid=i, remark="orm") for i, uid in enumerate([3, 515, 1027, 2050], 1)])
        s.commit()  # spans both datasources: XA under the hood
        got = s.scalars(select(Relation).where(Relation.uid == 515)).one()
        assert (got.id, got.target_uid) == (2, 2)
        got.remark = "changed"
        s.commit()
        s.expire_all()
        assert s.get(Relation, (515, 2)).remark == "changed"
        assert s.scalars(select(Relation.remark).where(Relation.uid == 515)).one() == "changed"
        assert s.scalar(select(func.count()).select_from(Relation)) == 4
        assert [r.uid for r in s.scalars(select(Relation).order_by(Relation.uid.desc()).limit(2))] == [2050, 1027]
        s.delete(got)
        s.commit()
        assert s.scalar(select(func.count()).select_from(Relation)) == 3
        # Without the shard key, a write would touch all 1024 tables: refused, precisely.
        from sqlalchemy import update
        from sqlalchemy.exc import NotSupportedError

        with pytest.raises(NotSupportedError, match="shard key"):
            s.execute(update(Relation).where(Relation.id == 1).values(remark="x"))
        s.rollback()
        # An update that changes nothing still counts as matched (FOUND_ROWS), as the ORM expects.
        same = s.scalars(select(Relation).where(Relation.uid == 3)).one()
        same.remark = "orm"
        s.flush()
        s.rollback()


def test_orm_example_runs(mariadb_cluster):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "orm_example.py"), "--config", mariadb_cluster.config_path],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rows across shards: 5" in proc.stdout and "rows left after delete: 4" in proc.stdout


def test_driver_demo_runs(mariadb_cluster):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "driver_demo.py"), "--config", mariadb_cluster.config_path],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rows changed after rollback: 0" in proc.stdout
