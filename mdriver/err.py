"""The PEP 249 exception tree, with MySQL error numbers (PyMySQL's shape).

Every error that mdriver raises itself carries a MySQL errno and SQLSTATE, so
the proxy can send it to any client unchanged and the driver behaves like
PyMySQL: ``e.args == (errno, message)``.
"""
from __future__ import annotations

# MySQL/MariaDB error numbers used by mdriver's own refusals.
ER_ACCESS_DENIED_ERROR = 1045
ER_DBACCESS_DENIED_ERROR = 1044
ER_BAD_DB_ERROR = 1049
ER_BAD_FIELD_ERROR = 1054
ER_PARSE_ERROR = 1064
ER_UNKNOWN_ERROR = 1105
ER_NO_SUCH_TABLE = 1146
ER_NET_PACKET_TOO_LARGE = 1153
ER_UNKNOWN_COM_ERROR = 1047
ER_CON_COUNT_ERROR = 1040
ER_HANDSHAKE_ERROR = 1043
ER_NOT_SUPPORTED_YET = 1235
ER_OPTION_PREVENTS_STATEMENT = 1290
ER_WRONG_ARGUMENTS = 1210
ER_UNKNOWN_STMT_HANDLER = 1243
ER_LOCK_DEADLOCK = 1213
ER_XAER_NOTA = 1397
ER_CANT_CHANGE_SHARD_KEY = ER_NOT_SUPPORTED_YET  # MySQL has no dedicated code; 1235 = "not supported"
CR_CONNECTION_ERROR = 2002
CR_SERVER_GONE_ERROR = 2006
CR_SERVER_LOST = 2013
ER_QUERY_TIMEOUT = 3024


class MySQLError(Exception):
    """Base of everything mdriver raises for a statement or connection."""

    errno: int = ER_UNKNOWN_ERROR
    sqlstate: str = "HY000"
    retryable: bool = False

    def __init__(self, *args: object, sqlstate: str | None = None):
        if len(args) == 1 and isinstance(args[0], str):
            args = (self.errno, args[0])
        super().__init__(*args)
        if args and isinstance(args[0], int):
            self.errno = args[0]
        if sqlstate is not None:
            self.sqlstate = sqlstate

    @property
    def msg(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else str(self.args[0]) if self.args else ""


class Warning(Warning, MySQLError):  # noqa: A001 - the PEP 249 name
    pass


class Error(MySQLError):
    pass


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class DataError(DatabaseError):
    sqlstate = "22000"


class OperationalError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    sqlstate = "23000"


class InternalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    sqlstate = "42000"


class NotSupportedError(DatabaseError):
    errno = ER_NOT_SUPPORTED_YET
    sqlstate = "42000"


class FencedWriteError(OperationalError):
    """Writes are paused for a migration cutover; the same statement will succeed shortly."""

    errno = ER_OPTION_PREVENTS_STATEMENT
    retryable = True


class BackendError(OperationalError):
    """A datasource is dead, unreachable or too slow; the message names it (never its credentials)."""

    errno = CR_CONNECTION_ERROR


def error(cls: type[MySQLError], errno: int, message: str, sqlstate: str | None = None) -> MySQLError:
    """Build ``cls(errno, message)``; the one constructor used for our own refusals."""
    return cls(errno, message, sqlstate=sqlstate)


# errno -> class, for errors that come back from a backend server (PyMySQL's table, trimmed).
_ERRNO_CLASS: dict[int, type[Error]] = {}
for _cls, _codes in (
    (ProgrammingError, (1064, 1146, 1054, 1049, 1044, 1046, 1050, 1051, 1060, 1061, 1091, 1102, 1103, 1110, 1117, 1149, 1235)),
    (IntegrityError, (1022, 1048, 1052, 1062, 1169, 1215, 1216, 1217, 1451, 1452, 1557, 1586, 1761, 1762, 3819)),
    (DataError, (1264, 1265, 1292, 1366, 1406, 1416, 1441)),
    (NotSupportedError, (1178, 1289)),
    (OperationalError, (1040, 1045, 1205, 1213, 1290, 1317, 2002, 2003, 2006, 2013, 3024)),
):
    for _code in _codes:
        _ERRNO_CLASS[_code] = _cls


def from_backend(errno: int, message: str, sqlstate: str | None = None) -> Error:
    """Map a server error to the PEP 249 class a client expects."""
    cls = _ERRNO_CLASS.get(errno) or (InternalError if errno < 1000 else OperationalError)
    return cls(errno, message, sqlstate=sqlstate)


__all__ = [name for name in dir() if name.endswith("Error") or name.startswith(("ER_", "CR_"))] + ["Warning", "error", "from_backend"]
