// Node's mysql2 against the mdriver proxy: text queries, server-side prepared
// statements (execute), a cross-shard transaction and an error. Prints JSON.
'use strict';
const mysql = require('mysql2/promise');

async function main() {
  const [host, port, user, password, database] = process.argv.slice(2);
  const conn = await mysql.createConnection({ host, port: Number(port), user, password, database,
    supportBigNumbers: true, bigNumberStrings: true, dateStrings: true });
  const out = {};
  // prepared statements (binary protocol)
  for (const [id, uid] of [[1, 5], [2, 600], [3, 70000]]) {
    await conn.execute('INSERT INTO user_relation (id, uid, target_uid, remark, score, created_at) VALUES (?, ?, ?, ?, ?, ?)',
      [id, uid, uid + 1, `node ${uid} ü`, '12.50', '2024-05-06 07:08:09.123456']);
  }
  const [byKey] = await conn.execute('SELECT id, uid, remark, score, created_at FROM user_relation WHERE uid = ?', [600]);
  out.byKey = byKey;
  const [count] = await conn.query('SELECT COUNT(*) AS n, SUM(score) AS s FROM user_relation');
  out.count = count;
  const [ordered] = await conn.execute('SELECT uid FROM user_relation ORDER BY uid DESC LIMIT 2');
  out.ordered = ordered.map((r) => r.uid);
  // a transaction across ds0 and ds1
  await conn.beginTransaction();
  await conn.execute('UPDATE user_relation SET remark = ? WHERE uid = ?', ['tx', 5]);
  await conn.execute('UPDATE user_relation SET remark = ? WHERE uid = ?', ['tx', 600]);
  await conn.rollback();
  await conn.beginTransaction();
  await conn.query("UPDATE user_relation SET remark = 'committed' WHERE uid = 70000");
  await conn.commit();
  const [remarks] = await conn.query('SELECT uid, remark FROM user_relation ORDER BY uid');
  out.remarks = remarks;
  try {
    await conn.query('DELETE FROM user_relation');
    out.error = null;
  } catch (e) {
    out.error = { errno: e.errno, message: e.message };
  }
  const [tables] = await conn.query('SHOW TABLES');
  out.tables = tables.map((r) => Object.values(r)[0]);
  await conn.end();
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error(e); process.exit(1); });
