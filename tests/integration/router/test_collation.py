"""The merger's string order agrees with the server's utf8mb4_general_ci (STRCMP) on a wide sample."""
from __future__ import annotations

import itertools

from mdriver.router.merge import general_ci_key

SAMPLE = (
    list("aAbBzZ_ -09~`!@#$%^&*()[]{}|\\;:'\",.<>/?")
    + list("éÉèêëàáâäãåæÆçÇñÑöÖøØüÜßþÞðÐœŒšŠžŽłŁđĐıİ")
    + ["ά", "Ά", "α", "Ω", "ω", "д", "Д", "ё", "Ё", "中", "日", "😀", "😁", "\u00a0", "Ａ", "ａ",
       "a ", "a\t", "ss", "ae", "straße", "strasse", "Zürich", "zurich", "", "a!"]
)


def test_general_ci_order_matches_the_server(mariadb_cluster):
    conn = mariadb_cluster.connect("ds0")
    try:
        with conn.cursor() as cur:
            cur.execute("SET NAMES utf8mb4 COLLATE utf8mb4_general_ci")
            pairs = list(itertools.combinations(SAMPLE, 2))
            mismatches = []
            for i in range(0, len(pairs), 500):
                chunk = pairs[i:i + 500]
                cur.execute("SELECT " + ", ".join(["STRCMP(%s, %s)"] * len(chunk)), [v for p in chunk for v in p])
                for (a, b), server in zip(chunk, cur.fetchone()):
                    ka, kb = general_ci_key(a), general_ci_key(b)
                    if (ka > kb) - (ka < kb) != server:
                        mismatches.append((a, b, server))
    finally:
        conn.close()
    assert not mismatches, mismatches[:20]
