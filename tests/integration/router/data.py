"""Deterministic test data for the router's differential suite.

The same rows go into the unsharded reference database (plain PyMySQL) and
into the 32 x 32 layout (through the router). They spread over many slots
and both datasources and include NULLs, duplicates, negative and very large
shard keys, and non-ASCII text. Strings are chosen so that no two distinct
values are equal under utf8mb4_general_ci (no 'a'/'A', 'e'/'é' or 'x'/'x '
pairs), because then MySQL itself may return either spelling.
"""
from __future__ import annotations

import datetime
import random
from decimal import Decimal

SEED = 20240611

USER_RELATION_COLUMNS = ("id", "uid", "target_uid", "relation_type", "remark", "score", "created_at")
USER_FANS_COLUMNS = ("id", "uid", "fan_uid", "level", "created_at")
REGION_COLUMNS = ("region_id", "name")

REMARKS = (
    None, None, "friend", "family", "colleague", "café", "naïve", "Zürich", "中文备注", "日本語", "emoji 😀",
    "", "with 'quote'", "back\\slash", "percent 50%", "trailing", "Ölfeld", "straße", "ÆON", "x" * 64,
)
REGIONS = ((1, "north"), (2, "south"), (3, "east"), (4, "west"), (5, "centre"), (6, "Île-de-France"),
           (7, "東京"), (8, "São Paulo"), (9, "Kraków"), (10, "outer space"))

# shard keys: small, negative, around slot boundaries, and large; some hold many rows
UIDS = sorted({
    *range(1, 60), *range(1020, 1030), 2047, 2048, 4095, 100_000, 123_456_789,
    -1, -2, -1024, -1025, -77_777, 0, 2 ** 40 + 3, 9_007_199_254_740_993,
    *(k * 1024 + 5 for k in range(1, 12)),  # all in slot 5
    *(k * 31 + 7 for k in range(100, 160)),
})


def user_relation_rows(n: int = 3000) -> list[tuple]:
    rnd = random.Random(SEED)
    base = datetime.datetime(2024, 1, 1, 12, 0, 0)
    rows = []
    heavy = [5, 7, 1029, -1]
    for i in range(1, n + 1):
        uid = rnd.choice(heavy) if rnd.random() < 0.15 else rnd.choice(UIDS)
        target = rnd.randrange(-50, 5000)
        rtype = rnd.choice((1, 1, 1, 2, 3, 4))
        remark = rnd.choice(REMARKS)
        score = None if rnd.random() < 0.1 else Decimal(rnd.randrange(-100000, 1000000)) / 100
        if rnd.random() < 0.05:
            score = Decimal("12.50")  # duplicates
        created = base + datetime.timedelta(seconds=rnd.randrange(0, 86400 * 30), microseconds=rnd.randrange(0, 1_000_000))
        if rnd.random() < 0.05:
            created = base  # duplicate timestamps
        rows.append((i, uid, target, rtype, remark, score, created))
    return rows


def user_fans_rows(n: int = 2000) -> list[tuple]:
    rnd = random.Random(SEED + 1)
    base = datetime.datetime(2024, 2, 1, 8, 30, 0)
    rows = []
    for i in range(1, n + 1):
        uid = rnd.choice(UIDS)
        fan = rnd.randrange(1, 3000)
        level = None if rnd.random() < 0.2 else rnd.randrange(0, 10)
        created = base + datetime.timedelta(seconds=rnd.randrange(0, 86400 * 10))
        rows.append((10_000 + i, uid, fan, level, created))
    return rows


def region_rows() -> list[tuple]:
    return list(REGIONS)


def dataset() -> dict[str, tuple[tuple[str, ...], list[tuple]]]:
    return {
        "user_relation": (USER_RELATION_COLUMNS, user_relation_rows()),
        "user_fans": (USER_FANS_COLUMNS, user_fans_rows()),
        "region": (REGION_COLUMNS, region_rows()),
    }
