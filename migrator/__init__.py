"""``mdriver-migrate``: move a live single table into its shards, then cut reads and writes over.

gh-ost's decomposition: :mod:`~migrator.inspector` (checks, table facts),
:mod:`~migrator.copier` (snapshot chunks), :mod:`~migrator.streamer` (binlog ->
:class:`~migrator.changes.RowChange`), :mod:`~migrator.applier` (idempotent
upserts/deletes per physical table), :mod:`~migrator.checkpoint`,
:mod:`~migrator.verifier`, :mod:`~migrator.cutover`, :mod:`~migrator.throttler`,
and :mod:`~migrator.migration`, which reads top to bottom as the algorithm.
"""
