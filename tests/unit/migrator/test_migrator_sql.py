"""Pure SQL builders of the migrator: literals, chunk bounds, upserts, deletes, checksums."""
import datetime
from decimal import Decimal

import pytest

from migrator import sql
from migrator.table import Column, TableInfo


def test_literals_of_binlog_values():
    assert sql.literal(None) == "NULL"
    assert sql.literal(-7) == "-7"
    assert sql.literal(18446744073709551615) == "18446744073709551615"
    assert sql.literal(Decimal("-12345678901234.123456")) == "-12345678901234.123456"
    assert sql.literal(0.1) == "0.1"
    assert float(sql.literal(0.30000000000000004)) == 0.30000000000000004
    assert sql.literal("it's a \\ test") == "'it\\'s a \\\\ test'"
    assert sql.literal("😀 café") == "'😀 café'"
    assert sql.literal(datetime.datetime(2024, 2, 29, 23, 59, 59, 123456)) == "'2024-02-29 23:59:59.123456'"
    assert sql.literal(datetime.datetime(2024, 2, 29, 23, 59, 59)) == "'2024-02-29 23:59:59'"
    assert sql.literal(datetime.date(9999, 12, 31)) == "'9999-12-31'"
    assert sql.literal({"z", "x"}) == "'x,z'"
    with pytest.raises(ValueError):
        sql.literal(float("nan"))
    with pytest.raises(TypeError):
        sql.literal(object())


def test_binary_literal_survives_encoding_byte_for_byte():
    raw = bytes(range(256))
    text = sql.literal(raw)
    assert text.startswith("_binary'")
    encoded = sql.encode_sql(text)
    body = encoded[len(b"_binary'"):-1]
    # Unescape the three escapes we emit and get the bytes back.
    restored = body.replace(b"\\0", b"\x00").replace(b"\\'", b"'").replace(b"\\\\", b"\\")
    assert restored == raw


@pytest.mark.parametrize("td, text", [
    (datetime.timedelta(0), "00:00:00"),
    (datetime.timedelta(hours=838, minutes=59, seconds=59), "838:59:59"),
    (-datetime.timedelta(hours=838, minutes=59, seconds=59, microseconds=999000), "-838:59:59.999000"),
    (datetime.timedelta(seconds=-1), "-00:00:01"),
])
def test_time_literals(td, text):
    assert sql.format_timedelta(td) == text


def test_pk_after_single_and_composite():
    assert sql.pk_after(["id"], None) == "1"
    assert sql.pk_after(["id"], (5,)) == "((`id` > 5))"
    assert sql.pk_after(["a", "b"], (1, b"x")) == "((`a` > 1) OR (`a` = 1 AND `b` > _binary'x'))"


def test_upsert_and_delete_statements():
    q = sql.upsert("app_00", "t_0001", ["id", "v"], [(1, "a"), (2, None)])
    assert q == ("INSERT INTO `app_00`.`t_0001` (`id`, `v`) VALUES (1, 'a'), (2, NULL)"
                 " ON DUPLICATE KEY UPDATE `id` = VALUES(`id`), `v` = VALUES(`v`)")
    assert "REPLACE" not in q
    assert sql.delete("d", "t", ["id"], [(1,), (2,)]) == "DELETE FROM `d`.`t` WHERE `id` IN (1, 2)"
    assert sql.delete("d", "t", ["a", "b"], [(1, 2), (3, 4)]) == \
        "DELETE FROM `d`.`t` WHERE (`a` = 1 AND `b` = 2) OR (`a` = 3 AND `b` = 4)"


def test_identifiers_are_quoted():
    assert sql.qi("we`ird") == "`we``ird`"


def _info():
    cols = (
        Column("id", "bigint", "bigint(20) unsigned", False),
        Column("k", "varbinary", "varbinary(8)", False),
        Column("name", "varchar", "varchar(10)", True, "latin1", "latin1_swedish_ci"),
        Column("g", "varchar", "varchar(10)", True, "gbk", "gbk_chinese_ci"),
        Column("f", "float", "float", True),
        Column("b", "bit", "bit(12)", True),
        Column("ts", "timestamp", "timestamp(6)", True),
    )
    return TableInfo("legacy", "t", cols, ("id", "k"))


def test_raw_renderers_keep_charsets_and_bytes():
    info = _info()
    r = sql.raw_renderers(info.columns)
    assert r[0](b"42") == b"42"
    assert r[0](None) == b"NULL"
    assert r[1](b"a'\\\x00") == b"_binary'a\\'\\\\\\0'"
    assert r[2](b"caf\xe9") == b"_latin1'caf\xe9'"
    # gbk can hide 0x5C inside a character: sent as hex, never escaped byte-wise.
    assert r[3](b"\x95\x5c") == b"_gbk X'955c'"
    assert r[4](b"0.3333333432674408") == b"0.3333333432674408"
    assert r[6](b"2024-01-01 00:00:00.000001") == b"'2024-01-01 00:00:00.000001'"


def test_select_expressions_read_exact_values():
    info = _info()
    q = sql.chunk_query(info, (5, b"x"), 100)
    assert "(`b` + 0)" in q and "CAST(`f` AS DOUBLE)" in q
    assert q.endswith("ORDER BY `id`, `k` LIMIT 100")


def test_raw_parsers_match_binlog_types():
    cols = [Column("a", "int"), Column("d", "decimal"), Column("dt", "datetime"), Column("s", "varchar", charset="latin1"),
            Column("z", "date")]
    p = sql.raw_parsers(cols)
    assert p[0](b"-3") == -3
    assert p[1](b"1.50") == Decimal("1.50")
    assert p[2](b"2024-01-01 10:00:00.5") == datetime.datetime(2024, 1, 1, 10, 0, 0, 500000)
    assert p[3](b"\x80") == "€"  # MySQL latin1 is cp1252
    assert p[4](b"0000-00-00") == "0000-00-00"


def test_checksum_query_spans_tables_in_one_statement():
    info = _info()
    q = sql.checksum_query("app_00", ["t_0000", "t_0001"], info.columns, info.primary_key, None, (9, b"z"))
    assert q.count("UNION ALL") == 1
    assert "BIT_XOR" in q and "COUNT(*)" in q
    assert "NOT ((`id` > 9) OR (`id` = 9 AND `k` > _binary'z'))" in q


def test_misplaced_condition_matches_python_mod():
    cond = sql.misplaced_condition(_info(), "uid", "mod", 1024, 7)
    assert cond == "MOD(MOD(`uid`, 1024) + 1024, 1024) <> 7"
    assert sql.misplaced_condition(_info(), "uid", "range", 1024, 7) is None
