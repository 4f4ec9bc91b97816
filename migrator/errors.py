"""Errors a DBA can meet, each with what happened and what to do next.

Every failure the migrator reports is a :class:`MigrationError` whose message
is one line stating the problem and whose ``hint`` says how to continue. The
CLI prints ``error: <message>`` and ``next: <hint>`` and exits non-zero; it
never shows a traceback. :func:`classify` turns a driver exception raised
while talking to a named server into the matching error.
"""
from __future__ import annotations

import pymysql

# Exit codes of the CLI, so scripts can tell failures apart.
EXIT_ERROR = 1
EXIT_REFUSED = 2
EXIT_DDL = 3
EXIT_UNREACHABLE = 4
EXIT_PURGED = 5
EXIT_DISK_FULL = 6
EXIT_MISMATCH = 7
EXIT_USAGE = 64


class MigrationError(Exception):
    """A failure with a message and a hint saying what to do next."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class RefusedError(MigrationError):
    """A precondition does not hold (binlog settings, keys, privileges, phase, lag)."""

    exit_code = EXIT_REFUSED


class SourceDDLError(MigrationError):
    """The source table's definition changed while migrating."""

    exit_code = EXIT_DDL


class UnreachableError(MigrationError):
    """A server (source or shard) cannot be reached."""

    exit_code = EXIT_UNREACHABLE


class BinlogPurgedError(MigrationError):
    """The binlog needed to resume is gone from the server."""

    exit_code = EXIT_PURGED


class DiskFullError(MigrationError):
    """A server ran out of space while we wrote to it."""

    exit_code = EXIT_DISK_FULL


class VerifyMismatchError(MigrationError):
    """verify found rows that differ."""

    exit_code = EXIT_MISMATCH


class StaleDecodeError(MigrationError):
    """A binlog value could not be decoded exactly (so it is never applied approximately)."""


# Server and client error numbers we translate.
_UNREACHABLE = {2002, 2003, 2005, 2006, 2013, 2055, 1040, 1053, 1927}
_DISK_FULL = {1021, 1114, 1026, 1030, 3, 1036, 1712}
_PURGED = {1236}
_PRIVILEGE = {1044, 1045, 1142, 1143, 1227, 1370}


def errno_of(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def text_of(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return f"({args[0]}) {args[1]}"
    return str(exc) or type(exc).__name__


def is_disk_full(exc: BaseException) -> bool:
    code = errno_of(exc)
    text = text_of(exc).lower()
    return code in _DISK_FULL and (code != 1030 or "28" in text) or "no space left" in text or "disk full" in text


def classify(exc: BaseException, where: str, role: str) -> MigrationError:
    """A MigrationError for ``exc`` raised by server ``where`` ("ds1 (127.0.0.1:13307)"), playing ``role``.

    ``role`` is "source", "shard" or "control" and picks the advice.
    """
    if isinstance(exc, MigrationError):
        return exc
    code = errno_of(exc)
    text = text_of(exc)
    resume = "progress is saved in the checkpoint tables; run `mdriver-migrate start` again to resume"
    if code in _UNREACHABLE or isinstance(exc, (ConnectionError, TimeoutError)) or (
        isinstance(exc, pymysql.err.OperationalError) and code is not None and code >= 2000
    ):
        return UnreachableError(
            f"lost the {role} {where}: {text}",
            f"bring the server back (or fix the address in the config); {resume}",
        )
    if is_disk_full(exc):
        return DiskFullError(
            f"{role} {where} is out of space: {text}; the batch being written was rolled back",
            f"free disk space on that server (or raise its tablespace limit); {resume}",
        )
    if code in _PURGED:
        return BinlogPurgedError(
            f"{role} {where} no longer has the binlog needed to continue: {text}",
            "the shards cannot be brought up to date from the binlog any more: run `mdriver-migrate abort "
            "--empty-targets` and `start` again to copy from scratch, and keep binlogs longer "
            "(binlog_expire_logs_seconds) than a migration takes",
        )
    if code in _PRIVILEGE:
        return RefusedError(
            f"{role} {where} refused access: {text}",
            "grant the privileges listed by `mdriver-migrate plan` to the configured user",
        )
    return MigrationError(f"{role} {where} failed: {text}", resume)
