#!/usr/bin/env bash
# Resharding a live table with mdriver-migrate: the sequence a DBA follows.
#
# Moves app.user_relation from one table (database `app` on ds0) into its
# 32 x 32 shards while the application keeps writing through the driver or
# the proxy. Every step can be re-run; every failure says what to do next.
#
# Prerequisites:
#   - the source server writes ROW binlogs with FULL row images and FULL metadata
#     (`plan` checks this and prints the SET GLOBAL statements if not);
#   - the config names the source in a migration block, e.g.
#       schemas.app.tables.user_relation.migration:
#         source: {datasource: ds0, database: app, table: user_relation}
#     (or let step 1 add it with --source ds0.app.user_relation);
#   - every driver and proxy reads the same config. With a YAML file they poll it
#     every second (SIGHUP makes a proxy re-read it at once), and --confirm-fence
#     waits --fence-grace seconds (3 by default) after fencing; with etcd they
#     acknowledge each revision and the migrator waits for exactly that instead.
#
# Usage: examples/migration_walkthrough.sh [CONFIG] [SCHEMA.TABLE]
# Set STEP=1 to pause before each step.
set -euo pipefail

CONFIG=${1:-config/sharding.yaml}
TABLE=${2:-app.user_relation}
MIGRATE=${MIGRATE:-mdriver-migrate}
m() { $MIGRATE --config "$CONFIG" "$@"; }

step() {
  echo
  echo "== $*"
  if [ "${STEP:-0}" = 1 ]; then read -r -p "press Enter to run it" _; fi
}

step "1. plan: check the source and the shards, create the 1024 shard tables from the source's DDL"
m plan "$TABLE"   # add: --source ds0.app.user_relation   if the config has no migration block yet

step "2. start: copy by primary-key chunks and stream the binlog; keeps running as a daemon"
m start "$TABLE" --daemon --log-file "migrate-$TABLE.log" --pid-file "migrate-$TABLE.pid"
#   A crash, kill -9 or reboot loses nothing: run the same command again and it resumes
#   from the checkpoints stored next to the rows on every shard server.

step "3. wait for the copy to finish (status shows phase 'streaming' and the lag)"
until m status "$TABLE" --json | grep -q '"phase": "streaming"'; do
  m status "$TABLE" | sed -n '1p;4,5p'
  sleep 5
done
m status "$TABLE"

step "4. verify: source and shards compared chunk by chunk at a known binlog position"
m verify "$TABLE"   # exit code 7 and the differing primary keys if anything differs

step "5. cutover-reads: reads go to shadow (both read, source returned, differences logged), then to the shards"
m cutover-reads "$TABLE" --to shadow
sleep 60            # watch the drivers' and proxies' shadow-read difference counters meanwhile
m cutover-reads "$TABLE" --to shards
#   Undo at any time: m rollback-reads "$TABLE"

step "6. cutover-writes: fence writes (retryable errors for a moment), drain, move writes to the shards"
m cutover-writes "$TABLE" --confirm-fence
#   With an etcd config drop --confirm-fence: the migrator waits for every registered
#   driver and proxy to acknowledge the fence. On a timeout, writes go back to the source.
#   From now on the migrator replicates shards -> source, so the way back loses nothing.

step "7. (only if something is wrong) rollback-writes, then cutover-writes again when fixed"
if [ "${ROLLBACK:-0}" = 1 ]; then
  m rollback-writes "$TABLE" --confirm-fence
  m status "$TABLE"
  m cutover-writes "$TABLE" --confirm-fence
fi

step "8. finish: stop replicating back to the source and remove the migration block"
m finish "$TABLE"
echo
echo "done: $TABLE is served by its shards; the source table is no longer updated (drop it when you are ready)."
