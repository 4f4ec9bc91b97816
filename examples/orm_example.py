"""SQLAlchemy ORM on a sharded table through the ``mysql+mdriver`` dialect.

    .venv/bin/python examples/orm_example.py [--config config/sharding.yaml]

The model maps the logical table ``user_relation``; mdriver routes every
statement the ORM emits to the right one of its 1024 physical tables.
Primary keys come from a snowflake generator, since AUTO_INCREMENT cannot be
unique across 1024 tables.
"""
from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlalchemy import BigInteger, DateTime, Integer, Numeric, SmallInteger, String, create_engine, func, select  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column  # noqa: E402

from mdriver.ids import Snowflake  # noqa: E402

ids = Snowflake(worker_id=7)
UIDS = [800001, 800002, 800513, 800514]  # slots 257, 258 (on ds0) and 769, 770 (on ds1)


class Base(DeclarativeBase):
    pass


class UserRelation(Base):
    __tablename__ = "user_relation"

    # The shard key is part of the mapped identity (the table's own key is id alone), so the
    # UPDATE and DELETE statements the ORM emits name uid and go to one physical table.
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False, default=lambda: ids.take(1)[0])
    target_uid: Mapped[int] = mapped_column(BigInteger)
    relation_type: Mapped[int] = mapped_column(SmallInteger, default=1)
    remark: Mapped[Optional[str]] = mapped_column(String(64))  # Optional: SQLAlchemy evaluates these on Python 3.9 too
    score: Mapped[Optional[Decimal]] = mapped_column(Numeric(12, 2))
    created_at = mapped_column(DateTime, server_default=func.now(6))

    def __repr__(self) -> str:
        return f"UserRelation(uid={self.uid}, target_uid={self.target_uid}, remark={self.remark!r}, score={self.score})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="SQLAlchemy ORM over mdriver")
    p.add_argument("--config", default="config/sharding.yaml")
    args = p.parse_args(argv)
    engine = create_engine(f"mysql+mdriver:///app?config={args.config}")
    try:
        with Session(engine) as session:
            session.query(UserRelation).filter(UserRelation.uid.in_(UIDS)).delete(synchronize_session=False)
            session.commit()

            print("add 5 follow relations for 4 users (both datasources): one XA transaction")
            session.add_all([UserRelation(uid=uid, target_uid=uid + 100, remark=f"orm {uid}") for uid in UIDS])
            session.add(UserRelation(uid=UIDS[0], target_uid=42, remark="orm second", score=Decimal("9.50")))
            session.commit()

            mine = session.scalars(select(UserRelation).where(UserRelation.uid == UIDS[0]).order_by(UserRelation.target_uid)).all()
            print(f"rows of uid {UIDS[0]} (routed to one table):", mine)

            mine[0].remark = "updated by the ORM"
            session.commit()
            again = session.get(UserRelation, (UIDS[0], mine[0].id))
            print("after update:", again)

            total = session.scalar(select(func.count()).select_from(UserRelation).where(UserRelation.uid.in_(UIDS)))
            print("rows across shards:", total)
            top = session.scalars(
                select(UserRelation).where(UserRelation.uid.in_(UIDS)).order_by(UserRelation.uid.desc()).limit(2)
            ).all()
            print("top 2 by uid (merged from several shards):", top)

            session.delete(again)
            session.commit()
            left = session.scalar(select(func.count()).select_from(UserRelation).where(UserRelation.uid.in_(UIDS)))
            print("rows left after delete:", left)
            if (total, left) != (5, 4):
                print(f"unexpected counts: {total} then {left}")
                return 1
    finally:
        with Session(engine) as session:
            session.query(UserRelation).filter(UserRelation.uid.in_(UIDS)).delete(synchronize_session=False)
            session.commit()
        engine.dispose()
        import mdriver

        mdriver.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
