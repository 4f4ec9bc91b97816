"""SQLAlchemy dialect ``mysql+mdriver``: SQLAlchemy's MySQL dialect over the mdriver DB-API.

    engine = create_engine("mysql+mdriver:///app?config=config/sharding.yaml")

The URL's database is the logical schema; query arguments go to
``mdriver.connect`` (``config``, ``transaction_mode``, ``read_timeout``, ...).
Host, port and credentials come from the config, not from the URL.

Everything SQL-generating is PyMySQL's dialect unchanged (same paramstyle
and escaping). What differs is what SQLAlchemy asks the *server* while it
initializes (version, ``sql_mode``, isolation level, default schema): a
logical connection has no single server, so those are answered from the
schema's home datasource, directly and unrouted.
"""
from __future__ import annotations

from typing import Any

from pymysql.constants import CLIENT
from sqlalchemy.dialects.mysql.pymysql import MySQLDialect_pymysql

_INT_ARGS = ("max_connections", "worker_id", "parallel_datasources")
_FLOAT_ARGS = (
    "connect_timeout", "read_timeout", "recovery_grace", "recovery_interval", "poll_interval", "ping_interval",
    "pool_recycle", "acquire_timeout", "replica_cooldown",
)
_BOOL_ARGS = ("autocommit", "read_replicas", "recover_on_start")


def _as_bool(value: str) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


class MDriverDialect(MySQLDialect_pymysql):
    driver = "mdriver"
    supports_statement_cache = True
    supports_server_side_cursors = False
    supports_sane_multi_rowcount = True

    @classmethod
    def import_dbapi(cls) -> Any:
        import mdriver

        return mdriver

    def create_connect_args(self, url: Any, _translate_args: Any = None) -> Any:
        opts: dict[str, Any] = dict(url.query)
        for key in _INT_ARGS:
            if key in opts:
                opts[key] = int(opts[key])
        for key in _FLOAT_ARGS:
            if key in opts:
                opts[key] = float(opts[key])
        for key in _BOOL_ARGS:
            if key in opts:
                opts[key] = _as_bool(opts[key])
        schema = url.database or opts.pop("schema", None) or "app"
        if url.host or url.port or url.username:
            from mdriver import err

            raise err.error(
                err.InterfaceError, err.ER_WRONG_ARGUMENTS,
                "mysql+mdriver URLs take host, port and credentials from the config; "
                "write mysql+mdriver:///SCHEMA?config=PATH",
            )
        # FOUND_ROWS: UPDATE reports matched rows, which the ORM's row-count checks rely on.
        opts["client_flag"] = int(opts.get("client_flag", 0)) | CLIENT.FOUND_ROWS
        opts["schema"] = schema
        return [], opts

    def _home_rows(self, connection: Any, sql: str) -> list:
        dbapi_conn = getattr(connection, "connection", connection)
        dbapi_conn = getattr(dbapi_conn, "dbapi_connection", dbapi_conn)
        return dbapi_conn.home_rows(sql)

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        (version,), = self._home_rows(connection, "SELECT VERSION()")
        return self._parse_server_version(version.decode() if isinstance(version, bytes) else version)

    def _get_default_schema_name(self, connection: Any) -> str:
        return connection.connection.dbapi_connection.schema

    def _fetch_setting(self, connection: Any, setting_name: str) -> Any:
        rows = self._home_rows(connection, f"SELECT @@{setting_name}")
        return rows[0][0] if rows else None

    def _detect_charset(self, connection: Any) -> str:
        return "utf8mb4"

    def get_isolation_level(self, dbapi_connection: Any) -> Any:
        (value,), = dbapi_connection.home_rows("SELECT @@tx_isolation")
        value = value.decode() if isinstance(value, bytes) else value
        return value.upper().replace("-", " ")

    def initialize(self, connection: Any) -> None:
        super().initialize(connection)
        # RETURNING would come back from many physical tables and names the logical
        # table in its column list; inserts fetch no server defaults instead.
        self.insert_returning = self.update_returning = self.delete_returning = False
        self.supports_sequences = False  # a sequence lives on one server; use mdriver's id generators

    def do_ping(self, dbapi_connection: Any) -> bool:
        dbapi_connection.ping()
        return True

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        from mdriver import err

        if isinstance(e, err.InterfaceError) and "connection is closed" in str(e):
            return True
        return False  # backend failures are per statement: the logical connection stays usable

    def do_begin_twophase(self, connection: Any, xid: Any) -> None:
        self._no_twophase()

    def do_prepare_twophase(self, connection: Any, xid: Any) -> None:
        self._no_twophase()

    def do_recover_twophase(self, connection: Any) -> list:
        self._no_twophase()
        return []

    @staticmethod
    def _no_twophase() -> None:
        from mdriver import err

        raise err.error(
            err.NotSupportedError, err.ER_NOT_SUPPORTED_YET,
            "mdriver runs its own XA two-phase commit across shards; use ordinary transactions (transaction_mode xa)",
        )


dialect = MDriverDialect
