"""What a database error means: worth waiting out, or not — said in words a person can act on.

A send waits out a database that is unavailable for now (a locked SQLite file, a PostgreSQL server
restarting); waiting cannot fix a wrong password, a database that does not exist or a missing table, so
those fail at once. PostgreSQL names its errors with a SQLSTATE; the errors of a connection that never
opened carry none (libpq words them), so their text decides.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, InterfaceError, NoSuchModuleError, OperationalError

# A unique key refused a row: another process stored the same thing first (an issue's week, an address).
# Named here so that the domain can catch it without knowing the database library.
Conflict = IntegrityError

# SQLSTATE classes and codes that a later attempt can get past (PostgreSQL, appendix A): 08 connection
# exception, 40 serialization failure / deadlock, 53 insufficient resources, 55P03 lock not available,
# 57P01-57P05 shutdown, restart and idle timeouts, 58 I/O error.
TRANSIENT_SQLSTATES = ("08", "40", "53", "55P03", "57P0", "58")

# Errors without a SQLSTATE (a connection that never opened, any SQLite error), by the words libpq, psycopg
# or SQLite use: (pattern, what a person reads, transient). The first match wins; an unknown one is shown
# as the driver worded it, and waited out (a dropped connection has many wordings).
CAUSES: tuple[tuple[str, str, bool], ...] = (
    (r'database "([^"]*)" does not exist', 'database "{0}" does not exist: create it (createdb {0}) '
     "or correct the name", False),
    (r'password authentication failed for user "([^"]*)"',
     'password authentication failed for user "{0}": check the user and password', False),
    (r"no password supplied", "the server wants a password and the URL gives none", False),
    (r"authentication failed", "authentication failed: check the user and password", False),
    (r'role "([^"]*)" does not exist', 'authentication failed: role "{0}" does not exist', False),
    (r"no pg_hba\.conf entry", "authentication failed: the server's pg_hba.conf lets no such connection in", False),
    (r"could not translate host name|failed to resolve host|Name or service not known",
     "the host name does not resolve: check it", False),
    (r"invalid \w+ value|invalid connection option|invalid URI", "a connection option is wrong", False),
    (r"unable to open database file", "cannot open the file: does its folder exist, and may this user write there?",
     False),
    (r"file is not a database", "the file is not an SQLite database", False),
    (r"readonly database", "the file is read-only for this user", False),
    (r"database disk image is malformed", "the file is damaged (database disk image is malformed)", False),
    (r"no such (table|column)", "the schema is not this code's: run `digest db upgrade`", False),
    (r"Connection refused", "connection refused: is the server running and listening on that host and port?", True),
    (r"timeout expired|timed out", "the server did not answer in time", True),
    (r"database is locked|database table is locked", "the database is locked by another process", True),
)


def shown_url(url: str) -> str:
    """The URL with its password replaced by ***, as logs and error messages may show it."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not parsable: hide anything between a ':' and an '@' all the same
        return re.sub(r":[^:/@]*@", ":***@", url)


def is_transient(exc: BaseException) -> bool:
    """True when waiting may help (the server or a lock is busy); False for a fault that waiting cannot fix."""
    if isinstance(exc, InterfaceError):  # the driver lost its connection: a new one may work
        return True
    if not isinstance(exc, OperationalError):  # a statement or data error: the same again fails the same
        return False
    sqlstate = _sqlstate(exc)
    if sqlstate is not None:
        return sqlstate.startswith(TRANSIENT_SQLSTATES)
    matched = _match(exc)
    return True if matched is None else matched[1]  # a dropped or refused connection has no code: wait


def cause(exc: BaseException) -> str:
    """One line on what is wrong with the database connection, without a URL (the caller names it)."""
    if isinstance(exc, NoSuchModuleError):
        driver = str(exc).rpartition(":")[2].replace(".", "+")
        return (f"no SQLAlchemy dialect or driver {driver!r} is installed: use sqlite:///FILE or "
                "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE")
    if isinstance(exc, ModuleNotFoundError):
        return (f"its driver needs the Python package {exc.name!r}, which is not installed: use "
                "postgresql+psycopg:// (installed) or install that package")
    if isinstance(exc, ArgumentError):
        return "not a database URL: expected sqlite:///FILE or postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"
    matched = _match(exc)
    if matched is not None:
        return matched[0]
    return _first_line(getattr(exc, "orig", None) or exc)


def _match(exc: BaseException) -> tuple[str, bool] | None:
    text = str(getattr(exc, "orig", None) or exc)
    for pattern, words, transient in CAUSES:
        found = re.search(pattern, text, re.IGNORECASE)
        if found:
            return words.format(*found.groups()), transient
    return None


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__
