"""Statements about the session itself, answered by the driver instead of being routed.

Backend connections are pooled and shared, so a statement that would change
a server session (``SET sql_mode``, ``LOCK TABLES``, savepoints) cannot be
forwarded; transaction control and ``autocommit``/``NAMES``/``USE`` map onto the
logical connection, and everything else is refused with the reason.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from mdriver import err

if TYPE_CHECKING:
    from mdriver.connection import Connection
    from mdriver.cursors import Cursor

SESSION = re.compile(
    r"\s*(?:(?:/\*(?!\s*mdriver:).*?\*/|(?:--[ \t]|\#)[^\n]*\n)\s*)*"
    r"(begin|start\s+transaction|commit|rollback|set|use|xa|savepoint|release|lock\s+tables?|unlock\s+tables?|"
    r"prepare|execute|deallocate)\b(.*)\Z",
    re.IGNORECASE | re.DOTALL,
)
SET_AUTOCOMMIT = re.compile(r"\s*(?:session\s+|local\s+|@@session\.|@@local\.|@@)?autocommit\s*(?:=|:=)\s*'?(\w+)'?\s*;?\s*\Z", re.I)
SET_NAMES = re.compile(r"\s*(?:names|character\s+set|charset)\s+'?(\w+)'?(?:\s+collate\s+'?\w+'?)?\s*;?\s*\Z", re.I)
WORK = re.compile(r"\s*(?:work\s*)?;?\s*\Z", re.I)
TRUE = {"1": True, "on": True, "true": True, "0": False, "off": False, "false": False}


def run(conn: "Connection", cur: "Cursor", verb: str, rest: str, sql: str, args: Any) -> None:
    """Carry out a session statement (``verb`` and the ``rest`` of its text) on ``conn``."""
    if args is not None:
        rest = cur.mogrify(rest, args)
    verb = " ".join(verb.split())
    if verb in ("begin", "start transaction"):
        conn.begin()
    elif verb == "commit" and WORK.match(rest):
        conn.commit()
    elif verb == "rollback" and WORK.match(rest):
        conn.rollback()
    elif verb == "set" and SET_AUTOCOMMIT.match(rest):
        value = TRUE.get(SET_AUTOCOMMIT.match(rest).group(1).lower())
        if value is None:
            raise err.error(err.ProgrammingError, err.ER_WRONG_ARGUMENTS, f"invalid autocommit value in {sql.strip()!r}")
        conn._set_autocommit(value)
    elif verb == "set" and SET_NAMES.match(rest):
        charset = SET_NAMES.match(rest).group(1).lower()
        if charset not in ("utf8mb4", "utf8", "utf8mb3"):
            raise err.error(
                err.NotSupportedError, err.ER_NOT_SUPPORTED_YET,
                f"character set {charset} is not supported: mdriver talks utf8mb4 to every backend",
            )
    elif verb == "use":
        conn.select_db(rest.strip().rstrip(";").strip().strip("`"))
    elif verb == "set":
        raise err.error(
            err.NotSupportedError, err.ER_NOT_SUPPORTED_YET,
            f"{sql.strip()[:80]!r}: session variables are not supported (backend connections are pooled and "
            "shared); set them in the server configuration instead",
        )
    elif verb == "xa":
        raise err.error(
            err.NotSupportedError, err.ER_NOT_SUPPORTED_YET,
            "XA statements are issued by mdriver itself: use commit()/rollback() (transaction_mode xa)",
        )
    elif verb in ("savepoint", "release") or verb == "rollback":
        raise err.error(err.NotSupportedError, err.ER_NOT_SUPPORTED_YET, "savepoints are not supported across shards")
    elif verb == "commit":
        raise err.error(err.NotSupportedError, err.ER_NOT_SUPPORTED_YET, f"{sql.strip()[:80]!r} is not supported; use COMMIT")
    else:
        raise err.error(
            err.NotSupportedError, err.ER_NOT_SUPPORTED_YET,
            f"{verb.upper()} is not supported: it needs server-side session state, and backend connections are pooled",
        )
    cur._set(None, None, 0, 0)
